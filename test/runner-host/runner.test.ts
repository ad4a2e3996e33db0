// Jobs from real git repositories, run by a real runner host process (`paddock runner`) against a
// real API with QEMU VM slots: passed with the output in the log, failed with its exit code, killed
// at the time limit with no process left, cancelled, reservations a script left behind released at
// the end, a runner host killed mid-run, bad input, who sees what, live logs, several runs at once,
// and a run reproduced locally.
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import test from 'ava';
import { Paddock } from '../../client/index.js';
import type { RunView } from '../../protocol/api.js';
import { embeddedConfig } from '../../api/config.js';
import { startApi, testConfig, type TestApi } from '../helpers/api.js';
import { testImages } from '../helpers/images.js';
import { textSink } from '../helpers/text-sink.js';
import { waitFor as waitUntil } from '../helpers/wait.js';
import { scrape, value } from '../helpers/metrics.js';
import { freePort } from '../helpers/ports.js';

const run = promisify(execFile);
const bin = path.resolve(import.meta.dirname, '../../bin/paddock.js');

let api: TestApi;
let admin: Paddock;
let scratch: string;
let repo: string;
let runnerToken: string;
let runner: ChildProcess | undefined;
let runnerLog = '';
let runnerMetricsPort: number;

const git = (...args: string[]) =>
  execFileSync('git', ['-C', repo, '-c', 'user.name=ci', '-c', 'user.email=ci@example.com', ...args], { encoding: 'utf8' }).trim();

function commitFile(file: string, text: string, mode = 0o644): string {
  const full = path.join(repo, file);
  mkdirSync(path.dirname(full), { recursive: true });
  writeFileSync(full, text);
  chmodSync(full, mode);
  git('add', file);
  git('commit', '-q', '-m', `add ${file}`);
  return git('rev-parse', 'HEAD');
}

