// One run on a runner host, against real git repositories made in a temp folder and real job
// scripts (shell, JavaScript, TypeScript): the exact commit is checked out, the script sees only
// the promised environment, outcomes follow exit codes, the time limit and cancellation stop the
// script's whole process group, nothing the script started is left running, bad script paths and
// repositories fail with stable codes, and the run's token never shows in Paddock's own output.
// Runs are isolated, as on a runner host (each as a uid of its own in a PID namespace of its own),
// except where a test says single-user. Tests run one at a time: the leftover-process checks look
// at the whole process table.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmod, lstat, mkdir, mkdtemp, readFile, readdir, realpath, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import test from 'ava';
import type { ExecutionContext } from 'ava';
import { checkout, CheckoutError, resolveRef } from '../../runner-host/checkout.js';
import { execute, projectRoot, type RunOutcome } from '../../runner-host/execute.js';
import { processesOf } from '../../runner-host/launch.js';
import type { RunTask } from '../../protocol/runner.js';
import { RunUsers } from '../../runner-host/run-users.js';
import type { RepositoryRules } from '../../protocol/repository.js';

const run = promisify(execFile);
const token = `pdk_${randomBytes(16).toString('hex')}`;
const url = 'http://127.0.0.1:9';
// A variable of the runner host's own: a script must not see it.
process.env.PADDOCK_TEST_HOST_ONLY = 'host secret';

// Tests run as root (as CI does); a range of their own, apart from the runner hosts of other tests.
const users = new RunUsers(61900, 61949);
let root: string;
test.before(async () => {
  root = await mkdtemp(path.join(os.tmpdir(), 'paddock-execute-'));
  await chmod(root, 0o711); // run users pass through to their own work folder
});
test.after.always(async () => {
  if (root) await rm(root, { recursive: true, force: true });
});

/** The repository rules a runner host gets from the API: here, local repositories under the test's folder. */
const localRules = (): RepositoryRules => ({ transports: ['https', 'ssh'], localRoots: [root] });
/** resolveRef as the API calls it, with generous caps. */
const resolveLocal = (repository: string, ref: string) => resolveRef(repository, ref, { rules: localRules(), timeoutMs: 60_000, maxOutputBytes: 1024 * 1024 });

type RepoFile = string | { content: string; mode?: number } | { symlink: string };

interface Repository {
  dir: string;
  commit: string;
  commitAll(message: string): Promise<string>;
}

async function git(dir: string, ...args: string[]): Promise<string> {
  // safe.directory: an isolated run's checkout belongs to its run user, not to this (root) process.
  const { stdout } = await run('git', ['-C', dir, '-c', 'safe.directory=*', '-c', 'user.name=t', '-c', 'user.email=t@t', ...args]);
  return stdout.trim();
}

/** A real repository on branch main with `files` in one commit. */
async function repository(files: Record<string, RepoFile>): Promise<Repository> {
  const dir = path.join(root, `repo-${randomBytes(4).toString('hex')}`);
  await mkdir(dir);
  await git(dir, 'init', '--quiet', '--initial-branch=main');
  await writeFiles(dir, files);
  const commitAll = async (message: string) => {
    await git(dir, 'add', '--all');
    await git(dir, 'commit', '--quiet', '-m', message);
    return git(dir, 'rev-parse', 'HEAD');
  };
  return { dir, commit: await commitAll('first'), commitAll };
}

async function writeFiles(dir: string, files: Record<string, RepoFile>): Promise<void> {
  for (const [name, file] of Object.entries(files)) {
    const target = path.join(dir, name);
    await mkdir(path.dirname(target), { recursive: true });
    if (typeof file === 'object' && 'symlink' in file) {
      await symlink(file.symlink, target);
      continue;
    }
    const { content, mode } = typeof file === 'string' ? { content: file, mode: 0o644 } : file;
    await writeFile(target, content);
    await chmod(target, mode ?? 0o644);
  }
}

const executable = (content: string) => ({ content, mode: 0o755 });

function taskFor(repo: Repository, script: string, overrides: Partial<RunTask> = {}): RunTask {
  return {
    id: `run-${randomBytes(6).toString('hex')}`,
    job: 'nightly',
    repository: repo.dir,
    repositoryRules: localRules(),
    ref: 'main',
    commit: repo.commit,
    script,
    parameters: {},
    // Long enough for a machine under heavy load; the time limit tests set their own.
    timeLimitSeconds: 600,
    token,
    ...overrides,
  };
}

