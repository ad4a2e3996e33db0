// Runs one job script run from start to end: a fresh work directory, a checkout of the run's
// exact commit, the script started in its own process group with only the environment the
// protocol promises, its output passed on as it comes, the time limit and cancellation enforced
// on the whole group (SIGTERM, then SIGKILL after a grace period), no process left behind once the
// script ends, and the result file read back. Every way a run can end becomes an outcome rather
// than an exception, so the runner host always has something to report. The same function serves
// a local "reproduce this run" command: it only needs a task, an API URL and a token.
import { spawn } from 'node:child_process';
import { constants } from 'node:fs';
import { lstat, mkdir, open, readdir, readFile, stat, symlink } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { checkout, CheckoutError, displayRepository } from './checkout.js';
import { scriptEnvironment, type RunFinish, type RunTask } from './protocol.js';

/** How a run ended, as execute() sees it; the runner host adds its own name to report it. */
export type RunOutcome = Omit<RunFinish, 'runner'>;

export interface ExecuteOptions {
  task: RunTask;
  /** The API's URL as the script should reach it (PADDOCK_URL). */
  url: string;
  /** A path that does not exist yet; execute() makes it and leaves it for the caller to remove. */
  workDir: string;
  /** The script's stdout and stderr, merged, and Paddock's own `paddock: …` lines. */
  onOutput(chunk: Buffer): void;
  /** Aborting cancels the run. */
  signal: AbortSignal;
  /** Between SIGTERM and SIGKILL when a script is stopped; 5000 unless given. */
  killGraceMs?: number;
}

/** The folder holding Paddock's package.json: a script's `import … from 'paddock'` resolves here. */
export const projectRoot = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
/** The largest result file kept. */
export const resultLimitBytes = 1024 * 1024;
/** Scripts with these extensions run under Node with tsx's loader; the rest run as executables. */
export const nodeScriptExtensions: readonly string[] = ['.ts', '.mts', '.cts', '.js', '.mjs', '.cjs'];

const tsxLoader = import.meta.resolve('tsx');
/** setTimeout's longest delay; a longer time limit would fire at once. */
const longestTimerMs = 2 ** 31 - 1;

export class ScriptNotExecutableError extends Error {
  override readonly name = 'ScriptNotExecutableError';
  readonly code = 'script_not_executable';
}

export interface ScriptCommand {
  command: string;
  args: string[];
}

/**
 * How a script is started: TypeScript and JavaScript under this Node with tsx's loader, anything
 * else directly (its `#!` line picks the interpreter), which needs an executable bit.
 * `name` is how errors call the script (its path in the repository). Throws ScriptNotExecutableError.
 */
export async function scriptCommand(scriptPath: string, name = scriptPath): Promise<ScriptCommand> {
  if (nodeScriptExtensions.includes(path.extname(scriptPath))) return { command: process.execPath, args: ['--import', tsxLoader, scriptPath] };
  if (((await stat(scriptPath)).mode & 0o111) === 0) {
    throw new ScriptNotExecutableError(`script '${name}' is not executable: give it a #! line and mode 755 (git update-index --chmod=+x), or a .ts/.js extension to run it with Node`);
  }
  return { command: scriptPath, args: [] };
}

/** Checks out the run's commit, runs its script and resolves with how it ended. Never rejects. */
export async function execute(options: ExecuteOptions): Promise<RunOutcome> {
  const output = new OutputWriter(options.onOutput, options.task.token);
  try {
    return await executeRun(options, output);
  } catch (error) {
    return failed(output, `the runner host failed to run the script: ${(error as Error).message}`, 'infrastructure');
  }
}

interface RunPaths {
  /** The checkout, and the script's working directory. */
  source: string;
  home: string;
  resultFile: string;
}

