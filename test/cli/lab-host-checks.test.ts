// A lab host's agent checks its machines and says in its heartbeat which it cannot reach: a real
// `paddock agent --name lab-c` process serving a static host (a real sshd behind a TCP port the
// test opens and closes), two boards whose serial device, TCP console or PDU is not there, and two
// QEMU slots, one with no such QEMU. The API does not match those machines, shows them on
// `paddock machines ls` / `show` and in `paddock explain`, and lifts the mark once the agent no
// longer reports them; a request that waited for the host gets it then. Another lab host's
// machine (lab-d's, whose agent never runs) cannot be marked with lab-c's token.
import { mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import test from 'ava';
import { Paddock } from '../../client/index.js';
import type { MachineView } from '../../protocol/api.js';
import { startApi, staticMachinesYaml, testConfig, type TestApi } from '../helpers/api.js';
import { freePort } from '../helpers/ports.js';
import { runPaddock, startAgentProcess, stopGracefully, type AgentProcess } from '../helpers/server.js';
import { startSshd, tenantOf, type TestSshd } from '../helpers/sshd.js';
import { waitFor } from '../helpers/wait.js';

/** A TCP port forwarded to the sshd, opened and closed by the test: the static host's SSH port as the agent sees it. */
class Forward {
  private server?: net.Server;
  private readonly sockets = new Set<net.Socket>();

  constructor(
    readonly port: number,
    private readonly target: number,
  ) {}

  async open(): Promise<void> {
    const server = net.createServer((client) => {
      const upstream = net.connect(this.target, '127.0.0.1');
      for (const socket of [client, upstream]) {
        this.sockets.add(socket);
        socket.on('error', () => undefined);
        socket.on('close', () => {
          this.sockets.delete(socket);
          client.destroy();
          upstream.destroy();
        });
      }
      client.pipe(upstream).pipe(client);
    });
    await new Promise<void>((resolve, reject) => server.once('error', reject).listen(this.port, '127.0.0.1', resolve));
    this.server = server;
  }

  async close(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    for (const socket of this.sockets) socket.destroy();
    if (server) await new Promise((resolve) => server.close(resolve));
  }
}

let api: TestApi;
let sshd: TestSshd;
let forward: Forward;
let agent: AgentProcess;
let dir: string;
let userToken: string;
let agentToken: string;
const closed: Record<'pdu' | 'console', number> = { pdu: 0, console: 0 };

test.before(async () => {
  sshd = await startSshd();
  dir = mkdtempSync(path.join(os.tmpdir(), 'paddock-lab-host-checks-'));
  forward = new Forward(await freePort(), sshd.port);
  await forward.open();
  // Ports nothing listens on: a PDU daemon that is down, a console server that is not there.
  closed.pdu = await freePort();
  closed.console = await freePort();
  const board = (name: string, console: string, power: string) =>
    [
      `  - name: ${name}`,
      '    kind: board',
      '    labHost: lab-c',
      '    labels: { type: board }',
      '    settings:',
      `      power: ${power}`,
      `      console: ${console}`,
      '      boot: { serverIp: 127.0.0.1, tftpServer: external }',
    ].join('\n');
  const yaml = [
    'agent: { enabled: false }',
    'agents: { heartbeatTimeout: 30s }',
    staticMachinesYaml([
      {
        name: 's1',
        labHost: 'lab-c',
        port: forward.port,
        user: tenantOf(sshd.port),
        adminKeyPath: sshd.adminKey.path,
        authorizedKeysFile: sshd.authorizedKeysFile,
        labels: { type: 'static-host' },
      },
    ]),
    '  - { name: d1, kind: static, labHost: lab-d, labels: { type: elsewhere }, settings: { address: 127.0.9.9, user: ci, adminKey: /nonexistent } }',
    board('nodev', `{ device: "${path.join(dir, 'ttyNOPE')}" }`, `{ driver: pdudaemon, url: "http://127.0.0.1:${closed.pdu}", pdu: lab-pdu, port: 1 }`),
    board('tcpcon', `{ tcp: "127.0.0.1:${closed.console}" }`, '{ driver: snmp, host: pdu.invalid, outlet: 1 }'),
    '  - { name: noqemu, kind: qemu, labHost: lab-c, labels: { type: vm }, settings: { binary: /nonexistent/qemu-system-x86_64 } }',
    '  - { name: okqemu, kind: qemu, labHost: lab-c, labels: { type: vm } }',
  ].join('\n');
  api = await startApi(testConfig(yaml));
  const admin = new Paddock({ url: api.url, token: api.adminToken });
  userToken = (await admin.createToken('frank', 'user')).token;
  agentToken = (await admin.createToken('lab-c', 'agent')).token;
  agent = startAgentProcess({ url: api.url, name: 'lab-c', token: agentToken, dir, args: ['--kinds', 'static,board,qemu', '--check-interval', '1'] });
});

test.after.always(async () => {
  await stopGracefully(agent?.child);
  await api?.close();
  await forward?.close();
  await sshd?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const machine = async (name: string) => (await api.http().get(`v1/machines/${name}`)).body as MachineView;
const reasonOf = async (name: string) => (await machine(name)).unreachable?.reason;
const paddock = (args: string[], token = userToken) => runPaddock(api.url, token, args);

test.serial('the agent reports the machines it cannot reach, and they are shown as such', async (t) => {
  await waitFor(
    async () => (await Promise.all(['nodev', 'tcpcon', 'noqemu'].map(reasonOf))).every((reason) => reason !== undefined),
    120_000,
    `the agent's first checks (its log: ${agent.stderr()})`,
  );
  const nodev = (await reasonOf('nodev'))!;
  t.regex(nodev, new RegExp(`no such serial device ${path.join(dir, 'ttyNOPE')}`));
  t.regex(nodev, new RegExp(`the PDU daemon at http://127\\.0\\.0\\.1:${closed.pdu} is unreachable \\(connection refused`));
  const tcpcon = (await reasonOf('tcpcon'))!;
  t.regex(tcpcon, new RegExp(`console at tcp 127\\.0\\.0\\.1:${closed.console} does not answer \\(connection refused\\)`));
  t.regex(tcpcon, /address pdu\.invalid does not resolve/);
  t.regex((await reasonOf('noqemu'))!, /\/nonexistent\/qemu-system-x86_64 is not an executable file on this lab host/);
  for (const fine of ['s1', 'okqemu', 'd1']) t.is(await reasonOf(fine), undefined, `${fine} is not marked`);
  t.is((await machine('nodev')).state, 'available', 'its state is kept');

  const listed = await paddock(['machines', 'ls']);
  t.is(listed.code, 0, listed.stderr);
  t.regex(listed.stdout, /nodev\s+board\s+available, unreachable\s+lab-c/);
  t.regex(listed.stdout, /okqemu\s+qemu\s+available\s+lab-c/);
  t.regex(listed.stdout, /^noqemu: unreachable since \d{4}-\d\d-\d\dT[\d:.]+Z: \/nonexistent\/qemu-system-x86_64 is not/m);
  const shown = await paddock(['machines', 'show', 'tcpcon']);
  t.is(shown.code, 0, shown.stderr);
  t.regex(shown.stdout, /^tcpcon {2}board {2}available, unreachable {2}lab host lab-c$/m);
  t.regex(shown.stdout, /^tcpcon: unreachable since \S+: the console at tcp/m);

  const agents = await paddock(['agents', 'ls'], api.adminToken);
  t.is(agents.code, 0, agents.stderr);
  t.regex(agents.stdout, /^lab-c: it cannot reach 3 of its machines: nodev, noqemu, tcpcon \(paddock machines ls says why\)$/m);

  // Unreachable machines are not handed out: a request only they could serve waits.
  const user = new Paddock({ url: api.url, token: userToken });
  const board = await user.reserve({ members: [{ role: 'board', spec: 'type=board' }], lease: '10m' }, { renew: false });
  t.is(board.view.state, 'queued');
  await board.release();
  t.regex(agent.stderr(), /"agent":"lab-c","machine":"nodev","reason":"no such serial device.*"msg":"cannot be reached"/, 'the agent logs what it found');
});

test.serial('a host that stops answering is not matched, explain says why, and a request waiting for it gets it once it answers again', async (t) => {
  const user = new Paddock({ url: api.url, token: userToken });
  const first = await user.reserve({ members: [{ role: 'main', spec: 'type=static-host' }], lease: '10m' }, { renew: false });
  await first.ready({ timeout: 300 });
  t.is(first.view.allocations[0].machine, 's1', 'checked and provisioned through the same port');
  await first.release();
  await waitFor(async () => (await first.refresh()).state === 'released', 300_000, 'released');

  await forward.close();
  await waitFor(async () => (await reasonOf('s1')) !== undefined, 120_000, 's1 marked unreachable');
  t.is(await reasonOf('s1'), `its SSH port 127.0.0.1:${forward.port} does not answer (connection refused)`);
  const waiting = await user.reserve({ members: [{ role: 'main', spec: 'type=static-host' }], lease: '10m' }, { renew: false });
  t.is(waiting.view.state, 'queued');
  const explained = await paddock(['explain', '--reservation', waiting.id]);
  t.is(explained.code, 0, explained.stderr);
  t.regex(explained.stdout, /main ×1 \(type=static-host\): matches s1; free now none/);
  t.regex(
    explained.stdout,
    new RegExp(`s1: not free now: unreachable: its lab host lab-c reports since \\S+: its SSH port 127\\.0\\.0\\.1:${forward.port} does not answer`),
  );

  await forward.open();
  await waiting.ready({ timeout: 300 });
  t.is(waiting.view.allocations[0].machine, 's1');
  t.is(await reasonOf('s1'), undefined, 'the mark is lifted');
  await waiting.release();
  await waitFor(async () => (await waiting.refresh()).state === 'released', 300_000, 'released');
});

test.serial('a problem fixed on the lab host drops out of the report; lab-c cannot mark another lab host’s machine', async (t) => {
  // The serial device appears (a character device): only the PDU is left in nodev's reason.
  symlinkSync('/dev/null', path.join(dir, 'ttyNOPE'));
  await waitFor(async () => !/serial device/.test((await reasonOf('nodev')) ?? ''), 120_000, 'the device seen');
  t.regex((await reasonOf('nodev'))!, /^lab-pdu port 1: the PDU daemon at http:\/\/127\.0\.0\.1:\d+ is unreachable/);
  t.notRegex((await reasonOf('nodev'))!, /serial/);

  const labC = api.http(agentToken);
  const forged = await labC.post('v1/agent/heartbeat', { json: { agent: 'lab-c', problems: [{ machine: 'd1', reason: 'forged' }] } });
  t.is(forged.statusCode, 403);
  t.is((forged.body as { code: string }).code, 'not_your_task');
  const spoofed = await labC.post('v1/agent/heartbeat', { json: { agent: 'lab-d', problems: [{ machine: 'd1', reason: 'forged' }] } });
  t.is(spoofed.statusCode, 403);
  t.is(await reasonOf('d1'), undefined);
});
