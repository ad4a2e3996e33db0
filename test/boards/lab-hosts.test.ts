// Each lab host serves its boards from its own TFTP root, with its own TFTP server on the boards'
// network. Two agents (lab-a, lab-b) with data directories of their own each drive one emulated
// board whose boot settings name no TFTP root and no TFTP server: each board's files are staged in
// its agent's DATA/tftp, served by a tftpd-hpa the agent starts on the board's serverIp, port 69.
// On one computer the two lab hosts' networks are two loopback addresses (QEMU's user network takes
// a board's TFTP to its serverIp on the host), so the two servers share port 69 without meeting.
import { readdir, readFile } from 'node:fs/promises';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import test from 'ava';
import { Paddock } from '../../client/index.js';
import { Agent } from '../../lab-host/agent.js';
import { startApi, testConfig, type TestApi } from '../helpers/api.js';
import { testImages } from '../helpers/images.js';
import { startLab, type Lab } from '../helpers/lab/index.js';
import { waitFor } from '../helpers/wait.js';

const labHosts = [
  { name: 'lab-a', serverIp: '127.0.0.11', board: 'board-a' },
  { name: 'lab-b', serverIp: '127.0.0.12', board: 'board-b' },
];
let lab: Lab;
let api: TestApi;
let paddock: Paddock;
let dir: string;
const agents: Agent[] = [];
const dataOf = (name: string) => path.join(dir, name);

/** The in.tftpd processes serving `root` (whatever their address): pid and command line. */
async function tftpServers(root: string): Promise<{ pid: number; args: string[] }[]> {
  const found: { pid: number; args: string[] }[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const args = (await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '')).split('\0');
    if (args[0]?.endsWith('in.tftpd') && args.includes(root)) found.push({ pid: Number(entry), args });
  }
  return found;
}

test.before(async () => {
  const images = await testImages();
  lab = await startLab(2);
  dir = mkdtempSync(path.join(os.tmpdir(), 'paddock-tftp-lab-hosts-'));
  api = await startApi(
    testConfig(
      [
        'agent: { enabled: false }',
        'machines:',
        ...labHosts.map((host, index) =>
          lab.boardYaml(lab.boards[index], { name: host.board, labHost: host.name, serverIp: host.serverIp, labels: { arch: 'arm64', lab: host.name } }),
        ),
      ].join('\n'),
    ),
  );
  paddock = new Paddock({ url: api.url, token: api.adminToken });
  await paddock.images.upload(images.arm64, { name: 'arm', format: 'bundle', arch: 'arm64' });
  for (const host of labHosts) {
    const { token } = await paddock.createToken(host.name, 'agent');
    const agent = new Agent({ url: api.url, token, name: host.name, dataDir: dataOf(host.name), kinds: ['board'] });
    agent.start();
    agents.push(agent);
  }
});

test.after.always(async () => {
  await Promise.all(agents.map((agent) => agent.stop()));
  // The TFTP servers the agents started outlive them (a lab host keeps its server): these go with the test.
  for (const host of labHosts) for (const server of await tftpServers(path.join(dataOf(host.name), 'tftp'))) process.kill(server.pid, 'SIGTERM');
  await api?.close();
  await lab?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test('two lab hosts boot their boards each from its own TFTP root and server, on the address the board asks', async (t) => {
  const gang = await paddock.reserve({
    members: labHosts.map((host) => ({ role: host.name, spec: `lab=${host.name}`, image: 'arm' })),
    lease: '10m',
  });
  await gang.ready({ timeout: 300 });
  const answers = await Promise.all(labHosts.map((host) => gang.run(host.name, 'uname -m')));
  t.deepEqual(
    answers.map((answer) => answer.stdout.trim()),
    ['aarch64', 'aarch64'],
  );
  for (const [index, host] of labHosts.entries()) {
    const root = path.join(dataOf(host.name), 'tftp');
    const other = path.join(dataOf(labHosts[1 - index].name), 'tftp');
    const staged = path.join('paddock', `${gang.id}-${host.board}`, 'kernel');
    t.true(existsSync(path.join(root, staged)), `${host.board}'s kernel is staged in ${host.name}'s root`);
    t.false(existsSync(path.join(other, staged)), `and not in the other lab host's`);
    const servers = await tftpServers(root);
    t.is(servers.length, 1, `one TFTP server for ${host.name}'s root`);
    t.true(servers[0]?.args.includes(`${host.serverIp}:69`), `listening on the board's serverIp: ${servers[0]?.args.join(' ')}`);
  }

  await gang.release();
  await waitFor(async () => (await gang.refresh()).state === 'released', 120_000, 'the release');
  for (const host of labHosts)
    t.false(existsSync(path.join(dataOf(host.name), 'tftp', 'paddock', `${gang.id}-${host.board}`)), `${host.name} unstaged its board's files`);
});