interface Ran {
  outcome: RunOutcome;
  output: string;
  workDir: string;
  /** The uid the run had; undefined when single-user. */
  uid?: number;
  /** The processes of that uid still running when execute() resolved: there must be none. */
  left: number[];
}

/** Runs a task the way the runner host does; `onText` sees the output so far, for aborting mid-run. */
async function runTask(
  task: RunTask,
  options: { signal?: AbortSignal; killGraceMs?: number; onText?: (text: string) => void; singleUser?: boolean } = {},
): Promise<Ran> {
  const workDir = path.join(root, task.id);
  const chunks: Buffer[] = [];
  const user = options.singleUser ? undefined : await users.acquire();
  try {
    const outcome = await execute({
      task,
      url,
      workDir,
      user,
      signal: options.signal ?? new AbortController().signal,
      killGraceMs: options.killGraceMs ?? 500,
      onOutput: (chunk) => {
        chunks.push(chunk);
        options.onText?.(Buffer.concat(chunks).toString('utf8'));
      },
    });
    // Looked at before the user is freed (which kills what it has left): execute() alone must leave nothing.
    const left = user ? await processesOf(user.uid) : [];
    return { outcome, output: Buffer.concat(chunks).toString('utf8'), workDir, uid: user?.uid, left };
  } finally {
    await user?.release();
  }
}

interface ProcessEntry {
  pid: number;
  state: string;
  ppid: number;
  pgid: number;
  comm: string;
}

async function processTable(): Promise<ProcessEntry[]> {
  const names = (await readdir('/proc')).filter((name) => /^\d+$/.test(name));
  const lines = await Promise.all(names.map((name) => readFile(`/proc/${name}/stat`, 'utf8').catch(() => '')));
  return lines.filter(Boolean).map((line) => {
    const [state, ppid, pgid] = line.slice(line.lastIndexOf(')') + 2).split(' ');
    return {
      pid: Number(line.slice(0, line.indexOf(' '))),
      state,
      ppid: Number(ppid),
      pgid: Number(pgid),
      comm: line.slice(line.indexOf('(') + 1, line.lastIndexOf(')')),
    };
  });
}

/** Running (not zombie: nothing reaps orphans in some containers) processes matching `keep`. */
async function running(keep: (entry: ProcessEntry) => boolean | Promise<boolean>): Promise<ProcessEntry[]> {
  const live = (await processTable()).filter((entry) => entry.state !== 'Z' && entry.state !== 'X');
  const kept = await Promise.all(live.map(keep));
  return live.filter((_, index) => kept[index]);
}

/** Nothing of the run is left: no process with its PADDOCK_RUN_ID, no git started by the checkout. */
async function assertNothingLeft(t: ExecutionContext, task: RunTask): Promise<void> {
  const ofRun = await running(async (entry) => {
    const environ = await readFile(`/proc/${entry.pid}/environ`, 'latin1').catch(() => '');
    return environ.split('\0').includes(`PADDOCK_RUN_ID=${task.id}`);
  });
  t.deepEqual(
    ofRun.map((entry) => `${entry.pid} ${entry.comm}`),
    [],
    'no process of the run is left',
  );
  const gits = await running((entry) => entry.ppid === process.pid && entry.comm.startsWith('git'));
  t.deepEqual(
    gits.map((entry) => entry.pid),
    [],
    'no git process is left',
  );
}

async function isRunning(pid: number): Promise<boolean> {
  return (await running((entry) => entry.pid === pid)).length > 0;
}

/** Paddock's own lines in the output. */
const ownLines = (output: string) => output.split('\n').filter((line) => line.startsWith('paddock: '));

function assertTokenNotShown(t: ExecutionContext, ran: Ran): void {
  t.false(
    ownLines(ran.output).some((line) => line.includes(token)),
    'no paddock line shows the token',
  );
  t.false(String(ran.outcome.reason ?? '').includes(token), 'the reason does not show the token');
}

const shellScript = executable(`#!/bin/sh
echo "x is $PADDOCK_PARAM_X, build type $PADDOCK_PARAM_BUILD_TYPE"
cat version.txt
env > "$HOME/env.txt"
`);

