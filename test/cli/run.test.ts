// `paddock run`, `paddock shell`, `paddock scp`, PADDOCK_RESERVATION and per-member images, driven
// as a user runs them: the real CLI against a real API, static hosts behind real sshd.
import { execFile, spawn } from 'node:child_process';
import { copyFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import test from 'ava';
import type { ReservationView } from '../../protocol/api.js';
import { startApi, staticHostOn, staticMachinesYaml, testConfig, type TestApi } from '../helpers/api.js';
import { startSshd, type TestSshd } from '../helpers/sshd.js';

let api: TestApi;
let hosts: TestSshd[];
let carol: string;
let dave: string;
let scratch: string;

const bin = path.resolve('bin/paddock.js');
const idPattern = /(r-[0-9a-f]{12}): waiting until ready/;

interface Outcome {
  code: number;
  stdout: string;
  stderr: string;
}

function environment(token: string, extra: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, PADDOCK_URL: api.url, PADDOCK_TOKEN: token, PADDOCK_FROM_SOURCE: '1', ...extra };
  delete env.PADDOCK_RESERVATION;
  if (extra.PADDOCK_RESERVATION !== undefined) env.PADDOCK_RESERVATION = extra.PADDOCK_RESERVATION;
  return env;
}

/** Runs the CLI to its end; `input` goes to its stdin. */
function paddock(args: string[], options: { token?: string; env?: NodeJS.ProcessEnv; input?: string } = {}): Promise<Outcome> {
  return new Promise((resolve) => {
    const child = execFile(
      process.execPath,
      [bin, ...args],
      { env: environment(options.token ?? carol, options.env ?? {}), timeout: 300_000, cwd: scratch },
      (error, stdout, stderr) => resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
    child.stdin?.end(options.input ?? '');
  });
}

async function view(id: string, token = carol): Promise<ReservationView> {
  const shown = await paddock(['show', id, '--json'], { token });
  if (shown.code !== 0) throw new Error(`show ${id}: ${shown.stderr}`);
  return JSON.parse(shown.stdout) as ReservationView;
}

/** The reservation a `run`/`shell` made, from its progress on stderr. */
function reservationOf(outcome: { stderr: string }): string {
  const match = idPattern.exec(outcome.stderr);
  if (!match) throw new Error(`no reservation id in: ${outcome.stderr}`);
  return match[1];
}

const ended = (state: string) => ['releasing', 'released'].includes(state);

async function reserveGang(token = carol): Promise<string> {
  const reserved = await paddock(['reserve', '-m', 'build=role=builder', '-m', 'test=role=tester', '--wait', '--json'], { token });
  if (reserved.code !== 0) throw new Error(`reserve: ${reserved.stderr}`);
  return (JSON.parse(reserved.stdout) as { id: string }).id;
}

async function untilAvailable(names: string[]): Promise<void> {
  const deadline = Date.now() + 120_000;
  while (Date.now() < deadline) {
    const listed = await paddock(['machines', 'ls', '--json']);
    const machines = JSON.parse(listed.stdout) as { name: string; state: string }[];
    if (names.every((name) => machines.find((machine) => machine.name === name)?.state === 'available')) return;
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  throw new Error(`${names.join(', ')} did not come back`);
}

test.before(async () => {
  scratch = await mkdtemp(path.join(os.tmpdir(), 'paddock-run-test-'));
  hosts = await Promise.all([startSshd(), startSshd()]);
  api = await startApi(
    testConfig(
      staticMachinesYaml(
        hosts.map((host, index) => staticHostOn(host, `host-${index + 1}`, { type: 'static-host', arch: 'x86_64', role: index === 0 ? 'builder' : 'tester' })),
      ),
    ),
  );
  const tokens: string[] = [];
  for (const name of ['carol', 'dave']) {
    const created = await paddock(['token', 'create', name, '--json'], { token: api.adminToken });
    if (created.code !== 0) throw new Error(`token create failed: ${created.stderr}`);
    tokens.push((JSON.parse(created.stdout) as { token: string }).token);
  }
  [carol, dave] = tokens;
});

test.afterEach.always(async () => {
  await untilAvailable(['host-1', 'host-2']);
});

test.after.always(async () => {
  await api?.close();
  await Promise.all((hosts ?? []).map((host) => host.stop()));
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

test.serial("run: CMD's stdout and stderr apart, its exit status, and the reservation released after", async (t) => {
  const failing = await paddock(['run', 'role=builder', '--', 'sh', '-c', 'echo out-line; echo err-line >&2; whoami; exit 3']);
  t.is(failing.code, 3, failing.stderr);
  t.is(failing.stdout, `out-line\n${hosts[0].tenant}\n`, 'only the command prints on stdout, as the tenant of the host');
  t.regex(failing.stderr, /err-line/);
  t.regex(failing.stderr, /sshReady/, 'progress on stderr');
  const id = reservationOf(failing);
  t.true(ended((await view(id)).state));

  const passing = await paddock(['run', 'role=builder', '--', 'true']);
  t.is(passing.code, 0, passing.stderr);
  t.true(ended((await view(reservationOf(passing))).state));
});

test.serial('run: output comes while CMD runs, and SIGTERM releases the reservation', async (t) => {
  const child = spawn(process.execPath, [bin, 'run', 'role=builder', '--', 'sh', '-c', 'echo started; sleep 300; echo never'], {
    env: environment(carol, {}),
    cwd: scratch,
  });
  let stdout = '';
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  await new Promise<void>((resolve, reject) => {
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk.toString();
      if (stdout.includes('started')) resolve();
    });
    child.once('exit', () => reject(new Error(`run ended before its command printed: ${stderr}`)));
  });
  const id = reservationOf({ stderr });
  t.is((await view(id)).state, 'ready', 'held while the command runs');
  child.kill('SIGTERM');
  t.is(await exited, 143, '128 + SIGTERM');
  t.false(stdout.includes('never'));
  t.true(ended((await view(id)).state), stderr);
});

test.serial('run renews the lease while a command longer than the lease runs', async (t) => {
  const run = await paddock(['run', '--lease', '3', 'role=builder', '--', 'sh', '-c', 'sleep 10; echo done']);
  t.is(run.code, 0, run.stderr);
  t.is(run.stdout, 'done\n');
  const after = await view(reservationOf(run));
  t.true(ended(after.state), `${after.state} ${after.reason ?? ''}`);
  t.not(after.reason, 'lease expired');
});

test.serial('run --local: the reservation and its members in the environment, an ssh_config for them', async (t) => {
  const script = [
    'echo "reservation=$PADDOCK_RESERVATION"',
    'echo "build=$PADDOCK_USER_BUILD_0@$PADDOCK_HOST_BUILD_0:$PADDOCK_PORT_BUILD_0"',
    'echo "test=$PADDOCK_USER_TEST_0@$PADDOCK_HOST_TEST_0:$PADDOCK_PORT_TEST_0"',
    'echo "members=$PADDOCK_MEMBERS"',
    'ssh -F "$PADDOCK_SSH_CONFIG" "paddock-$PADDOCK_RESERVATION-test.0" echo through-config',
    '"$NODE" "$PADDOCK_BIN" ssh build -- echo through-paddock-ssh',
  ].join('\n');
  const run = await paddock(['run', '--local', '-m', 'build=role=builder', '-m', 'test=role=tester', '--', 'sh', '-c', script], {
    env: { NODE: process.execPath, PADDOCK_BIN: bin },
  });
  t.is(run.code, 0, run.stderr);
  const id = reservationOf(run);
  const lines = run.stdout.trim().split('\n');
  t.is(lines[0], `reservation=${id}`);
  t.is(lines[1], `build=${hosts[0].tenant}@127.0.0.1:${hosts[0].port}`);
  t.is(lines[2], `test=${hosts[1].tenant}@127.0.0.1:${hosts[1].port}`);
  const members = JSON.parse(lines[3].slice('members='.length)) as { role: string; index: number; machine: string; hostKey: string; sshHost: string }[];
  t.deepEqual(
    members.map((member) => [member.role, member.index, member.machine, member.hostKey, member.sshHost]),
    [
      ['build', 0, 'host-1', hosts[0].hostKey, `paddock-${id}-build.0`],
      ['test', 0, 'host-2', hosts[1].hostKey, `paddock-${id}-test.0`],
    ],
  );
  t.deepEqual(lines.slice(4), ['through-config', 'through-paddock-ssh'], 'the ssh_config logs in; paddock ssh takes PADDOCK_RESERVATION');
  t.true(ended((await view(id)).state));

  const failing = await paddock(['run', '--local', 'role=builder', '--', 'sh', '-c', 'exit 9']);
  t.is(failing.code, 9);
  const missing = await paddock(['run', '--local', 'role=builder', '--', './no-such-program', 'argument']);
  t.is(missing.code, 125, 'a command that cannot start');
  t.regex(missing.stderr, /\(command_not_found\)/);
  const line = await paddock(['run', '--local', 'role=builder', '--', 'echo "$PADDOCK_HOST_MAIN_0" && exit 5']);
  t.is(line.code, 5, 'one argument is a shell command line');
  t.is(line.stdout, '127.0.0.1\n');
  t.true(ended((await view(reservationOf(missing))).state));
});

test.serial('run --on picks the member of a gang; bad requests fail before anything is reserved', async (t) => {
  const run = await paddock(['run', '-m', 'build=role=builder', '-m', 'test=role=tester', '--on', 'test.0', '--', 'whoami && echo second']);
  t.is(run.code, 0, run.stderr);
  t.deepEqual(run.stdout.trim().split(/\s+/), [hosts[1].tenant, 'second'], 'one argument is a command line for the shell of the member');
  const words = await paddock(['run', 'role=builder', '--', 'printf', '[%s]', 'a b', '$HOME', "it's"]);
  t.is(words.stdout, "[a b][$HOME][it's]", 'several arguments arrive as they were given');

  const noSpec = await paddock(['run', '--', 'true']);
  t.is(noSpec.code, 2);
  t.regex(noSpec.stderr, /nothing to reserve.*\(usage\)/);
  const noCommand = await paddock(['run', 'role=builder']);
  t.is(noCommand.code, 2);
  t.regex(noCommand.stderr, /needs a command after --/);
  const badOn = await paddock(['run', 'role=builder', '--on', 'test', '--', 'true']);
  t.is(badOn.code, 2);
  t.regex(badOn.stderr, /no member has role "test"/);
  const clash = await paddock(['run', '--local', '-m', 'a-b=role=builder', '-m', 'A_b=role=tester', '--', 'true']);
  t.is(clash.code, 2);
  t.regex(clash.stderr, /roles a-b and A_b would share the variables PADDOCK_HOST_A_B_N/);
  const unsatisfiable = await paddock(['run', 'arch=armv7', '--', 'true']);
  t.is(unsatisfiable.code, 125, 'the reservation failed: 125, not a status CMD could have');
  t.regex(unsatisfiable.stderr, /\(unsatisfiable\)/);
  const listed = await paddock(['ls', '--json']);
  t.deepEqual(JSON.parse(listed.stdout), [], 'nothing left held');
});

test.serial('shell holds the lease for the session and releases after it', async (t) => {
  const shell = await paddock(['shell', '--lease', '3', 'role=builder'], { input: 'sleep 10\necho "still-held as $(whoami)"\nexit 4\n' });
  t.is(shell.code, 4, shell.stderr);
  t.regex(shell.stdout, new RegExp(`still-held as ${hosts[0].tenant}`));
  const after = await view(reservationOf(shell));
  t.true(ended(after.state), `${after.state} ${after.reason ?? ''}`);
  t.not(after.reason, 'lease expired');
});

test.serial('PADDOCK_RESERVATION is the default reservation; without one, a clear error', async (t) => {
  const id = await reserveGang();
  const env = { PADDOCK_RESERVATION: id };
  const shown = await paddock(['show', '--json'], { env });
  t.is((JSON.parse(shown.stdout) as ReservationView).id, id);
  const ssh = await paddock(['ssh', 'test', '--', 'whoami'], { env });
  t.is(ssh.stdout.trim(), hosts[1].tenant, 'one argument is the member');
  const explicit = await paddock(['ssh', id, '--', 'whoami'], { env });
  t.is(explicit.stdout.trim(), hosts[0].tenant, 'an argument shaped like an id is the reservation');

  const none = await paddock(['show']);
  t.is(none.code, 2);
  t.regex(none.stderr, /^paddock: which reservation\? give its ID or set PADDOCK_RESERVATION \(no_reservation\)\n$/m);
  t.is((await paddock(['ssh', '--', 'true'])).code, 2);
  t.is((await paddock(['release'])).code, 2);

  // power and boot take it too: static hosts cannot do either, and say so for this reservation.
  const power = await paddock(['power', 'test', 'cycle'], { env });
  t.is(power.code, 1, power.stderr);
  t.regex(power.stderr, /\(power_not_supported\)/);
  const boot = await paddock(['boot', 'test', '--image', 'none:1'], { env });
  t.is(boot.code, 1, boot.stderr);
  t.notRegex(boot.stderr, /no_reservation/);
  t.is((await paddock(['power', 'cycle'])).code, 2, 'power without ID or PADDOCK_RESERVATION is a usage error');

  const renewed = await paddock(['renew'], { env });
  t.regex(renewed.stdout, new RegExp(`^${id}: ready, expires `));
  const released = await paddock(['release', '--json'], { env });
  t.is(released.code, 0, released.stderr);
  const [entry] = JSON.parse(released.stdout) as { id: string; state: string }[];
  t.is(entry.id, id);
  t.true(ended(entry.state));
});

test.serial("another user's reservation in PADDOCK_RESERVATION is refused, and left alone", async (t) => {
  const theirs = await reserveGang(dave);
  const env = { PADDOCK_RESERVATION: theirs };
  for (const args of [['show'], ['ssh', '--', 'true'], ['release'], ['scp', 'build:.profile', 'stolen'], ['console']]) {
    const attempt = await paddock(args, { env });
    t.is(attempt.code, 1, `${args.join(' ')}: ${attempt.stderr}`);
    t.regex(attempt.stderr, /\((not_found|forbidden)\)/, args.join(' '));
    t.notRegex(attempt.stderr + attempt.stdout, /PRIVATE KEY/);
  }
  t.is((await view(theirs, dave)).state, 'ready', "dave's reservation lives on");
  for (const twisted of ['../tokens', '..', 'r-0123456789ab/../../tokens', '%2e%2e']) {
    const attempt = await paddock(['show'], { env: { PADDOCK_RESERVATION: twisted } });
    t.is(attempt.code, 1, twisted);
    t.regex(attempt.stderr, /\((not_found|invalid_parameter)\)\n$/, twisted);
  }
  t.is((await paddock(['release', theirs], { token: dave })).code, 0);
});

test.serial('per-member images on the command line, for reserve and run', async (t) => {
  const reserved = await paddock([
    'reserve',
    '-m',
    'build=role=builder',
    '-m',
    'test=role=tester',
    '--image',
    'build=x86:ci-12',
    '--image',
    'test=arm:ci-12',
    '--json',
  ]);
  t.is(reserved.code, 0, reserved.stderr);
  const id = (JSON.parse(reserved.stdout) as { id: string }).id;
  t.deepEqual(
    (await view(id)).members.map((member) => [member.role, member.image]),
    [
      ['build', 'x86:ci-12'],
      ['test', 'arm:ci-12'],
    ],
  );
  t.is((await paddock(['release', id])).code, 0);

  const run = await paddock([
    'run',
    '-m',
    'build=role=builder',
    '-m',
    'test=role=tester',
    '--image',
    'base:1',
    '--image',
    'test=arm:2',
    '--local',
    '--',
    'true',
  ]);
  t.is(run.code, 0, run.stderr);
  t.deepEqual(
    (await view(reservationOf(run))).members.map((member) => [member.role, member.image]),
    [
      ['build', 'base:1'],
      ['test', 'arm:2'],
    ],
    'a bare image is for the members without one of their own',
  );

  for (const images of [['nosuch=x:1'], ['a:1', 'b:1'], ['build=a:1', 'build=b:1'], ['build=']]) {
    const refused = await paddock(['reserve', '-m', 'build=role=builder', ...images.flatMap((image) => ['--image', image])]);
    t.is(refused.code, 2, images.join(' '));
    t.regex(refused.stderr, /\(usage\)/);
  }
  t.deepEqual(JSON.parse((await paddock(['ls', '--json'])).stdout), [], 'nothing was reserved by a refused request');
});

test.serial('scp both ways with the pinned host key; a host presenting another key is refused', async (t) => {
  const id = await reserveGang();
  const local = path.join(scratch, 'upload.txt');
  await writeFile(local, 'carried over\n');
  const up = await paddock(['scp', local, `${id}:test:upload.txt`]);
  t.is(up.code, 0, up.stderr);
  t.is((await paddock(['ssh', id, 'test', '--', 'cat', 'upload.txt'])).stdout, 'carried over\n');
  const down = await paddock(['scp', 'test.0:upload.txt', 'back.txt'], { env: { PADDOCK_RESERVATION: id } });
  t.is(down.code, 0, down.stderr);
  t.is(await readFile(path.join(scratch, 'back.txt'), 'utf8'), 'carried over\n');

  const usage = [
    [`${id}:../x:/etc/passwd`, 'out'],
    ['../x:/etc/passwd', 'out'],
    [`${id}:test.0:a`, `${id}:build:b`],
    [`${id}:no.such:a`, 'out'],
  ];
  for (const [from, to] of usage) {
    const refused = await paddock(['scp', from, to]);
    t.is(refused.code, 2, `${from} ${to}: ${refused.stderr}`);
    t.regex(refused.stderr, /\(usage\)/);
  }
  const notMember = await paddock(['scp', `${id}:nosuch:a`, 'out']);
  t.is(notMember.code, 1);
  t.regex(notMember.stderr, /\(invalid_target\)/);

  // The host behind test.0 now presents another key than the one Paddock pinned.
  const keyFile = path.join(hosts[1].dir, 'ssh_host_ed25519_key');
  await copyFile(keyFile, `${keyFile}.kept`);
  await rm(keyFile);
  await promisify(execFile)('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', keyFile, '-C', 'impostor']);
  try {
    await writeFile(path.join(scratch, 'secret.txt'), 'not for an impostor\n');
    const impostor = await paddock(['scp', path.join(scratch, 'secret.txt'), `${id}:test:secret.txt`]);
    t.not(impostor.code, 0);
    t.regex(impostor.stderr, /host key|HOST IDENTIFICATION/i);
  } finally {
    await copyFile(`${keyFile}.kept`, keyFile);
  }
  t.is((await paddock(['ssh', id, 'test', '--', 'test', '!', '-e', 'secret.txt'])).code, 0, 'nothing was copied');
  t.is((await paddock(['release', id])).code, 0);
});
