// Runs one job script run from start to end: a fresh work directory, a checkout of the run's
// exact commit (made by the runner host, which alone sees the repository's credentials), the
// script started with only the environment the protocol promises — isolated as the run's own
// user in a PID namespace of its own when a user is given (launch.ts), else in a process group —
// its output passed on as it comes, the time limit and cancellation enforced on all its processes
// (SIGTERM, then SIGKILL after a grace period), no process left behind once the script ends, and
// the result file read back. Every way a run can end becomes an outcome rather than an exception,
// so the runner host always has something to report. The same function serves a local "reproduce
// this run" command: it only needs a task, an API URL and a token.
import { setTimeout as sleep } from 'node:timers/promises';
import { constants } from 'node:fs';
import { chmod, lchown, lstat, mkdir, open, readdir, stat, symlink } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { checkout, CheckoutError, displayRepository } from './checkout.js';
import { launch, tsxLoader, type LaunchedScript, type RunUser, type ScriptCommand, type ScriptExit } from './launch.js';
import { scriptEnvironment, type RunFinish, type RunTask } from '../protocol/runner.js';

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
  /**
   * Run the script isolated as this user (held for this run alone: see run-users.ts), which then
   * owns the work directory; without it the script runs as the caller, isolated from nothing.
   */
  user?: RunUser;
}

/** The folder holding Paddock's package.json: a script's `import … from 'paddock'` resolves here. */
const here = path.dirname(fileURLToPath(import.meta.url));
// runner-host/ in the sources, or dist/runner-host/ when run compiled (bin/paddock.js).
export const projectRoot = path.basename(path.dirname(here)) === 'dist' ? path.dirname(path.dirname(here)) : path.dirname(here);
/** The largest result file kept. */
export const resultLimitBytes = 1024 * 1024;
/** Scripts with these extensions run under Node with tsx's loader; the rest run as executables. */
export const nodeScriptExtensions: readonly string[] = ['.ts', '.mts', '.cts', '.js', '.mjs', '.cjs'];

/** setTimeout's longest delay; a longer time limit would fire at once. */
const longestTimerMs = 2 ** 31 - 1;

export class ScriptNotExecutableError extends Error {
  override readonly name = 'ScriptNotExecutableError';
  readonly code = 'script_not_executable';
}

/**
 * How a script is started: TypeScript and JavaScript under this Node with tsx's loader, anything
 * else directly (its `#!` line picks the interpreter), which needs an executable bit.
 * `name` is how errors call the script (its path in the repository). Throws ScriptNotExecutableError.
 */
export async function scriptCommand(scriptPath: string, name = scriptPath): Promise<ScriptCommand> {
  if (nodeScriptExtensions.includes(path.extname(scriptPath))) return { command: process.execPath, args: ['--import', tsxLoader, scriptPath] };
  if (((await stat(scriptPath)).mode & 0o111) === 0) {
    throw new ScriptNotExecutableError(
      `script '${name}' is not executable: give it a #! line and mode 755 (git update-index --chmod=+x), or a .ts/.js extension to run it with Node`,
    );
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
  /** TMPDIR: the run's own, not the machine's shared /tmp. */
  temp: string;
  resultFile: string;
}

async function executeRun(options: ExecuteOptions, output: OutputWriter): Promise<RunOutcome> {
  const { task, signal } = options;
  const inWork = (name: string) => path.join(options.workDir, name);
  const paths: RunPaths = { source: inWork('src'), home: inWork('home'), temp: inWork('tmp'), resultFile: inWork('result.json') };
  const prepared = await prepare(options, paths, output);
  if ('outcome' in prepared) return prepared;
  const { scriptPath, command } = prepared;

  const env: Record<string, string> = {
    PATH: process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin',
    HOME: paths.home,
    TMPDIR: paths.temp,
    LANG: 'C.UTF-8',
    ...scriptEnvironment(task, options.url, paths.resultFile),
  };
  output.say(`running ${task.script} with a time limit of ${task.timeLimitSeconds}s`);
  const started = Date.now();
  const end = await runScript(command, {
    cwd: paths.source,
    env,
    user: options.user,
    timeLimitSeconds: task.timeLimitSeconds,
    killGraceMs: options.killGraceMs ?? 5000,
    signal,
    output,
  });
  const seconds = ((Date.now() - started) / 1000).toFixed(1);

  if (end.spawnError) {
    const direct = command.command === scriptPath;
    return failed(
      output,
      `cannot start script ${task.script}: ${end.spawnError.message}${direct ? ' (is the interpreter on its #! line installed?)' : ''}`,
      direct ? 'request' : 'infrastructure',
    );
  }
  const outcome: RunOutcome = { outcome: end.stopped ?? (end.exitCode === 0 ? 'passed' : 'failed') };
  if (end.exitCode !== null) outcome.exitCode = end.exitCode;
  if (end.signal !== null) outcome.signal = end.signal;
  output.say(
    end.signal !== null ? `the script was killed by ${end.signal} after ${seconds}s` : `the script exited with code ${end.exitCode} after ${seconds}s`,
  );

  const { result, note } = await readResult(paths.resultFile, options.user?.uid ?? process.getuid?.());
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
    // Until handed to the run's user, only the runner host may look in: the checkout is its own.
    await mkdir(workDir, { mode: 0o700 });
    await mkdir(paths.home, { mode: 0o700 });
    await mkdir(paths.temp, { mode: 0o700 });
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
    if (error instanceof CheckoutError)
      return failed(output, `${error.code}: ${error.message}`, error.code === 'repository_unreachable' ? 'infrastructure' : 'request');
    return failed(output, `checkout of ${displayRepository(task.repository)} failed: ${(error as Error).message}`, 'infrastructure');
  }
  await linkClientLibrary(paths.source);
  if (options.user) await handOver(workDir, options.user);

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
  if (
    await lstat(link).then(
      () => true,
      () => false,
    )
  )
    return;
  await mkdir(modules, { recursive: true });
  await symlink(projectRoot, link, 'dir');
}