test.serial('a shell script runs at the exact commit, with its parameters and only the promised environment', async (t) => {
  const repo = await repository({ 'ci/test.sh': shellScript, 'version.txt': 'version one\n' });
  await writeFile(path.join(repo.dir, 'version.txt'), 'version two\n');
  const later = await repo.commitAll('the branch moves on');
  t.not(later, repo.commit);

  const task = taskFor(repo, 'ci/test.sh', { parameters: { x: 'hello world', 'build-type': 'debug' } });
  const ran = await runTask(task);

  t.deepEqual(ran.outcome, { outcome: 'passed', exitCode: 0 });
  t.true(ran.output.includes('x is hello world, build type debug\n'), ran.output);
  t.true(ran.output.includes('version one\n'), 'the file as it was at the commit');
  t.false(ran.output.includes('version two'));
  t.is(await git(path.join(ran.workDir, 'src'), 'rev-parse', 'HEAD'), repo.commit);
  t.is(await git(path.join(ran.workDir, 'src'), 'status', '--porcelain', '--untracked-files=no'), '', 'the checkout is clean');

  const env = Object.fromEntries(
    (await readFile(path.join(ran.workDir, 'home', 'env.txt'), 'utf8'))
      .trim()
      .split('\n')
      .map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)]),
  );
  t.like(env, {
    PATH: process.env.PATH,
    HOME: path.join(ran.workDir, 'home'),
    TMPDIR: path.join(ran.workDir, 'tmp'),
    LANG: 'C.UTF-8',
    PADDOCK_URL: url,
    PADDOCK_TOKEN: token,
    PADDOCK_RUN_ID: task.id,
    PADDOCK_JOB: 'nightly',
    PADDOCK_COMMIT: repo.commit,
    PADDOCK_RESULT: path.join(ran.workDir, 'result.json'),
    PADDOCK_PARAM_X: 'hello world',
    PADDOCK_PARAM_BUILD_TYPE: 'debug',
  });
  const shellOwn = new Set(['PWD', 'OLDPWD', 'SHLVL', '_']);
  t.deepEqual(
    Object.keys(env).filter((name) => !name.startsWith('PADDOCK_') && !['PATH', 'HOME', 'TMPDIR', 'LANG'].includes(name) && !shellOwn.has(name)),
    [],
    'nothing of the host leaks in',
  );
  t.false('PADDOCK_TEST_HOST_ONLY' in env, 'a variable of the host is not passed on');
  t.true(
    ownLines(ran.output).some((line) => line.startsWith('paddock: the script exited with code 0')),
    ran.output,
  );
  assertTokenNotShown(t, ran);
  await assertNothingLeft(t, task);
});

test.serial('a JavaScript script writes JSON to $PADDOCK_RESULT: the result is the parsed value', async (t) => {
  const repo = await repository({
    'ci/report.mjs': `import { writeFileSync } from 'node:fs';
writeFileSync(process.env.PADDOCK_RESULT, JSON.stringify({ tests: 12, failed: [], job: process.env.PADDOCK_JOB }));
console.log('reported');
`,
  });
  const task = taskFor(repo, 'ci/report.mjs');
  const ran = await runTask(task);
  t.deepEqual(ran.outcome, { outcome: 'passed', exitCode: 0, result: { tests: 12, failed: [], job: 'nightly' } });
  t.true(ran.output.includes('reported\n'));
  await assertNothingLeft(t, task);
});

test.serial('a result that is not JSON is kept as text; one over 1 MiB is left out with a note', async (t) => {
  const repo = await repository({
    'text.sh': executable('#!/bin/sh\nprintf "all good, 3 warnings" > "$PADDOCK_RESULT"\n'),
    'big.sh': executable('#!/bin/sh\nhead -c 1048577 /dev/zero > "$PADDOCK_RESULT"\n'),
  });
  const text = await runTask(taskFor(repo, 'text.sh'));
  t.deepEqual(text.outcome, { outcome: 'passed', exitCode: 0, result: 'all good, 3 warnings' });

  const big = await runTask(taskFor(repo, 'big.sh'));
  t.is(big.outcome.outcome, 'passed');
  t.false('result' in big.outcome);
  t.regex(big.outcome.reason ?? '', /over the 1 MiB limit/);
  t.true(
    ownLines(big.output).some((line) => line.includes('over the 1 MiB limit')),
    big.output,
  );
});

