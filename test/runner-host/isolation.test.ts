// Runner isolation, attacked the way a hostile user of a shared lab would: through a real runner
// host process (`paddock runner`, as root, as CI runs it) and a real API. Mallory's job script
// looks for the runner host's token (its parent's environment, every environment under /proc, the
// token file), for Alice's concurrent run (its environment, its folder), tries what it finds on the
// runner API to claim and finish Alice's run, and leaves a setsid'd process behind to outlive its
// run. Alice's job comes from an HTTP repository that needs a password, which her script must not
// see. Also: the runner host refuses to start when it cannot isolate runs, and its token file
// must be private.
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import os from 'node:os';
import path from 'node:path';
import test from 'ava';
import { Paddock } from '../../client/index.js';
import type { RunView } from '../../protocol/api.js';
import { embeddedConfig } from '../../api/config.js';
import { startApi, testConfig, type TestApi } from '../helpers/api.js';
import { localRepositories } from '../helpers/lab-config.js';
import { textSink } from '../helpers/text-sink.js';
import { stopGracefully } from '../helpers/server.js';
import { waitFor } from '../helpers/wait.js';

const bin = path.resolve(import.meta.dirname, '../../bin/paddock.js');
const repositoryPassword = 'alice-repo-pw-7f3c9e';
const aliceSecret = 'alice-param-secret-51d2';
/** Run users of this file's runner host: apart from the other tests' ranges. */
const runUids = '61800-61849';

let api: TestApi;
let admin: Paddock;
let scratch: string;
let runnerToken: string;
let tokenFile: string;
let runner: ChildProcess | undefined;
let runnerLog = '';
let gitServer: Server;
let aliceRepository: string;
let malloryRepository: string;

const git = (repo: string, ...args: string[]) =>
  execFileSync('git', ['-C', repo, '-c', 'user.name=ci', '-c', 'user.email=ci@example.com', ...args], { encoding: 'utf8' }).trim();

function repository(name: string, files: Record<string, string>): string {
  const repo = path.join(scratch, name);
  mkdirSync(repo);
  execFileSync('git', ['init', '-q', '-b', 'main', repo]);
  for (const [file, text] of Object.entries(files)) {
    mkdirSync(path.dirname(path.join(repo, file)), { recursive: true });
    writeFileSync(path.join(repo, file), text, { mode: file.endsWith('.sh') ? 0o755 : 0o644 });
  }
  git(repo, 'add', '.');
  git(repo, 'commit', '-q', '-m', 'jobs');
  return repo;
}

/** Serves a bare copy of `repo` over git's dumb HTTP protocol, to user alice with the password only. */
async function serveWithPassword(repo: string): Promise<string> {
  const bare = path.join(scratch, 'alice.git');
  execFileSync('git', ['clone', '-q', '--bare', repo, bare]);
  execFileSync('git', ['-C', bare, 'update-server-info']);
  const expected = `Basic ${Buffer.from(`alice:${repositoryPassword}`).toString('base64')}`;
  gitServer = createServer((request, response) => {
    if (request.headers.authorization !== expected) {
      response.writeHead(401, { 'www-authenticate': 'Basic realm="git"' }).end();
      return;
    }
    const file = path.join(bare, decodeURIComponent(new URL(request.url ?? '/', 'http://x').pathname));
    if (!file.startsWith(bare) || !existsSync(file) || !statSync(file).isFile()) {
      response.writeHead(404).end();
      return;
    }
    response.writeHead(200).end(readFileSync(file));
  });
  await new Promise<void>((resolve) => gitServer.listen(0, '127.0.0.1', resolve));
  const { port } = gitServer.address() as { port: number };
  return `http://alice:${repositoryPassword}@127.0.0.1:${port}/`;
}

function startRunner(): ChildProcess {
  // The token both in a private file and, the worst case, in the runner host's own environment.
  const child = spawn(
    process.execPath,
    [
      bin,
      'runner',
      '--name',
      'isolation-runner',
      '--token-file',
      tokenFile,
      '--run-uids',
      runUids,
      '--slots',
      '3',
      '--work',
      path.join(scratch, 'work'),
      '--heartbeat',
      '0.5',
    ],
    {
      env: { ...process.env, PADDOCK_URL: api.url, PADDOCK_TOKEN: runnerToken },
      stdio: ['ignore', 'ignore', 'pipe'],
    },
  );
  child.stderr!.on('data', (chunk: Buffer) => (runnerLog += chunk.toString()));
  return child;
}

