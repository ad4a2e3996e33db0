// A lab as it really is, on one machine: the API, two lab hosts and a user, each in a network
// namespace of its own (test/helpers/netns.ts). Lab host A has an emulated board (U-Boot over TFTP,
// pdudaemon, a serial line) and lab host B QEMU VMs, each reachable only inside its own namespace;
// the lab hosts dial out to the API, and the user reaches only the API. Everything the user does
// goes through the API: the gang, `paddock ssh` to each machine through the tunnel, a file copied
// from the board to the VM with the client library, an interactive console session on the board and
// `paddock console -f` following its boot. Then agent A is killed with -9 during provisioning and
// again while its board is ready.
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import test from 'ava';
import type { MachineView, ReservationView } from '../../protocol/api.js';
import { testImages } from '../helpers/images.js';
import { powerScript } from '../helpers/lab/index.js';
import { makeNamespaces, type Namespaces } from '../helpers/netns.js';
import { waitFor } from '../helpers/wait.js';

const bin = path.resolve('bin/paddock.js');
const port = 7300;
let ns: Namespaces;
let dir: string;
let labA: ChildProcess | undefined;
let labDir: string;
let api: ChildProcess | undefined;
let apiOutput = '';
let adminToken: string;
const tokens: Record<string, string> = {};
const agents: Record<string, ChildProcess | undefined> = {};
const agentOutput: Record<string, string> = { 'lab-a': '', 'lab-b': '' };

/** The URL of the API as `host` reaches it. */
const apiUrl = (host: string) => `http://${ns.hub(host)}:${port}`;

/** `paddock ARGS` in the user's namespace. */
function user(args: string[], token = tokens.alice, options: { input?: string } = {}) {
  return ns.run('user', process.execPath, [bin, ...args], {
    env: { ...process.env, PADDOCK_URL: apiUrl('user'), PADDOCK_TOKEN: token },
    ...(options.input === undefined ? {} : { input: options.input }),
  });
}

async function userJson<T>(args: string[], token = tokens.alice): Promise<T> {
  const answer = await user([...args, '--json'], token);
  if (answer.code !== 0) throw new Error(`paddock ${args.join(' ')}: ${answer.stderr}`);
  return JSON.parse(answer.stdout) as T;
}