async function executeRun(options: ExecuteOptions, output: OutputWriter): Promise<RunOutcome> {
  const { task, signal } = options;
  const paths: RunPaths = { source: path.join(options.workDir, 'src'), home: path.join(options.workDir, 'home'), resultFile: path.join(options.workDir, 'result.json') };
  const prepared = await prepare(options, paths, output);
  if ('outcome' in prepared) return prepared;
  const { scriptPath, command } = prepared;

  const env: Record<string, string> = {
    PATH: process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin',
    HOME: paths.home,
    LANG: 'C.UTF-8',
    ...scriptEnvironment(task, options.url, paths.resultFile),
  };
  output.say(`running ${task.script} with a time limit of ${task.timeLimitSeconds}s`);
  const started = Date.now();
  const end = await runScript(command, { cwd: paths.source, env, timeLimitSeconds: task.timeLimitSeconds, killGraceMs: options.killGraceMs ?? 5000, signal, output });
  const seconds = ((Date.now() - started) / 1000).toFixed(1);

  if (end.spawnError) {
    const direct = command.command === scriptPath;
    return failed(output, `cannot start script ${task.script}: ${end.spawnError.message}${direct ? ' (is the interpreter on its #! line installed?)' : ''}`, direct ? 'request' : 'infrastructure');
  }
  const outcome: RunOutcome = { outcome: end.stopped ?? (end.exitCode === 0 ? 'passed' : 'failed') };
  if (end.exitCode !== null) outcome.exitCode = end.exitCode;
  if (end.signal !== null) outcome.signal = end.signal;
  output.say(end.signal !== null ? `the script was killed by ${end.signal} after ${seconds}s` : `the script exited with code ${end.exitCode} after ${seconds}s`);

  const { result, note } = await readResult(paths.resultFile);
  if (result !== undefined) outcome.result = result;
  if (note) {
    output.say(note);
    outcome.reason = note;
  }
  return outcome;
}

/**
 * Everything before the script starts: the work directory, the checkout, the client library link
 * and how to start the script. Resolves with the outcome instead when the run ends here.
 */
async function prepare(options: ExecuteOptions, paths: RunPaths, output: OutputWriter): Promise<RunOutcome | { scriptPath: string; command: ScriptCommand }> {
  const { task, workDir, signal } = options;
  const cancelledBeforeStart = (): RunOutcome => {
    output.say('the run was cancelled before the script started');
    return { outcome: 'cancelled' };
  };
  try {
    await mkdir(path.dirname(workDir), { recursive: true });
    await mkdir(workDir);
    await mkdir(paths.home);
  } catch (error) {
    return failed(output, `cannot make the run's work directory ${workDir}: ${(error as Error).message}`, 'infrastructure');
  }
  if (signal.aborted) return cancelledBeforeStart();

  output.say(`checking out ${displayRepository(task.repository)} at ${task.commit} (${task.ref})`);
  let scriptPath: string;
  try {
    ({ scriptPath } = await checkout(task, paths.source, signal));
  } catch (error) {
    if (signal.aborted) return cancelledBeforeStart();
    if (error instanceof CheckoutError) return failed(output, `${error.code}: ${error.message}`, error.code === 'repository_unreachable' ? 'infrastructure' : 'request');
    return failed(output, `checkout of ${displayRepository(task.repository)} failed: ${(error as Error).message}`, 'infrastructure');
  }
  await linkClientLibrary(paths.source);

  let command: ScriptCommand;
  try {
    command = await scriptCommand(scriptPath, task.script);
  } catch (error) {
    if (error instanceof ScriptNotExecutableError) return failed(output, `${error.code}: ${error.message}`, 'request');
    throw error;
  }
  if (signal.aborted) return cancelledBeforeStart();
  return { scriptPath, command };
}

/** A run that ended without its script deciding: the reason goes to the output and the outcome. */
function failed(output: OutputWriter, reason: string, fault: 'infrastructure' | 'request'): RunOutcome {
  output.say(reason);
  return { outcome: 'failed', reason: output.redact(reason), fault };
}