async function finished(id: string, client = admin): Promise<RunView> {
  const view = await client.jobs.wait(id, { timeoutSeconds: 180 });
  if (!['passed', 'failed', 'timed_out', 'cancelled'].includes(view.state)) throw new Error(`run ${id} is still ${view.state}; runner log:\n${runnerLog}`);
  return view;
}

async function logOf(id: string): Promise<string> {
  const sink = textSink();
  await admin.jobs.log(id, sink);
  return sink.text;
}

/** Process ids whose environment says they belong to the run (this test runs as root: it sees all). */
function processesOfRun(id: string): number[] {
  return readdirSync('/proc')
    .filter((entry) => /^\d+$/.test(entry))
    .filter((entry) => {
      try {
        return readFileSync(`/proc/${entry}/environ`, 'utf8').split('\0').includes(`PADDOCK_RUN_ID=${id}`);
      } catch {
        return false;
      }
    })
    .map(Number);
}

// Alice's script: holds on long enough for Mallory's to run beside it, then reports what it sees.
const aliceScript = `#!/bin/sh
echo "alice starts"
echo "$PADDOCK_PARAM_SECRET" > "$HOME/secret.txt"
sleep 12
# The password, written in two pieces so that this script itself does not hold it.
password="${repositoryPassword.slice(0, 6)}""${repositoryPassword.slice(6)}"
if grep -rqF "$password" . "$HOME" 2>/dev/null || env | grep -qF "$password"; then password=seen; else password=absent; fi
printf '{"secret": "%s", "password": "%s", "remote": "%s"}' "$(cat "$HOME/secret.txt")" "$password" "$(git remote get-url origin)" > "$PADDOCK_RESULT"
echo "alice ends"
`;

// Mallory's script: everything it can find, tried against the runner API, then a process to outlive the run.
const malloryScript = `import { spawn } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';

const attempt = (what: () => string) => { try { return what(); } catch (error) { return 'refused: ' + (error as NodeJS.ErrnoException).code; } };
const environments = readdirSync('/proc').filter((entry) => /^\\d+$/.test(entry)).map((pid) => attempt(() => readFileSync('/proc/' + pid + '/environ', 'utf8')));
const parent = attempt(() => readFileSync('/proc/' + process.ppid + '/environ', 'utf8'));
const tokens = new Set(environments.concat(parent).flatMap((text) => [...text.matchAll(/PADDOCK_TOKEN=([^\\0]*)/g)].map((match) => match[1])));
const tokenFile = attempt(() => readFileSync(process.env.PADDOCK_PARAM_TOKEN_FILE!, 'utf8'));
const workRoot = path.dirname(path.dirname(process.cwd()));
const otherRuns = attempt(() => readdirSync(workRoot).join(','));
const aliceHome = attempt(() => readFileSync(path.join(workRoot, process.env.PADDOCK_PARAM_ALICE_DIR ?? 'x', 'home', 'secret.txt'), 'utf8'));
const answers: Record<string, number> = {};
for (const token of [...tokens, tokenFile.trim()]) {
  const post = (route: string, body: unknown) => fetch(process.env.PADDOCK_URL + route, { method: 'POST', headers: { authorization: 'Bearer ' + token, 'content-type': 'application/json' }, body: JSON.stringify(body) }).then((answer) => answer.status, () => -1);
  answers['claim with ' + token.slice(0, 12)] = await post('/v1/runner/claim', { runner: 'isolation-runner', slots: 3, wait: 0 });
  answers['finish alice with ' + token.slice(0, 12)] = await post('/v1/runner/runs/' + process.env.PADDOCK_PARAM_ALICE_RUN + '/finished', { runner: 'isolation-runner', outcome: 'passed', exitCode: 0, result: 'forged' });
}
// A process that leaves the run's session and keeps a heartbeat going in the shared /tmp.
spawn('setsid', ['sh', '-c', 'trap "" TERM HUP; while :; do date +%s%N > /tmp/mallory-' + process.env.PADDOCK_RUN_ID + '; sleep 0.2; done'], { detached: true, stdio: 'ignore' }).unref();
const report = { processes: environments.length, tokens: [...tokens], parent, tokenFile, otherRuns, aliceHome, answers };
console.log(JSON.stringify(report));
writeFileSync(process.env.PADDOCK_RESULT!, JSON.stringify(report));
`;