function startAgent(host: 'a' | 'b'): void {
  const name = `lab-${host}`;
  const child = ns.spawn(host, process.execPath, [bin, 'agent', '--name', name, '--data', path.join(dir, name)], {
    env: { ...process.env, PADDOCK_URL: apiUrl(host), PADDOCK_TOKEN: tokens[name] },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  child.stderr!.on('data', (chunk: Buffer) => (agentOutput[name] += chunk.toString()));
  agents[name] = child;
}

async function killAgent(name: string): Promise<void> {
  const child = agents[name];
  agents[name] = undefined;
  if (!child || child.exitCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGKILL');
  await exited;
}

const machine = async (name: string) => (await userJson<MachineView[]>(['machines', 'ls'], adminToken)).find((each) => each.name === name)!;
const show = (id: string) => userJson<ReservationView>(['show', id], adminToken);
const boardPower = () => ns.run('a', powerScript, [labDir, 'status', '1']).then((answer) => answer.stdout.trim());
/** What agent A keeps of reservations: provisioning records, console logs, staged boot files. */
const leftOnA = () =>
  ['agent/provisioning', 'agent/consoles', 'tftp/paddock'].flatMap((where) => {
    const full = path.join(dir, 'lab-a', where);
    return existsSync(full) ? readdirSync(full, { recursive: true }).map((entry) => `${where}/${String(entry)}`) : [];
  });

test.before(async () => {
  const images = await testImages();
  dir = mkdtempSync(path.join(os.tmpdir(), 'paddock-several-hosts-'));
  ns = await makeNamespaces('api', ['a', 'b', 'user']);

  // Lab host A's board, on A's own loopback.
  labA = ns.spawn('a', process.execPath, ['--import', 'tsx', path.resolve('test/helpers/lab/in-namespace.ts'), 'lab-a', 'board-a'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const board = await new Promise<{ yaml: string; dir: string }>((resolve, reject) => {
    let out = '';
    let errors = '';
    labA!.stdout!.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      if (out.includes('\n')) resolve(JSON.parse(out.split('\n')[0]) as { yaml: string; dir: string });
    });
    labA!.stderr!.on('data', (chunk: Buffer) => (errors += chunk.toString()));
    labA!.once('exit', () => reject(new Error(`the lab did not start: ${errors}`)));
  });
  labDir = board.dir;

  const config = path.join(dir, 'paddock.yaml');
  writeFileSync(
    config,
    [
      `listen: 0.0.0.0:${port}`,
      `dataDir: ${JSON.stringify(path.join(dir, 'api'))}`,
      'agent: { enabled: false }',
      'agents: { heartbeatTimeout: 4s }',
      'reaper: { interval: 0.2 }',
      // Nothing of a lab host is reachable from the user's namespace: everything goes through Paddock.
      'labHosts: { lab-a: { access: paddock }, lab-b: { access: paddock } }',
      'machines:',
      board.yaml,
      '  - { name: vm-b, kind: qemu, labHost: lab-b, labels: { arch: x86_64 }, capacities: { cpus: 1, ram: 256MiB } }',
    ].join('\n'),
  );
  api = ns.spawn('api', process.execPath, [bin, 'serve', '--config', config], { stdio: ['ignore', 'ignore', 'pipe'] });
  api.stderr!.on('data', (chunk: Buffer) => (apiOutput += chunk.toString()));
  await waitFor(async () => apiOutput.includes('paddock listening'), 180_000, `the API to listen: ${apiOutput}`);
  adminToken = readFileSync(path.join(dir, 'api', 'admin-token'), 'utf8').trim();
  for (const [name, role] of [
    ['alice', 'user'],
    ['bob', 'user'],
    ['lab-a', 'agent'],
    ['lab-b', 'agent'],
  ]) {
    tokens[name] = (await userJson<{ token: string }>(['token', 'create', name, '--role', role], adminToken)).token;
  }
  for (const [file, name, arch] of [
    [images.arm64, 'arm', 'arm64'],
    [images.initramfs, 'tiny', 'x86_64'],
  ]) {
    const uploaded = await user(['images', 'upload', file, '--name', name, '--format', 'bundle', '--arch', arch, '--quiet'], tokens.alice);
    if (uploaded.code !== 0) throw new Error(`upload: ${uploaded.stderr}`);
  }
  startAgent('a');
  startAgent('b');
  await waitFor(async () => (await machine('board-a')).state === 'available' && (await machine('vm-b')).state === 'available', 120_000, 'both lab hosts heard');
});

test.after.always(async () => {
  for (const name of Object.keys(agents)) await killAgent(name);
  if (labA && labA.exitCode === null) {
    const exited = new Promise((resolve) => labA!.once('exit', resolve));
    labA.kill('SIGTERM');
    await exited;
  }
  api?.kill('SIGTERM');
  await ns?.remove();
  rmSync(dir, { recursive: true, force: true });
});

test.serial('from the user namespace: a gang of a board on lab host A and a VM on lab host B, reached only through the API', async (t) => {
  // The user reaches the API, and nothing of either lab host.
  const reach = (address: string, to: number) =>
    ns.run(
      'user',
      process.execPath,
      [
        '-e',
        `require('net').connect(${to}, ${JSON.stringify(address)}).on('connect', () => process.exit(0)).on('error', (e) => { console.error(e.code); process.exit(3); })`,
      ],
      { timeoutMs: 10_000 },
    );
  t.is((await reach(ns.hub('user'), port)).code, 0, 'the API answers');
  t.not((await reach(ns.address('a'), 22)).code, 0, 'lab host A is out of reach');
  t.not((await reach(ns.address('b'), 22)).code, 0, 'lab host B is out of reach');

  const gang = await ns.run('user', process.execPath, ['--import', 'tsx', path.resolve('test/helpers/user-in-namespace.ts'), 'gang', 'arm', 'tiny'], {
    env: { ...process.env, PADDOCK_URL: apiUrl('user'), PADDOCK_TOKEN: tokens.alice },
  });
  t.is(gang.code, 0, `${gang.stderr}\n${agentOutput['lab-a']}\n${agentOutput['lab-b']}`);
  const { id, via } = JSON.parse(gang.stdout) as { id: string; via: [string, string][] };
  t.deepEqual(via, [
    ['board', 'paddock'],
    ['vm', 'paddock'],
  ]);
  // `paddock console -f` follows the board's boot (from the API, whatever lab host it is on) until the end.
  const follower = ns.spawn('user', process.execPath, [bin, 'console', id, 'board', '-f'], {
    env: { ...process.env, PADDOCK_URL: apiUrl('user'), PADDOCK_TOKEN: tokens.alice },
  });
  let followed = '';
  follower.stdout!.on('data', (chunk: Buffer) => (followed += chunk.toString('latin1')));
  const followerDone = new Promise<number | null>((resolve) => follower.once('exit', resolve));

  for (const [member, arch] of [
    ['board', 'aarch64'],
    ['vm', 'x86_64'],
  ]) {
    const ssh = await user(['ssh', id, member, '--', 'uname', '-m']);
    t.is(ssh.code, 0, ssh.stderr);
    t.is(ssh.stdout.trim(), arch, `paddock ssh to the ${member}`);
  }
  const copy = await ns.run('user', process.execPath, ['--import', 'tsx', path.resolve('test/helpers/user-in-namespace.ts'), 'copy', id], {
    env: { ...process.env, PADDOCK_URL: apiUrl('user'), PADDOCK_TOKEN: tokens.alice },
  });
  t.is(copy.code, 0, copy.stderr);
  const sums = JSON.parse(copy.stdout) as { board: string; vm: string };
  t.regex(sums.board, /^[0-9a-f]{64}$/);
  t.is(sums.vm, sums.board, 'the file went from the board to the VM whole');

  // An interactive session on the board's console, through the tunnel to lab host A's relay.
  const session = ns.spawn('user', process.execPath, [bin, 'console', id, 'board', '-i'], {
    env: { ...process.env, PADDOCK_URL: apiUrl('user'), PADDOCK_TOKEN: tokens.alice },
  });
  let typed = '';
  session.stdout!.on('data', (chunk: Buffer) => (typed += chunk.toString('latin1')));
  const sessionDone = new Promise<number | null>((resolve) => session.once('exit', resolve));
  await new Promise((resolve) => setTimeout(resolve, 1000));
  session.stdin!.write('echo console-$((40+2))\n');
  await waitFor(async () => /console-42/.test(typed), 120_000, `the console answering: ${JSON.stringify(typed.slice(-300))}`);
  session.stdin!.write('~.');
  t.is(await sessionDone, 0, '~. quits');

  t.is((await user(['release', id])).code, 0);
  t.is(await followerDone, 0, 'paddock console -f ends with the reservation');
  t.regex(followed, /U-Boot 20\d\d/);
  t.regex(followed, /paddock: ssh ready/);
  t.regex(followed, /console-42/);
  await waitFor(async () => (await show(id)).state === 'released', 120_000, 'the release');
  t.is(await boardPower(), 'off', 'the board was switched off');
  t.deepEqual(leftOnA(), [], 'nothing of the reservation is left on lab host A');
});

test.serial('kill -9 of lab host A: during provisioning, and while its board is ready', async (t) => {
  // During provisioning: the board's machine goes offline, the provisioning fails as the lab's fault.
  const first = await userJson<{ id: string }>(['reserve', 'arch=arm64', '--image', 'arm', '--lease', '10m']);
  await waitFor(async () => Object.keys((await show(first.id)).allocations[0]?.stages ?? {}).length > 0, 120_000, 'provisioning under way');
  // A request queued behind it must survive all that follows.
  const queued = await userJson<{ id: string }>(['reserve', 'arch=arm64', '--image', 'arm', '--lease', '10m'], tokens.bob);
  await killAgent('lab-a');
  await waitFor(async () => (await machine('board-a')).state === 'offline', 120_000, 'board-a offline');
  t.regex((await machine('board-a')).reason ?? '', /lab host lab-a is silent/);
  await waitFor(async () => (await show(first.id)).allocations[0].failure !== undefined, 120_000, 'the provisioning to fail');
  t.like((await show(first.id)).allocations[0].failure, { code: 'lab_host_offline', fault: 'infrastructure' });
  // Its release waits for the lab host: the board may be on, and only its agent can switch it off.
  t.true(['releasing', 'failed'].includes((await show(first.id)).state));
  t.is((await show(queued.id)).state, 'queued', 'the queue is intact');

  startAgent('a');
  await waitFor(async () => (await show(first.id)).state === 'failed', 120_000, 'the release done once the lab host is back');
  // Back: the board is swept (switched off, nothing left) and the queued request gets it.
  await waitFor(async () => (await show(queued.id)).state === 'ready', 300_000, `the queued request served: ${agentOutput['lab-a'].slice(-2000)}`);
  t.is((await machine('board-a')).state, 'reserved');

  // While ready: the reservation goes on, flagged, and is still usable once the lab host is back.
  await killAgent('lab-a');
  await waitFor(async () => (await show(queued.id)).allocations[0].labHostSilentSince !== undefined, 120_000, 'the flag');
  t.is((await show(queued.id)).state, 'ready', 'a ready reservation goes on');
  t.is((await machine('board-a')).state, 'offline');
  startAgent('a');
  await waitFor(async () => (await show(queued.id)).allocations[0].labHostSilentSince === undefined, 120_000, 'the flag lifted');
  const ssh = await user(['ssh', queued.id, '--', 'uname', '-m'], tokens.bob);
  t.is(ssh.code, 0, ssh.stderr);
  t.is(ssh.stdout.trim(), 'aarch64');
  t.is((await user(['release', queued.id], tokens.bob)).code, 0);
  await waitFor(async () => (await machine('board-a')).state === 'available', 120_000, 'board-a available');
  t.is(await boardPower(), 'off');
  t.deepEqual(leftOnA(), [], 'nothing left on lab host A');
});