/**
 * Makes `node_modules/paddock` in the checkout point at this Paddock, so a job script can import
 * the client library without installing it. A repository with its own node_modules/paddock (or a
 * node_modules that is not a plain folder) keeps what it has.
 */
async function linkClientLibrary(source: string): Promise<void> {
  const modules = path.join(source, 'node_modules');
  const link = path.join(modules, 'paddock');
  const existing = await lstat(modules).catch(() => undefined);
  if (existing && !existing.isDirectory()) return;
  if (await lstat(link).then(() => true, () => false)) return;
  await mkdir(modules, { recursive: true });
  await symlink(projectRoot, link, 'dir');
}

interface ScriptEnd {
  /** Set when Paddock stopped the script, whatever its exit status says. */
  stopped?: 'timed_out' | 'cancelled';
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  spawnError?: Error;
}

interface RunScriptOptions {
  cwd: string;
  env: Record<string, string>;
  timeLimitSeconds: number;
  killGraceMs: number;
  signal: AbortSignal;
  output: OutputWriter;
}

/**
 * Starts the script as the leader of a new process group and resolves once it has exited, the
 * rest of its group is gone and its output is read. The time limit and an abort stop the whole
 * group: SIGTERM, then SIGKILL after the grace period. The time limit counts from the script's
 * start; the checkout before it has git's own timeouts (checkout.ts).
 */