test.serial('a script that exits 3 fails with exit code 3 and no fault of the runner host', async (t) => {
  const repo = await repository({ 'fail.sh': executable('#!/bin/sh\necho "compiling"\necho "error: no such symbol" >&2\nexit 3\n') });
  const task = taskFor(repo, 'fail.sh');
  const ran = await runTask(task);
  t.deepEqual(ran.outcome, { outcome: 'failed', exitCode: 3 });
  t.true(ran.output.includes('compiling\n'));
  t.true(ran.output.includes('error: no such symbol\n'), 'stderr is in the output too');
  t.true(ownLines(ran.output).some((line) => line.startsWith('paddock: the script exited with code 3')));
  await assertNothingLeft(t, task);
});

test.serial('single-user: the time limit stops the whole group, SIGKILL when SIGTERM is ignored, and leaves nothing running', async (t) => {
  const repo = await repository({
    'slow.sh': executable(`#!/bin/sh
trap '' TERM
sleep 1000 &
echo $! > "$HOME/child.pid"
echo $$ > "$HOME/main.pid"
echo started
while :; do sleep 1; done
`),
  });
  const task = taskFor(repo, 'slow.sh', { timeLimitSeconds: 1 });
  const ran = await runTask(task, { killGraceMs: 500, singleUser: true });

  t.deepEqual(ran.outcome, { outcome: 'timed_out', signal: 'SIGKILL' });
  t.true(ran.output.includes('started\n'));
  t.true(ownLines(ran.output).includes('paddock: time limit of 1s reached, stopping the script'), ran.output);
  const childPid = Number(await readFile(path.join(ran.workDir, 'home', 'child.pid'), 'utf8'));
  const mainPid = Number(await readFile(path.join(ran.workDir, 'home', 'main.pid'), 'utf8'));
  t.false(await isRunning(childPid), 'the background sleep is gone');
  t.false(await isRunning(mainPid), 'the script is gone');
  t.deepEqual(await running((entry) => entry.pgid === mainPid), [], 'nothing of its process group runs');
  await assertNothingLeft(t, task);
});

test.serial('a background process left by a script that passed is stopped', async (t) => {
  const repo = await repository({ 'leave.sh': executable('#!/bin/sh\nsleep 1000 &\necho $! > "$HOME/child.pid"\necho done\n') });
  const task = taskFor(repo, 'leave.sh');
  const ran = await runTask(task);
  t.deepEqual(ran.outcome, { outcome: 'passed', exitCode: 0 });
  t.true(ownLines(ran.output).includes('paddock: stopping the processes the script left running'), ran.output);
  t.deepEqual(ran.left, [], "no process of the run's user is left");
  await assertNothingLeft(t, task);
});

test.serial('aborting mid-run cancels it: SIGTERM to the group, nothing left', async (t) => {
  const repo = await repository({ 'wait.sh': executable('#!/bin/sh\nsleep 1000 &\necho $! > "$HOME/child.pid"\necho started\nsleep 1000\n') });
  const task = taskFor(repo, 'wait.sh');
  const controller = new AbortController();
  const ran = await runTask(task, { signal: controller.signal, killGraceMs: 60_000, onText: (text) => text.includes('started\n') && controller.abort() });
  t.deepEqual(ran.outcome, { outcome: 'cancelled', signal: 'SIGTERM' });
  t.true(ownLines(ran.output).includes('paddock: the run was cancelled, stopping the script'), ran.output);
  t.deepEqual(ran.left, [], "no process of the run's user is left");
  await assertNothingLeft(t, task);
});

test.serial('a run cancelled before it starts never runs the script', async (t) => {
  const repo = await repository({ 'touch.sh': executable('#!/bin/sh\ntouch "$HOME/ran"\n') });
  const task = taskFor(repo, 'touch.sh');
  const ran = await runTask(task, { signal: AbortSignal.abort() });
  t.deepEqual(ran.outcome, { outcome: 'cancelled' });
  await t.throwsAsync(lstat(path.join(ran.workDir, 'home', 'ran')), { code: 'ENOENT' });
});

const badScripts: [string, string, string][] = [
  ['../x', 'script_outside_repository', "'..' in the path"],
  ['/etc/passwd', 'script_outside_repository', 'an absolute path'],
  ['ci/escape.sh', 'script_outside_repository', 'a symlink pointing outside'],
  ['ci/missing.sh', 'script_not_found', 'a missing script'],
  ['ci', 'script_not_found', 'a folder'],
  ['ci/notes.txt', 'script_not_executable', 'a file without an executable bit or a Node extension'],
];