function startRunner(name = 'runner-1', metricsPort?: number): ChildProcess {
  const metrics = metricsPort === undefined ? [] : ['--metrics-listen', `127.0.0.1:${metricsPort}`];
  const named = name === 'runner-1' ? [] : ['--name', name];
  const child = spawn(process.execPath, [bin, 'runner', ...named, '--slots', '3', '--work', path.join(scratch, 'work'), '--heartbeat', '0.5', ...metrics], {
    env: { ...process.env, PADDOCK_URL: api.url, PADDOCK_TOKEN: runnerToken },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  child.stderr!.on('data', (chunk: Buffer) => (runnerLog += chunk.toString()));
  return child;
}

async function stopRunner(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  const child = runner;
  runner = undefined;
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill(signal);
  await exited;
}

const ended = (view: RunView) => ['passed', 'failed', 'timed_out', 'cancelled'].includes(view.state);

async function finished(id: string, client = admin, timeoutSeconds = 120): Promise<RunView> {
  const view = await client.jobs.wait(id, { timeoutSeconds });
  if (!ended(view)) throw new Error(`run ${id} is still ${view.state}; runner log:\n${runnerLog}`);
  return view;
}

async function logOf(id: string, client = admin): Promise<string> {
  const sink = textSink();
  await client.jobs.log(id, sink);
  return sink.text;
}

/** Process ids whose environment says they belong to the run. */
function processesOfRun(id: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/environ`, 'utf8').split('\0').includes(`PADDOCK_RUN_ID=${id}`)) pids.push(Number(entry));
    } catch {
      // gone meanwhile, or not ours to read
    }
  }
  return pids;
}

const vmSpec = 'arch=x86_64';

/** waitFor, whose failure also shows what the runner host said (for a failure seen once in CI). */
async function waitFor(check: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  try {
    await waitUntil(check, timeoutMs, what);
  } catch (error) {
    throw new Error(`${(error as Error).message}; runner host log:\n${runnerLog}`);
  }
}

test.before(async () => {
  const images = await testImages();
  scratch = mkdtempSync(path.join(os.tmpdir(), 'paddock-runner-test-'));
  chmodSync(scratch, 0o711); // the run users pass through to their work folders
  api = await startApi(
    // The embedded defaults (two QEMU VM slots), with runner hosts taken for dead after 6 s of
    // silence and the job repositories local ones in the scratch folder.
    testConfig(
      `metrics: { listen: '127.0.0.1:0' }\nrunners: { heartbeatTimeout: 6 }\nrepositories: { localRoots: [${JSON.stringify(scratch)}] }\n${embeddedConfig}`,
    ),
  );
  admin = new Paddock({ url: api.url, token: api.adminToken });
  await admin.images.upload(images.initramfs, { name: 'tiny', format: 'bundle' });
  runnerToken = (await admin.createToken('runner-1', 'runner')).token;

  repo = path.join(scratch, 'jobs.git');
  mkdirSync(repo);
  execFileSync('git', ['init', '-q', '-b', 'main', repo]);
  // A TypeScript job repository: ESM, so scripts may use top-level await.
  commitFile('package.json', '{ "type": "module", "private": true }\n');
  commitFile(
    'ci/hello.sh',
    '#!/bin/sh\necho "hello from $PADDOCK_JOB, greeting=$PADDOCK_PARAM_GREETING"\necho "{\\"greeting\\": \\"$PADDOCK_PARAM_GREETING\\"}" > "$PADDOCK_RESULT"\n',
    0o755,
  );
  commitFile('ci/fail.sh', '#!/bin/sh\necho "about to fail" >&2\nexit 7\n', 0o755);
  commitFile('ci/slow.sh', '#!/bin/sh\necho step one\nsleep 1000 &\necho $! > "$HOME/background.pid"\nsleep 1000\n', 0o755);
  // Long enough between the steps for a follower started after the run (a CLI process) to connect.
  commitFile('ci/steps.sh', '#!/bin/sh\necho step one\nsleep 5\necho step two\n', 0o755);
  // Reserves a VM through the client library and exits without releasing it.
  commitFile(
    'ci/leave-vm.ts',
    `import { appendFileSync, writeFileSync } from 'node:fs';
import { Paddock } from 'paddock';
const paddock = new Paddock();
const reservation = await paddock.reserve({ members: [{ role: 'vm', spec: '${vmSpec}', image: 'tiny' }], lease: '30m' }, { renew: false });
await reservation.ready({ timeout: 300 });
const { stdout } = await reservation.run('vm', 'uname -s');
console.log('the vm says', stdout.trim(), 'on', reservation.view.allocations[0].machine);
writeFileSync(process.env.PADDOCK_RESULT!, JSON.stringify({ reservation: reservation.id }));
if (process.env.PADDOCK_PARAM_HOLD === 'yes') {
  console.log('holding the vm');
  appendFileSync(process.env.HOME + '/holding', 'yes');
  await new Promise(() => setInterval(() => undefined, 1000));
}
`,
  );
  runnerMetricsPort = await freePort();
  runner = startRunner('runner-1', runnerMetricsPort);
});

test.after.always(async () => {
  await stopRunner();
  await api?.close();
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

test.serial('a job from a local git repository runs to passed at the commit recorded; its log holds the output and its result is kept', async (t) => {
  const job = await admin.jobs.add({ name: 'hello', repository: repo, script: 'ci/hello.sh', parameters: { GREETING: 'hi' } });
  t.is(job.ref, 'main');
  const started = await admin.jobs.run('hello', { GREETING: 'bonjour' });
  const recorded = started.commit;
  t.is(recorded, git('rev-parse', 'main'));
  // The branch moves on after the run was made: the run still checks out the recorded commit.
  commitFile('ci/hello.sh', '#!/bin/sh\necho "a later version"\n', 0o755);
  const view = await finished(started.id);
  t.is(view.state, 'passed', runnerLog);
  t.is(view.exitCode, 0);
  t.is(view.commit, recorded);
  t.is(view.runner, 'runner-1');
  t.deepEqual(view.result, { greeting: 'bonjour' });
  const log = await logOf(view.id);
  t.regex(log, /hello from hello, greeting=bonjour/);
  t.notRegex(log, /a later version/);
  t.regex(log, /paddock: run passed/);
  t.notRegex(log, /pdk_[A-Za-z0-9_-]{20,}/, 'no token in the log');
  const [host] = await admin.jobs.runners();
  t.like(host, { name: 'runner-1', alive: true, runs: [] });
  // Order, not speed: heard from while this run was on (alive above says within the heartbeat timeout).
  t.true(Date.parse(host.lastSeen) >= Date.parse(view.createdAt), `last seen ${host.lastSeen}, run created ${view.createdAt}`);
});

test.serial('a failing script gives failed with its exit code; `paddock jobs show` and `runs` say so', async (t) => {
  await admin.jobs.add({ name: 'fail', repository: repo, script: 'ci/fail.sh' });
  const view = await finished((await admin.jobs.run('fail')).id);
  t.is(view.state, 'failed');
  t.is(view.exitCode, 7);
  t.regex(await logOf(view.id), /about to fail/);
  const env = { ...process.env, PADDOCK_URL: api.url, PADDOCK_TOKEN: api.adminToken };
  const shown = await run(process.execPath, [bin, 'jobs', 'show', view.id], { env });
  t.regex(shown.stdout, new RegExp(`${view.id}: failed \\(exit code 7\\)`));
  const listed = await run(process.execPath, [bin, 'jobs', 'runs', 'fail'], { env });
  t.regex(listed.stdout, new RegExp(`${view.id}\\s+fail\\s+failed\\s+7`));
  // Runs by outcome, as the API and the runner host's own metrics listener count them.
  const host = await scrape(`http://127.0.0.1:${runnerMetricsPort}/metrics`);
  t.true(value(host, 'paddock_runner_runs_total', { outcome: 'passed', fault: 'none' }) >= 1, host);
  t.true(value(host, 'paddock_runner_runs_total', { outcome: 'failed', fault: 'none' }) >= 1);
  t.is(value(host, 'paddock_runner_slots'), 3);
  t.false(host.includes(view.id), 'no run id in the labels');
  const served = await scrape(api.server.metrics!.url);
  t.true(value(served, 'paddock_runs_ended_total', { state: 'failed', fault: 'none' }) >= 1);
  t.true(value(served, 'paddock_runs_ended_total', { state: 'passed', fault: 'none' }) >= 1);
});

test.serial('a script over its time limit is killed with all its processes, and gives timed_out', async (t) => {
  await admin.jobs.add({ name: 'slow', repository: repo, script: 'ci/slow.sh', timeLimit: '2s' });
  const started = await admin.jobs.run('slow');
  await waitFor(async () => (await admin.jobs.getRun(started.id)).state === 'running', 120_000, 'running');
  await waitFor(async () => processesOfRun(started.id).length >= 2, 120_000, 'the script and its background child');
  const view = await finished(started.id);
  t.is(view.state, 'timed_out');
  t.regex(await logOf(view.id), /step one/);
  t.deepEqual(processesOfRun(started.id), [], 'no process of the run is left');
});

test.serial('a script that reserves a VM and exits without releasing it: the VM is free again right after the run ends', async (t) => {
  await admin.jobs.add({ name: 'leave-vm', repository: repo, script: 'ci/leave-vm.ts' });
  const view = await finished((await admin.jobs.run('leave-vm')).id);
  t.is(view.state, 'passed', await logOf(view.id));
  t.regex(await logOf(view.id), /the vm says Linux on vm-\d/);
  const { reservation } = view.result as { reservation: string };
  const left = await admin.reservation(reservation, { renew: false });
  await waitFor(async () => (await left.refresh()).state === 'released', 120_000, 'released');
  t.is(left.view.owner, view.id, "made with the run's own token");
  await waitFor(async () => (await admin.machines()).every((machine) => machine.state === 'available'), 120_000, 'machines free');
  t.true((await admin.machines()).every((machine) => machine.state === 'available'));
});

test.serial('a cancelled run is killed and its reservations released', async (t) => {
  const started = await admin.jobs.run('leave-vm', { HOLD: 'yes' });
  await waitFor(async () => /holding the vm/.test(await logOf(started.id)), 120_000, 'holding');
  const cancelled = await admin.jobs.cancel(started.id);
  t.true(cancelled.cancelRequested);
  const view = await finished(started.id);
  t.is(view.state, 'cancelled');
  t.deepEqual(processesOfRun(started.id), [], 'the script is gone');
  await waitFor(async () => (await admin.machines()).every((machine) => machine.state === 'available'), 120_000, 'machines free');
  t.true(
    (await admin.list({ all: true })).every((reservation) => reservation.owner !== started.id),
    'no live reservation of the run',
  );
});

test.serial('several runs at once, and the log followed live (`paddock jobs logs -f`) shows output before the run ends', async (t) => {
  await admin.jobs.add({ name: 'steps', repository: repo, script: 'ci/steps.sh' });
  const runs = await Promise.all([admin.jobs.run('steps'), admin.jobs.run('steps'), admin.jobs.run('steps')]);
  const env = { ...process.env, PADDOCK_URL: api.url, PADDOCK_TOKEN: api.adminToken };
  const follower = spawn(process.execPath, [bin, 'jobs', 'logs', runs[0].id, '-f'], { env });
  let followed = '';
  let sawStepOneWhileRunning = false;
  follower.stdout.on('data', (chunk: Buffer) => {
    followed += chunk.toString();
    if (/step one/.test(followed) && !/step two/.test(followed)) sawStepOneWhileRunning = true;
  });
  const followerDone = new Promise((resolve) => follower.once('exit', resolve));
  await waitFor(
    async () => (await Promise.all(runs.map((each) => admin.jobs.getRun(each.id)))).every((each) => each.state === 'running'),
    120_000,
    'all three running at once',
  );
  const views = await Promise.all(runs.map((each) => finished(each.id)));
  t.deepEqual(
    views.map((view) => view.state),
    ['passed', 'passed', 'passed'],
  );
  await followerDone;
  t.true(sawStepOneWhileRunning, `the first line came before the last; the follower got:\n${followed}`);
  t.regex(followed, /step one\n(.|\n)*step two\n(.|\n)*paddock: run passed/);
});

test.serial('a run is reproduced locally with one command: the same commit, script and parameters', async (t) => {
  const original = (await admin.jobs.runs({ job: 'hello' }))[0];
  const env = { ...process.env, PADDOCK_URL: api.url, PADDOCK_TOKEN: api.adminToken };
  const { stdout } = await run(process.execPath, [bin, 'jobs', 'reproduce', original.id], { env });
  t.regex(stdout, /hello from hello, greeting=bonjour/, 'the recorded commit and parameters');
  t.regex(stdout, /^passed/m);
  t.regex(stdout, /result: \{"greeting":"bonjour"\}/);
});

test.serial(
  "reproduce: another user's run only when asked; the script gets a token of its own, revoked with what it reserved when the reproduction ends",
  async (t) => {
    commitFile(
      'ci/who.ts',
      `import { writeFileSync } from 'node:fs';
import { Paddock } from 'paddock';
const paddock = new Paddock();
const me = await paddock.whoami();
const reservation = await paddock.reserve({ members: [{ role: 'vm', spec: '${vmSpec}', image: 'tiny' }], lease: '30m' }, { renew: false });
writeFileSync(process.env.PADDOCK_RESULT!, JSON.stringify({ name: me.name, role: me.role, token: process.env.PADDOCK_TOKEN, reservation: reservation.id }));
`,
    );
    const danaToken = (await admin.createToken('dana', 'user')).token;
    const dana = new Paddock({ url: api.url, token: danaToken });
    await dana.jobs.add({ name: 'who', repository: repo, script: 'ci/who.ts' });
    const original = await finished((await dana.jobs.run('who')).id, dana);
    t.is(original.state, 'passed');
    const adminEnv = { ...process.env, PADDOCK_URL: api.url, PADDOCK_TOKEN: api.adminToken };
    const reproduce = (...args: string[]) =>
      run(process.execPath, [bin, 'jobs', 'reproduce', original.id, ...args], { env: adminEnv }).then(
        ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
        (error: { code: number; stdout: string; stderr: string }) => error,
      );
    const refused = await reproduce();
    t.not(refused.code, 0);
    t.regex(refused.stderr, /belongs to dana.*\(other_users_run\)/);
    t.notRegex(refused.stdout, /passed/, 'nothing ran');

    const allowed = await reproduce('--allow-other-user');
    t.is(allowed.code, 0, allowed.stderr);
    const result = JSON.parse(/^result: (.*)$/m.exec(allowed.stdout)?.[1] ?? '{}') as { name: string; role: string; token: string; reservation: string };
    t.regex(result.name, /^repro-[0-9a-f]{12}$/, 'a token made for the reproduction');
    t.is(result.role, 'user', 'not the admin role of the caller');
    t.not(result.token, api.adminToken);
    t.is((await api.http(result.token).get('v1/whoami')).statusCode, 401, 'revoked when the reproduction ended');
    const reservation = (await api.http().get(`v1/reservations/${result.reservation}`)).body as { state: string };
    t.true(['releasing', 'released', 'cancelled'].includes(reservation.state), reservation.state);
    // The owner reproduces her own run without asking; another user cannot reproduce it at all.
    const own = await run(process.execPath, [bin, 'jobs', 'reproduce', original.id], { env: { ...adminEnv, PADDOCK_TOKEN: danaToken } });
    t.regex(own.stdout, /^passed/m);
    const stranger = await run(process.execPath, [bin, 'jobs', 'reproduce', original.id, '--allow-other-user'], {
      env: { ...adminEnv, PADDOCK_TOKEN: (await admin.createToken('eve', 'user')).token },
    }).catch((error: { stderr: string }) => error);
    t.regex(stranger.stderr, /belongs to another user/);
  },
);

test.serial("users see their own jobs and runs; admins see all; another user's run is forbidden", async (t) => {
  const alice = new Paddock({ url: api.url, token: (await admin.createToken('alice', 'user')).token });
  const bob = new Paddock({ url: api.url, token: (await admin.createToken('bob', 'user')).token });
  await alice.jobs.add({ name: 'mine', repository: repo, script: 'ci/steps.sh' });
  const aliceRun = await alice.jobs.run('mine');
  t.deepEqual(
    (await bob.jobs.list()).map((job) => job.name),
    [],
  );
  t.deepEqual(
    (await bob.jobs.runs()).map((each) => each.id),
    [],
  );
  await t.throwsAsync(bob.jobs.getRun(aliceRun.id), { message: /belongs to another user/ });
  await t.throwsAsync(bob.jobs.cancel(aliceRun.id), { message: /belongs to another user/ });
  await t.throwsAsync(bob.jobs.run('mine'), { message: /job mine/ });
  t.true((await admin.jobs.list({ all: true })).some((job) => job.owner === 'alice'));
  t.true((await admin.jobs.runs({ all: true })).some((each) => each.id === aliceRun.id));
  t.is((await finished(aliceRun.id, alice)).state, 'passed');
});

test.serial('bad input: a missing repository or ref, a script outside the repository, a missing token: clear errors, nothing left behind', async (t) => {
  const jobsBefore = (await admin.jobs.list({ all: true })).length;
  const runsBefore = (await admin.jobs.runs({ all: true })).length;
  const missingRepo = await t.throwsAsync(admin.jobs.add({ name: 'nope', repository: path.join(scratch, 'no-such-repo'), script: 'ci/hello.sh' }));
  t.is((missingRepo as { code?: string }).code, 'repository_not_found');
  // git's ext:: transport would run a command on the API host: refused before git sees it.
  const planted = path.join(scratch, 'ext-ran');
  const ext = await t.throwsAsync(admin.jobs.add({ name: 'nope', repository: `ext::sh -c touch% ${planted}`, script: 'ci/hello.sh' }));
  t.is((ext as { code?: string }).code, 'repository_refused');
  t.throws(() => readFileSync(planted), undefined, 'the command did not run');
  const withPassword = await t.throwsAsync(
    admin.jobs.add({ name: 'nope', repository: 'https://ci:hunter2-secret@127.0.0.1:9/jobs.git', script: 'ci/hello.sh' }),
  );
  t.is((withPassword as { code?: string }).code, 'repository_not_found');
  t.false(withPassword?.message.includes('hunter2-secret'), 'a password in the URL is not shown');
  const missingRef = await t.throwsAsync(admin.jobs.add({ name: 'nope', repository: repo, ref: 'no-such-branch', script: 'ci/hello.sh' }));
  t.is((missingRef as { code?: string }).code, 'ref_not_found');
  t.regex(missingRef?.message ?? '', /no-such-branch/);
  for (const script of ['../outside.sh', '/etc/passwd', 'ci/../../x', './ci/hello.sh']) {
    const refused = await t.throwsAsync(admin.jobs.add({ name: 'nope', repository: repo, script }));
    t.is((refused as { code?: string }).code, 'invalid_request', script);
  }
  const unknownKey = await api.http().post('v1/jobs', { json: { name: 'nope', repository: repo, script: 'ci/hello.sh', shell: 'bash' } });
  t.is(unknownKey.statusCode, 400);
  const noToken = await api.http(null).post('v1/jobs', { json: { name: 'nope', repository: repo, script: 'ci/hello.sh' } });
  t.is(noToken.statusCode, 401);
  const user = (await admin.createToken('carol', 'user')).token;
  const claimByUser = await api.http(user).post('v1/runner/claim', { json: { runner: 'x', slots: 1, wait: 0 } });
  t.is(claimByUser.statusCode, 403);
  const otherRunner = await api.http(runnerToken).post('v1/runner/heartbeat', { json: { runner: 'runner-2', runs: [] } });
  t.is(otherRunner.statusCode, 403, 'a runner token speaks only for its own runner host');
  t.is((await admin.jobs.list({ all: true })).length, jobsBefore, 'no job was made');
  // `paddock runner` with a user's token says what it needs instead of polling in vain.
  const wrongRole = await run(process.execPath, [bin, 'runner'], { env: { ...process.env, PADDOCK_URL: api.url, PADDOCK_TOKEN: user } }).then(
    () => ({ code: 0, stderr: '' }),
    (error: { code: number; stderr: string }) => error,
  );
  t.not(wrongRole.code, 0);
  t.regex(wrongRole.stderr, /a runner host needs a token of role runner; this one is user/);

  // A symlink in the repository that points outside it: the run fails before anything runs.
  execFileSync('ln', ['-s', '/etc/hostname', path.join(repo, 'ci', 'escape.sh')]);
  git('add', 'ci/escape.sh');
  git('commit', '-q', '-m', 'escape');
  await admin.jobs.add({ name: 'escape', repository: repo, script: 'ci/escape.sh' });
  const escaped = await finished((await admin.jobs.run('escape')).id);
  t.is(escaped.state, 'failed');
  t.regex(escaped.reason ?? '', /outside the repository/);
  t.is((await admin.jobs.runs({ all: true })).length, runsBefore + 1);
});

test.serial('a run handed to a runner host that never got it (the answer was lost) fails as an infrastructure error, its token revoked', async (t) => {
  await stopRunner();
  try {
    const queued = await admin.jobs.run('hello');
    // An admin token may speak for any runner host: here one that takes the run and then forgets it.
    const claimed = await api.http().post('v1/runner/claim', { json: { runner: 'forgetful', slots: 1, wait: 0 } });
    const [task] = (claimed.body as { runs: { id: string; token: string }[] }).runs;
    t.is(task.id, queued.id);
    let view = await admin.jobs.getRun(queued.id);
    t.is(view.state, 'assigned');
    const deadline = Date.now() + 120_000;
    while (view.state === 'assigned' && Date.now() < deadline) {
      await api.http().post('v1/runner/heartbeat', { json: { runner: 'forgetful', runs: [] } });
      await new Promise((resolve) => setTimeout(resolve, 500));
      view = await admin.jobs.getRun(queued.id);
    }
    t.is(view.state, 'failed');
    t.is(view.fault, 'infrastructure');
    t.regex(view.reason ?? '', /runner host forgetful does not run it/);
    await t.throwsAsync(new Paddock({ url: api.url, token: task.token }).whoami(), { message: /unknown or revoked token/ }, "the run's token is revoked");
  } finally {
    runner = startRunner();
  }
});

test.serial(
  'the runner host killed mid-run: the run ends as an infrastructure failure and its VM is freed; a restarted runner host stops what it left running',
  async (t) => {
    const started = await admin.jobs.run('leave-vm', { HOLD: 'yes' });
    await waitFor(async () => /holding the vm/.test(await logOf(started.id)), 120_000, 'holding');
    await stopRunner('SIGKILL');
    const view = await finished(started.id, admin, 60);
    t.is(view.state, 'failed');
    t.is(view.fault, 'infrastructure');
    t.regex(view.reason ?? '', /runner host runner-1 stopped answering/);
    await waitFor(async () => (await admin.machines()).every((machine) => machine.state === 'available'), 120_000, 'machines free');
    t.true((await admin.machines()).every((machine) => machine.state === 'available'));
    // The script outlived its runner host; the runner host's next start stops it.
    runner = startRunner();
    await waitFor(async () => processesOfRun(started.id).length === 0, 120_000, 'the orphaned script stopped').catch(() => undefined);
    t.deepEqual(processesOfRun(started.id), [], 'nothing of the run is left running');
    const after = await finished((await admin.jobs.run('hello')).id);
    t.is(after.state, 'passed', 'the restarted runner host takes runs again');
  },
);