/**
 * Gives the work directory and everything in it to the run's user, and keeps everyone else out
 * (other runs included). lchown: a symlink in the checkout is given away itself, never its target.
 */
async function handOver(workDir: string, user: RunUser): Promise<void> {
  const walk = async (target: string): Promise<void> => {
    await lchown(target, user.uid, user.gid);
    const entries = await readdir(target, { withFileTypes: true });
    await Promise.all(
      entries.map((entry) => (entry.isDirectory() ? walk(path.join(target, entry.name)) : lchown(path.join(target, entry.name), user.uid, user.gid))),
    );
  };
  await walk(workDir);
  await chmod(workDir, 0o700);
}

interface ScriptEnd extends ScriptExit {
  /** Set when Paddock stopped the script, whatever its exit status says. */
  stopped?: 'timed_out' | 'cancelled';
}

interface RunScriptOptions {
  cwd: string;
  env: Record<string, string>;
  user?: RunUser;
  timeLimitSeconds: number;
  killGraceMs: number;
  signal: AbortSignal;
  output: OutputWriter;
}

/**
 * Starts the script (launch.ts) and resolves once it has exited, every process it started is gone
 * and its output is read. The time limit and an abort stop all of them: SIGTERM, then SIGKILL
 * after the grace period. The time limit counts from the script's start; the checkout before it
 * has git's own timeouts (checkout.ts).
 */
async function runScript(command: ScriptCommand, options: RunScriptOptions): Promise<ScriptEnd> {
  const { output, killGraceMs } = options;
  const script = launch(command, { cwd: options.cwd, env: options.env, user: options.user });
  let stopped: ScriptEnd['stopped'];
  let stopDeadline = 0;
  let killTimer: NodeJS.Timeout | undefined;
  let exited = false;

  const stop = (why: 'timed_out' | 'cancelled', line: string) => {
    if (stopped || exited) return;
    stopped = why;
    output.say(line);
    stopDeadline = Date.now() + killGraceMs;
    script.signal('SIGTERM');
    killTimer = setTimeout(() => script.signal('SIGKILL'), killGraceMs);
  };
  const limitTimer = setTimeout(
    () => stop('timed_out', `time limit of ${options.timeLimitSeconds}s reached, stopping the script`),
    Math.min(longestTimerMs, Math.max(0, options.timeLimitSeconds * 1000)),
  );
  const onAbort = () => stop('cancelled', 'the run was cancelled, stopping the script');
  options.signal.addEventListener('abort', onAbort, { once: true });
  if (options.signal.aborted) onAbort();

  const streamsClosed = Promise.all(
    [script.stdout, script.stderr].map(
      (stream) =>
        new Promise<void>((done) => {
          stream.on('data', (chunk: Buffer) => output.write(chunk));
          stream.once('close', done);
        }),
    ),
  );

  const end = await script.exited;
  exited = true;
  clearTimeout(limitTimer);
  options.signal.removeEventListener('abort', onAbort);
  try {
    await endRest(script, stopped ? stopDeadline : undefined, killGraceMs, output);
    await script.close();
    // Whatever still holds the pipes is out of reach (single-user: it called setsid): stop waiting for it after a moment.
    let timer: NodeJS.Timeout | undefined;
    const closed = await Promise.race([streamsClosed.then(() => true), new Promise<boolean>((done) => (timer = setTimeout(() => done(false), 2000)))]);
    clearTimeout(timer);
    if (!closed) {
      script.stdout.destroy();
      script.stderr.destroy();
    }
  } finally {
    clearTimeout(killTimer);
  }
  return { ...end, stopped };
}

/**
 * After the script's main process exited: stops what it left running (background children),
 * SIGTERM first and SIGKILL at `deadline` (or a grace period from now).
 */
async function endRest(script: LaunchedScript, deadline: number | undefined, graceMs: number, output: OutputWriter): Promise<void> {
  if (!(await script.running())) return;
  if (deadline === undefined) {
    output.say('stopping the processes the script left running');
    script.signal('SIGTERM');
    deadline = Date.now() + graceMs;
  }
  while (await script.running()) {
    if (Date.now() >= deadline) {
      script.signal('SIGKILL');
      // SIGKILL cannot be ignored; wait a little for the kernel to finish them.
      for (let tries = 0; tries < 20 && (await script.running()); tries += 1) await delay(50);
      return;
    }
    await delay(50);
  }
}

/**
 * What the script left in the result file: JSON if it parses, else the text. The file is opened
 * without following a symlink and without blocking (a FIFO would hang a plain read), and only a
 * regular file of at most resultLimitBytes, owned by the run's user (`owner`) and with no other
 * name, is kept: a hard link to a file of the runner host's (its token file) is refused. Otherwise
 * `note` says why there is no result.
 */
async function readResult(file: string, owner: number | undefined): Promise<{ result?: unknown; note?: string }> {
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
    if ((owner !== undefined && info.uid !== owner) || info.nlink !== 1)
      return { note: 'the result file ($PADDOCK_RESULT) is not a file the script made (another owner, or a hard link); no result kept' };
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
  return sleep(ms);
}