test.serial('bad script paths fail the run with a stable code, a clear reason, and nothing running', async (t) => {
  const outside = path.join(root, 'outside.sh');
  await writeFile(outside, '#!/bin/sh\necho escaped\n', { mode: 0o755 });
  const repo = await repository({ 'ci/escape.sh': { symlink: outside }, 'ci/notes.txt': 'echo notes\n', 'ci/ok.sh': executable('#!/bin/sh\necho ok\n') });
  for (const [script, code, what] of badScripts) {
    const task = taskFor(repo, script);
    const ran = await runTask(task);
    t.is(ran.outcome.outcome, 'failed', what);
    t.is(ran.outcome.fault, 'request', what);
    t.true(ran.outcome.reason?.startsWith(`${code}: `), `${what}: ${ran.outcome.reason}`);
    t.true(ran.outcome.reason?.includes(script), `${what}: the reason names the script`);
    t.true(ownLines(ran.output).includes(`paddock: ${ran.outcome.reason}`), `${what}: the reason is in the output`);
    t.false(ran.output.includes('escaped'), what);
    assertTokenNotShown(t, ran);
    await assertNothingLeft(t, task);
  }
});

test.serial('checkout() throws CheckoutError with the code, naming the repository, the commit and the script', async (t) => {
  const outside = path.join(root, 'outside-too.sh');
  await writeFile(outside, 'echo\n');
  const repo = await repository({ 'ci/escape.sh': { symlink: outside }, 'ci/inner.sh': { symlink: 'real.sh' }, 'ci/real.sh': 'echo\n' });
  const attempt = (script: string, commit = repo.commit) =>
    checkout({ repository: repo.dir, repositoryRules: localRules(), commit, script }, path.join(root, `checkout-${randomBytes(4).toString('hex')}`));

  const escaped = await t.throwsAsync(attempt('ci/escape.sh'), { instanceOf: CheckoutError });
  t.is(escaped?.code, 'script_outside_repository');
  t.true(escaped?.message.includes(repo.dir) && escaped.message.includes(repo.commit) && escaped.message.includes('ci/escape.sh'), escaped?.message);
  t.is((await t.throwsAsync(attempt('../x'), { instanceOf: CheckoutError }))?.code, 'script_outside_repository');
  t.is((await t.throwsAsync(attempt('/etc/passwd'), { instanceOf: CheckoutError }))?.code, 'script_outside_repository');
  t.is((await t.throwsAsync(attempt('nope.sh'), { instanceOf: CheckoutError }))?.code, 'script_not_found');
  t.is((await t.throwsAsync(attempt('ci/real.sh', 'f'.repeat(40)), { instanceOf: CheckoutError }))?.code, 'commit_not_found');

  const dir = path.join(root, 'checkout-inner');
  const { scriptPath } = await checkout({ repository: repo.dir, repositoryRules: localRules(), commit: repo.commit, script: 'ci/inner.sh' }, dir);
  t.is(scriptPath, path.join(await realpath(dir), 'ci', 'real.sh'), 'a symlink that stays inside resolves to its target');
});

test.serial("a commit the repository does not have fails the run as the request's fault", async (t) => {
  const repo = await repository({ 'ok.sh': executable('#!/bin/sh\necho ok\n') });
  const task = taskFor(repo, 'ok.sh', { commit: 'a'.repeat(40) });
  const ran = await runTask(task);
  t.is(ran.outcome.outcome, 'failed');
  t.is(ran.outcome.fault, 'request');
  t.regex(ran.outcome.reason ?? '', /^commit_not_found: commit a{40} is not in repository /);
  await assertNothingLeft(t, task);
});

test.serial("a repository that does not exist fails the run as the infrastructure's fault", async (t) => {
  const repo = await repository({ 'ok.sh': executable('#!/bin/sh\necho ok\n') });
  const missing = path.join(root, 'no-such-repository');
  const task = taskFor(repo, 'ok.sh', { repository: missing });
  const ran = await runTask(task);
  t.is(ran.outcome.outcome, 'failed');
  t.is(ran.outcome.fault, 'infrastructure');
  t.true(ran.outcome.reason?.startsWith(`repository_unreachable: cannot read repository ${missing}: `), ran.outcome.reason);
  await assertNothingLeft(t, task);
});