function runScript(command: ScriptCommand, options: RunScriptOptions): Promise<ScriptEnd> {
  const { output, killGraceMs } = options;
  return new Promise((resolve) => {
    const child = spawn(command.command, command.args, { cwd: options.cwd, env: options.env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    let stopped: ScriptEnd['stopped'];
    let stopDeadline = 0;
    let killTimer: NodeJS.Timeout | undefined;
    let settled = false;

    const stop = (why: 'timed_out' | 'cancelled', line: string) => {
      if (stopped || settled || child.pid === undefined) return;
      stopped = why;
      output.say(line);
      stopDeadline = Date.now() + killGraceMs;
      signalGroup(child.pid, 'SIGTERM');
      const pid = child.pid;
      killTimer = setTimeout(() => signalGroup(pid, 'SIGKILL'), killGraceMs);
    };
    const limitTimer = setTimeout(
      () => stop('timed_out', `time limit of ${options.timeLimitSeconds}s reached, stopping the script`),
      Math.min(longestTimerMs, Math.max(0, options.timeLimitSeconds * 1000)),
    );
    const onAbort = () => stop('cancelled', 'the run was cancelled, stopping the script');
    options.signal.addEventListener('abort', onAbort, { once: true });
    if (options.signal.aborted) onAbort();

    const streamsClosed = Promise.all([child.stdout, child.stderr].map((stream) => new Promise<void>((done) => {
      stream.on('data', (chunk: Buffer) => output.write(chunk));
      stream.once('close', done);
    })));

    const finish = async (end: ScriptEnd) => {
      if (settled) return;
      settled = true;
      clearTimeout(limitTimer);
      options.signal.removeEventListener('abort', onAbort);
      try {
        if (child.pid !== undefined) await endGroup(child.pid, stopped ? stopDeadline : undefined, killGraceMs, output);
        // Whatever still holds the pipes left the group (setsid): stop waiting for it after a moment.
        let timer: NodeJS.Timeout | undefined;
        const closed = await Promise.race([streamsClosed.then(() => true), new Promise<boolean>((done) => (timer = setTimeout(() => done(false), 2000)))]);
        clearTimeout(timer);
        if (!closed) {
          child.stdout.destroy();
          child.stderr.destroy();
        }
      } finally {
        clearTimeout(killTimer);
        resolve({ ...end, stopped });
      }
    };
    child.once('error', (error) => void finish({ exitCode: null, signal: null, spawnError: error }));
    child.once('exit', (exitCode, signal) => void finish({ exitCode, signal }));
  });
}

/**
 * After the script's main process exited: stops what is left of its process group (background
 * children), SIGTERM first and SIGKILL at `deadline` (or a grace period from now).
 */
async function endGroup(pgid: number, deadline: number | undefined, graceMs: number, output: OutputWriter): Promise<void> {
  if (!(await groupRunning(pgid))) return;
  if (deadline === undefined) {
    output.say('stopping the processes the script left running');
    signalGroup(pgid, 'SIGTERM');
    deadline = Date.now() + graceMs;
  }
  while (await groupRunning(pgid)) {
    if (Date.now() >= deadline) {
      signalGroup(pgid, 'SIGKILL');
      // SIGKILL cannot be ignored; wait a little for the kernel to finish them.
      for (let tries = 0; tries < 20 && (await groupRunning(pgid)); tries += 1) await delay(50);
      return;
    }
    await delay(50);
  }
}

/** Sends a signal to every process of a group; false when the group has no process left. */
function signalGroup(pgid: number, signal: NodeJS.Signals | 0): boolean {
  try {
    process.kill(-pgid, signal);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code !== 'ESRCH';
  }
}

/**
 * Whether a process group has a process that still runs. Zombies do not count: where nothing
 * reaps orphans (a container whose init does not wait), they stay in the group forever.
 */
async function groupRunning(pgid: number): Promise<boolean> {
  if (!signalGroup(pgid, 0)) return false;
  let entries: string[];
  try {
    entries = await readdir('/proc');
  } catch {
    return true; // no /proc: the signal's answer is all there is
  }
  const lines = await Promise.all(entries.filter((entry) => /^\d+$/.test(entry)).map((entry) => readFile(`/proc/${entry}/stat`, 'utf8').catch(() => '')));
  return lines.some((line) => {
    // pid (comm) state ppid pgrp …; comm may hold spaces and parentheses, so split after the last ')'.
    const [state, , group] = line.slice(line.lastIndexOf(')') + 2).split(' ');
    return Number(group) === pgid && state !== 'Z' && state !== 'X';
  });
}

/**
 * What the script left in the result file: JSON if it parses, else the text. The file is opened
 * without following a symlink and without blocking (a FIFO would hang a plain read), and only a
 * regular file of at most resultLimitBytes is kept; otherwise `note` says why there is no result.
 */
async function readResult(file: string): Promise<{ result?: unknown; note?: string }> {
  let handle;
  try {
    handle = await open(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return {};
    return { note: `the result file ($PADDOCK_RESULT) could not be read (${code === 'ELOOP' ? 'it is a symlink' : code}); no result kept` };
  }
  try {
    const info = await handle.stat();
    if (!info.isFile()) return { note: 'the result file ($PADDOCK_RESULT) is not a regular file; no result kept' };
    const buffer = Buffer.alloc(resultLimitBytes + 1);
    let length = 0;
    while (length < buffer.length) {
      const { bytesRead } = await handle.read(buffer, length, buffer.length - length, length);
      if (bytesRead === 0) break;
      length += bytesRead;
    }
    if (length > resultLimitBytes) return { note: `the result file ($PADDOCK_RESULT) is over the ${resultLimitBytes / 1024 / 1024} MiB limit; no result kept` };
    const text = buffer.subarray(0, length).toString('utf8');
    try {
      return { result: JSON.parse(text) as unknown };
    } catch {
      return { result: text };
    }
  } finally {
    await handle.close();
  }
}

/**
 * The run's output: the script's bytes as they come, and Paddock's own lines, each on a line of
 * its own and never showing the run's token.
 */
class OutputWriter {
  private atLineStart = true;

  constructor(
    private readonly onOutput: (chunk: Buffer) => void,
    private readonly token: string,
  ) {}

  write(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.atLineStart = chunk[chunk.length - 1] === 0x0a;
    this.onOutput(chunk);
  }

  say(line: string): void {
    this.write(Buffer.from(`${this.atLineStart ? '' : '\n'}paddock: ${this.redact(line)}\n`));
  }

  redact(text: string): string {
    return this.token.length >= 8 ? text.replaceAll(this.token, '***') : text;
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