test.before(async () => {
  scratch = mkdtempSync(path.join(os.tmpdir(), 'paddock-isolation-test-'));
  chmodSync(scratch, 0o711); // run users pass through to their work folders, and no further
  // Alice's repository is served over plain HTTP on loopback; mallory's is a local one.
  api = await startApi(testConfig(`${localRepositories(scratch, ['https', 'ssh', 'http'])}\n${embeddedConfig}`));
  admin = new Paddock({ url: api.url, token: api.adminToken });
  runnerToken = (await admin.createToken('isolation-runner', 'runner')).token;
  tokenFile = path.join(scratch, 'runner.token');
  writeFileSync(tokenFile, `${runnerToken}\n`, { mode: 0o600 });
  aliceRepository = await serveWithPassword(repository('alice-src', { 'ci/alice.sh': aliceScript }));
  malloryRepository = repository('mallory', { 'package.json': '{ "type": "module", "private": true }\n', 'ci/hostile.ts': malloryScript });
  runner = startRunner();
});

test.after.always(async () => {
  await stopGracefully(runner);
  await api?.close();
  gitServer?.close();
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

test.serial(
  "a hostile script finds neither the runner host's token nor the other run, forges nothing, cannot outlive its run; the other user's run passes untouched",
  async (t) => {
    const alice = new Paddock({ url: api.url, token: (await admin.createToken('alice', 'user')).token });
    const mallory = new Paddock({ url: api.url, token: (await admin.createToken('mallory', 'user')).token });
    await alice.jobs.add({ name: 'build', repository: aliceRepository, script: 'ci/alice.sh', parameters: { SECRET: aliceSecret } });
    await mallory.jobs.add({ name: 'snoop', repository: malloryRepository, script: 'ci/hostile.ts' });

    const aliceRun = await alice.jobs.run('build');
    await waitFor(
      async () => (await alice.jobs.getRun(aliceRun.id)).state === 'running' && processesOfRun(aliceRun.id).length > 0,
      60_000,
      "alice's run running",
    );
    const aliceDir = readdirSync(path.join(scratch, 'work')).find((name) => name.startsWith(aliceRun.id));
    const malloryRun = await mallory.jobs.run('snoop', { TOKEN_FILE: tokenFile, ALICE_RUN: aliceRun.id, ALICE_DIR: aliceDir ?? '' });
    const snooped = await finished(malloryRun.id, mallory);
    t.is(snooped.state, 'passed', `${await logOf(malloryRun.id)}\n${runnerLog}`);
    const report = snooped.result as {
      processes: number;
      tokens: string[];
      parent: string;
      tokenFile: string;
      otherRuns: string;
      aliceHome: string;
      answers: Record<string, number>;
    };
    t.log(JSON.stringify({ ...report, parent: report.parent.length, tokens: report.tokens.map((token) => token.slice(0, 8)) }));

    const malloryLog = await logOf(malloryRun.id);
    const everything = `${malloryLog}\n${JSON.stringify(report)}`;
    t.false(everything.includes(runnerToken), "the runner host's token is found nowhere");
    t.false(everything.includes(aliceSecret), "Alice's parameter is found nowhere");
    t.false(everything.includes(repositoryPassword), "Alice's repository password is found nowhere");
    t.true(report.processes < 10, `the script sees its own few processes, not the machine's (${report.processes})`);
    t.true(report.tokenFile.startsWith('refused: EACCES'), report.tokenFile);
    t.true(report.otherRuns.startsWith('refused: EACCES'), `the work folder cannot be listed: ${report.otherRuns}`);
    t.true(report.aliceHome.startsWith('refused: EACCES'), `Alice's folder cannot be read: ${report.aliceHome}`);
    t.true(
      report.tokens.every((token) => token !== runnerToken),
      "the only tokens in sight are the run's own",
    );
    t.true(
      Object.keys(report.answers).length > 0 && Object.values(report.answers).every((status) => status === 401 || status === 403),
      JSON.stringify(report.answers),
    );

    // Nothing of Mallory's run outlives it: not the setsid'd loop, not its heartbeat file.
    await waitFor(async () => processesOfRun(malloryRun.id).length === 0, 120_000, "mallory's processes gone").catch(() => undefined);
    t.deepEqual(processesOfRun(malloryRun.id), [], 'no process of the run is left');
    t.false(existsSync(`/tmp/mallory-${malloryRun.id}`), 'its heartbeat file in the shared /tmp was removed with its user');

    const done = await finished(aliceRun.id, alice);
    t.is(done.state, 'passed', await logOf(aliceRun.id));
    t.is(done.runner, 'isolation-runner');
    t.like(done.result as object, { secret: aliceSecret, password: 'absent' }, 'her parameter reached her script; her repository password did not');
    t.false(JSON.stringify(done.result).includes(repositoryPassword), "the checkout's remote keeps no password");
    const aliceLog = await logOf(aliceRun.id);
    t.regex(aliceLog, /alice starts\n[^]*alice ends\n/);
    t.notRegex(aliceLog, /forged/);
  },
);

/** `paddock runner …` as `uid` (root when undefined): its exit code and what it said, or 'running' when it kept running. */
function runnerCommand(args: string[], options: { uid?: number; env?: NodeJS.ProcessEnv } = {}): Promise<{ code: number | string; stderr: string }> {
  const command =
    options.uid === undefined
      ? [process.execPath, bin]
      : ['setpriv', `--reuid=${options.uid}`, `--regid=${options.uid}`, '--clear-groups', process.execPath, bin];
  return new Promise((resolve) => {
    const child = execFile(
      command[0],
      [...command.slice(1), 'runner', ...args],
      { env: { ...process.env, PADDOCK_URL: api.url, PADDOCK_TOKEN: '', ...options.env }, timeout: 120_000 },
      (error, _stdout, stderr) => resolve({ code: error ? ((error as { code?: number | string }).code ?? 1) : 0, stderr }),
    );
    // A runner host that started says so on its first line; stop it there.
    let said = '';
    child.stderr!.on('data', (chunk: Buffer) => {
      said += chunk.toString();
      if (/pulling runs/.test(said)) child.kill('SIGTERM');
    });
  });
}

test.serial(
  'a runner host that cannot isolate runs refuses to start and says why, unless started --single-user; a token file others can read is refused',
  async (t) => {
    const uid = 61899; // not root: cannot switch users
    const home = path.join(scratch, 'personal');
    mkdirSync(home);
    const personalToken = path.join(home, 'runner.token');
    writeFileSync(personalToken, `${runnerToken}\n`, { mode: 0o600 });
    chownSync(home, uid, uid);
    chownSync(personalToken, uid, uid);

    const refused = await runnerCommand(['--token-file', personalToken, '--work', path.join(home, 'work')], { uid });
    t.not(refused.code, 0);
    t.regex(refused.stderr, /runs cannot be isolated: the runner host runs as uid 61899, not root/);
    t.regex(refused.stderr, /--single-user/);
    t.false(refused.stderr.includes(runnerToken));

    const personal = await runnerCommand(['--token-file', personalToken, '--work', path.join(home, 'work'), '--single-user', '--name', 'personal'], { uid });
    t.regex(personal.stderr, /SINGLE-USER: scripts run as this user, can read its token and each other, and are not isolated/, personal.stderr);

    const readable = path.join(scratch, 'readable.token');
    writeFileSync(readable, `${runnerToken}\n`, { mode: 0o644 });
    const open = await runnerCommand(['--token-file', readable, '--work', path.join(scratch, 'work-2')]);
    t.not(open.code, 0);
    t.regex(open.stderr, /the token file .* must be owned by this user \(uid 0\) and readable by it alone/);
    t.false(open.stderr.includes(runnerToken));
  },
);