test.serial('a credential in the repository URL never shows in the output or the reason', async (t) => {
  const repo = await repository({ 'ok.sh': executable('#!/bin/sh\necho ok\n') });
  const task = taskFor(repo, 'ok.sh', {
    repository: `http://ci:${token}@127.0.0.1:9/group/project.git`,
    repositoryRules: { transports: ['http'], localRoots: [] },
  });
  const ran = await runTask(task);
  t.is(ran.outcome.outcome, 'failed');
  t.true(ran.outcome.reason?.startsWith('repository_unreachable: cannot clone repository http://***@127.0.0.1:9/group/project.git: '), ran.outcome.reason);
  t.false(ran.output.includes(token), ran.output);
  t.false(ran.output.includes(`ci:`), 'the user name is masked too');
});

test.serial('resolveRef gives the commit of a branch, a tag or HEAD, takes a full commit id, and names what is missing', async (t) => {
  const repo = await repository({ 'a.txt': 'a\n' });
  await git(repo.dir, 'tag', '--annotate', 'v1.0', '--message', 'release');
  await git(repo.dir, 'branch', 'release/v1.0');
  await writeFile(path.join(repo.dir, 'a.txt'), 'b\n');
  const second = await repo.commitAll('second');

  t.is(await resolveLocal(repo.dir, 'main'), second);
  t.is(await resolveLocal(repo.dir, 'refs/heads/main'), second);
  t.is(await resolveLocal(repo.dir, 'HEAD'), second);
  t.is(await resolveLocal(repo.dir, 'v1.0'), repo.commit, 'an annotated tag gives the commit, not the tag object');
  t.is(await resolveLocal(repo.dir, 'release/v1.0'), repo.commit);
  t.is(await resolveLocal(repo.dir, repo.commit.toUpperCase()), repo.commit, 'a full commit id is taken as it is');

  const missing = await t.throwsAsync(resolveLocal(repo.dir, 'no-such-branch'), { instanceOf: CheckoutError });
  t.is(missing?.code, 'ref_not_found');
  t.true(missing?.message.includes("'no-such-branch'") && missing.message.includes(repo.dir), missing?.message);
  t.is(
    (await t.throwsAsync(resolveLocal(repo.dir, repo.commit.slice(0, 12)), { instanceOf: CheckoutError }))?.code,
    'ref_not_found',
    'a short commit id is not enough',
  );
  t.is((await t.throwsAsync(resolveLocal(repo.dir, '--upload-pack=touch /tmp/x'), { instanceOf: CheckoutError }))?.code, 'ref_not_found');
  t.is((await t.throwsAsync(resolveLocal(path.join(root, 'nowhere'), 'main'), { instanceOf: CheckoutError }))?.code, 'repository_unreachable');
});

test.serial('a TypeScript script with type-only imports and TS syntax runs under tsx; node_modules/paddock is this Paddock', async (t) => {
  const repo = await repository({
    'ci/types.ts': 'export interface Greeting { text: string }\n',
    'ci/check.ts': `import { readFileSync } from 'node:fs';
import type { RunTask } from 'paddock';
import type { Greeting } from './types.js';

enum Level { Low = 1, High = 2 }
const greeting: Greeting = { text: 'typed hello' };
function shout<T extends { text: string }>(value: T): string {
  return value.text.toUpperCase();
}
const job: RunTask['job'] | undefined = process.env.PADDOCK_JOB;
const manifest = JSON.parse(readFileSync('node_modules/paddock/package.json', 'utf8')) as { name: string };
console.log(shout(greeting), Level.High satisfies number, job, manifest.name);
`,
  });
  const task = taskFor(repo, 'ci/check.ts');
  const ran = await runTask(task);
  t.deepEqual(ran.outcome, { outcome: 'passed', exitCode: 0 }, ran.output);
  t.true(ran.output.includes('TYPED HELLO 2 nightly paddock\n'), ran.output);
  t.is(await realpath(path.join(ran.workDir, 'src', 'node_modules', 'paddock')), await realpath(projectRoot));
  await assertNothingLeft(t, task);
});

test.serial("a repository's own node_modules/paddock is kept", async (t) => {
  const repo = await repository({
    'node_modules/paddock/package.json': JSON.stringify({ name: 'paddock', type: 'module', exports: './index.js' }),
    'node_modules/paddock/index.js': "export const where = 'the repository';\n",
    'ci/which.mjs': "import { where } from 'paddock';\nconsole.log(`paddock from ${where}`);\n",
  });
  const ran = await runTask(taskFor(repo, 'ci/which.mjs'));
  t.deepEqual(ran.outcome, { outcome: 'passed', exitCode: 0 }, ran.output);
  t.true(ran.output.includes('paddock from the repository\n'));
  t.false((await lstat(path.join(ran.workDir, 'src', 'node_modules', 'paddock'))).isSymbolicLink());
});

test.serial('a script whose #! interpreter is missing fails with a reason', async (t) => {
  const repo = await repository({ 'odd.sh': executable('#!/no/such/interpreter\necho never\n') });
  const task = taskFor(repo, 'odd.sh');
  const ran = await runTask(task);
  t.is(ran.outcome.outcome, 'failed');
  t.is(ran.outcome.fault, 'request');
  t.regex(ran.outcome.reason ?? '', /^cannot start script odd\.sh: .*ENOENT.*#! line/);
  await assertNothingLeft(t, task);
});

test.serial('isolated: the time limit kills every process of the run, a setsid one that ignores SIGTERM included', async (t) => {
  const repo = await repository({
    'escape.sh': executable(`#!/bin/sh
trap '' TERM
setsid sh -c 'trap "" TERM; while :; do date +%s%N > "$HOME/alive"; sleep 0.1; done' < /dev/null > /dev/null 2>&1 &
echo started
while :; do sleep 1; done
`),
  });
  const task = taskFor(repo, 'escape.sh', { timeLimitSeconds: 2 });
  const ran = await runTask(task, { killGraceMs: 500 });
  t.deepEqual(ran.outcome, { outcome: 'timed_out', signal: 'SIGKILL' }, ran.output);
  t.deepEqual(ran.left, [], "no process of the run's user is left, the setsid one included");
  const alive = path.join(ran.workDir, 'home', 'alive');
  const before = await readFile(alive, 'utf8');
  await new Promise((resolve) => setTimeout(resolve, 1000));
  t.is(await readFile(alive, 'utf8'), before, 'nothing writes its heartbeat any more');
  await assertNothingLeft(t, task);
});

test.serial(
  "isolated: the script runs as its own user, owns its checkout, sees no process but its own, and cannot read the runner host's files or environment",
  async (t) => {
    // A file only the runner host may read, as its token file is.
    const secretFile = path.join(root, 'runner.token');
    const secret = `pdk_${randomBytes(16).toString('hex')}`;
    await writeFile(secretFile, `${secret}\n`, { mode: 0o600 });
    const repo = await repository({
      'hostile.sh': executable(`#!/bin/sh
echo "uid $(id -u)"
echo "checkout owner $(stat -c %u .)"
echo "processes $(ls /proc | grep -c '^[0-9]')"
echo "parent environment:"; tr '\\0' '\\n' < /proc/$PPID/environ
for environ in /proc/[0-9]*/environ; do tr '\\0' '\\n' < "$environ"; done 2>&1
cat "$PADDOCK_PARAM_SECRET" 2>&1 || echo "token file refused"
# A result that is the runner host's token file, by hard link or by symlink.
ln "$PADDOCK_PARAM_SECRET" "$PADDOCK_RESULT" 2>&1 || ln -s "$PADDOCK_PARAM_SECRET" "$PADDOCK_RESULT"
`),
    });
    const task = taskFor(repo, 'hostile.sh', { parameters: { secret: secretFile } });
    const ran = await runTask(task);
    t.is(ran.outcome.outcome, 'passed', ran.output);
    t.true(ran.output.includes(`uid ${ran.uid}\n`), ran.output);
    t.true(ran.output.includes(`checkout owner ${ran.uid}\n`), ran.output);
    t.true(Number(/processes (\d+)/.exec(ran.output)?.[1]) <= 6, `only the init, the script and its own commands: ${ran.output}`);
    t.true(ran.output.includes('token file refused'), ran.output);
    t.false(ran.output.includes(secret), 'the secret shows nowhere in the output');
    t.false(ran.output.includes('PADDOCK_TEST_HOST_ONLY'), 'no variable of the runner host is seen');
    t.false('result' in ran.outcome, 'the linked token file is not taken as the result');
    t.regex(ran.outcome.reason ?? '', /result file/);
    t.false(JSON.stringify(ran.outcome).includes(secret));
    const objects = await run('find', [path.join(repo.dir, '.git', 'objects'), '-type', 'f', '!', '-uid', '0']);
    t.is(objects.stdout, '', 'the repository cloned from keeps its owner: the checkout shares no file with it');
    await assertNothingLeft(t, task);
  },
);
