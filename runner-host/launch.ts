// How a job script is started, and what "the script and everything it started" means, in the two
// ways a runner host runs scripts:
// - isolated (the default on a runner host): as the run's own unprivileged user, in a PID namespace
//   (and an IPC namespace: no shared memory left for the uid's next run) of its own with a fresh /proc, so the script sees no process but its own, and the run is every
//   process of that namespace, setsid or not: when the namespace's first process (run-init.js)
//   exits, the kernel kills the rest. The chain is
//     setpriv --pdeathsig SIGKILL → unshare --pid --ipc --fork --kill-child --mount-proc
//       → setpriv --reuid --regid --clear-groups --no-new-privs → node run-init.js → the script
//   so the whole run also dies with the runner host (parent-death signals down the chain);
// - single-user (a personal runner host, or `paddock jobs reproduce`): as the caller, in a process
//   group of its own. A process that calls setsid leaves the group and is out of reach.
import { spawn } from 'node:child_process';
import { readdir, readFile, readlink } from 'node:fs/promises';
import path from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';

/** tsx's loader, which runs TypeScript job scripts. */
export const tsxLoader = import.meta.resolve('tsx');
const initScript = path.join(path.dirname(fileURLToPath(import.meta.url)), 'run-init.js');

/** The Unix user a run executes as. */
export interface RunUser {
  uid: number;
  gid: number;
}

export interface ScriptCommand {
  command: string;
  args: string[];
}

export interface ScriptExit {
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  /** The script could not be started (its #! interpreter is missing, say). */
  spawnError?: Error;
}

export interface LaunchedScript {
  stdout: Readable;
  stderr: Readable;
  /** Resolves once the script's own process has ended. Never rejects. */
  exited: Promise<ScriptExit>;
  /** Signals the script and every process it started. */
  signal(signal: 'SIGTERM' | 'SIGKILL'): void;
  /** Whether any of them still runs (zombies do not count). */
  running(): Promise<boolean>;
  /** Called once the script and its processes are stopped: ends whatever holds the run together. */
  close(): Promise<void>;
}

export interface LaunchOptions {
  cwd: string;
  env: Record<string, string>;
  /** Run isolated as this user; without it, single-user in a process group. */
  user?: RunUser;
}

export function launch(command: ScriptCommand, options: LaunchOptions): LaunchedScript {
  return options.user ? launchIsolated(command, options, options.user) : launchInGroup(command, options);
}

function launchInGroup(command: ScriptCommand, options: LaunchOptions): LaunchedScript {
  const child = spawn(command.command, command.args, { cwd: options.cwd, env: options.env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise<ScriptExit>((resolve) => {
    child.once('error', (error) => resolve({ exitCode: null, signal: null, spawnError: error }));
    child.once('exit', (exitCode, signal) => resolve({ exitCode, signal }));
  });
  const pgid = child.pid;
  return {
    stdout: child.stdout,
    stderr: child.stderr,
    exited,
    signal: (signal) => void (pgid !== undefined && signalGroup(pgid, signal)),
    running: async () => pgid !== undefined && (await groupRunning(pgid)),
    close: async () => undefined,
  };
}

/** The command line that starts `command` isolated as `user` (see the top of this file). */
export function isolatedCommand(command: ScriptCommand, user: RunUser): ScriptCommand {
  return {
    command: 'setpriv',
    args: [
      '--pdeathsig',
      'SIGKILL',
      '--',
      'unshare',
      '--pid',
      '--ipc',
      '--fork',
      '--kill-child=SIGKILL',
      '--mount-proc',
      '--',
      'setpriv',
      `--reuid=${user.uid}`,
      `--regid=${user.gid}`,
      '--clear-groups',
      '--no-new-privs',
      '--',
      process.execPath,
      initScript,
      command.command,
      ...command.args,
    ],
  };
}

function launchIsolated(command: ScriptCommand, options: LaunchOptions, user: RunUser): LaunchedScript {
  const chain = isolatedCommand(command, user);
  const child = spawn(chain.command, chain.args, { cwd: options.cwd, env: options.env, detached: true, stdio: ['pipe', 'pipe', 'pipe', 'pipe'] });
  // The first status line says the init runs, so the namespace exists: only then is it looked up.
  // Never before: until unshare has made it, its pid_for_children is the runner host's own.
  let namespace: string | undefined;
  /** Set once the script started: its PID namespace, looked up (a signal sent meanwhile waits for it). */
  let namespaceFound: Promise<string | undefined> | undefined;
  let childExited = false;
  const exited = new Promise<ScriptExit>((resolve) => {
    let text = '';
    (child.stdio[3] as Readable).on('data', (chunk: Buffer) => {
      text += chunk.toString('utf8');
      for (let end = text.indexOf('\n'); end >= 0; end = text.indexOf('\n')) {
        const line = text.slice(0, end);
        text = text.slice(end + 1);
        const status = parseStatus(line);
        if (status === 'started') namespaceFound = findNamespace(child.pid).then((found) => (namespace = found));
        else if (status) resolve(status);
      }
    });
    child.once('error', (error) => resolve({ exitCode: null, signal: null, spawnError: error }));
    child.once('exit', (exitCode, signal) => {
      childExited = true;
      resolve({ exitCode, signal });
    });
  });
  (child.stdin as Writable).on('error', () => undefined);
  const killChain = () => {
    try {
      if (!childExited && child.pid !== undefined) process.kill(child.pid, 'SIGKILL');
    } catch {
      // gone already
    }
  };
  return {
    stdout: child.stdout!,
    stderr: child.stderr!,
    exited,
    signal: (signal) => {
      // A stop asked for right after the script started (its first output) must not be lost while
      // its namespace is still being looked up: it waits for the lookup.
      const members = (found: string | undefined) => {
        if (found) void namespaceMembers(found, child.pid).then((pids) => pids.forEach((pid) => signalProcess(pid, signal)));
        else if (signal === 'SIGKILL') killChain();
      };
      if (namespace !== undefined || namespaceFound === undefined) members(namespace);
      else void namespaceFound.then(members);
    },
    running: async () => !childExited && (namespace === undefined || (await namespaceMembers(namespace, child.pid)).length > 0),
    close: async () => {
      if (childExited) return;
      const gone = new Promise((resolve) => child.once('exit', resolve));
      child.stdin!.end();
      const timer = setTimeout(killChain, 5000);
      await gone;
      clearTimeout(timer);
    },
  };
}

/** A status line of run-init.js: 'started', how the script ended, or undefined for anything else. */
function parseStatus(line: string): ScriptExit | 'started' | undefined {
  let value: { started?: unknown; exitCode?: unknown; signal?: unknown; spawnError?: unknown };
  try {
    value = JSON.parse(line) as typeof value;
  } catch {
    return undefined;
  }
  if (value.started === true) return 'started';
  if (typeof value.spawnError === 'string') return { exitCode: null, signal: null, spawnError: new Error(value.spawnError) };
  const exitCode = typeof value.exitCode === 'number' ? value.exitCode : null;
  const signal = typeof value.signal === 'string' ? (value.signal as NodeJS.Signals) : null;
  return exitCode === null && signal === null ? undefined : { exitCode, signal };
}

/** The PID namespace unshare (pid) made for its child, unless it is still the runner host's own. */
async function findNamespace(pid: number | undefined): Promise<string | undefined> {
  if (pid === undefined) return undefined;
  const [made, own] = await Promise.all([readlink(`/proc/${pid}/ns/pid_for_children`).catch(() => undefined), readlink('/proc/self/ns/pid')]);
  return made !== own ? made : undefined;
}

/** The running processes of a namespace, except its init (the child of `unsharePid`). */
async function namespaceMembers(namespace: string, unsharePid: number | undefined): Promise<number[]> {
  const processes = await processTable(async (pid) => (await readlink(`/proc/${pid}/ns/pid`).catch(() => '')) === namespace);
  return processes.filter((entry) => entry.ppid !== unsharePid).map((entry) => entry.pid);
}

interface ProcessEntry {
  pid: number;
  ppid: number;
  pgid: number;
}

/**
 * The processes that still run (zombies do not count: where nothing reaps orphans, as in a
 * container whose init does not wait, they stay forever) and pass `keep`.
 */
async function processTable(keep: (pid: number) => Promise<boolean> | boolean): Promise<ProcessEntry[]> {
  const pids = (await readdir('/proc').catch(() => [] as string[])).filter((entry) => /^\d+$/.test(entry)).map(Number);
  const entries = await Promise.all(
    pids.map(async (pid): Promise<ProcessEntry | undefined> => {
      if (!(await keep(pid))) return undefined;
      const line = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
      // pid (comm) state ppid pgrp …; comm may hold spaces and parentheses, so split after the last ')'.
      const [state, ppid, pgid] = line.slice(line.lastIndexOf(')') + 2).split(' ');
      if (!line || state === 'Z' || state === 'X') return undefined;
      return { pid, ppid: Number(ppid), pgid: Number(pgid) };
    }),
  );
  return entries.filter((entry) => entry !== undefined);
}

/** The running processes of a Unix user (any of its real, effective, saved or file-system uids). */
export async function processesOf(uid: number): Promise<number[]> {
  const owned = async (pid: number) => {
    const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
    return (/^Uid:\s+(.*)$/m.exec(status)?.[1] ?? '').split(/\s+/).map(Number).includes(uid);
  };
  return (await processTable(owned)).map((entry) => entry.pid);
}

function signalProcess(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // gone meanwhile
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

/** Whether a process group has a process that still runs. */
async function groupRunning(pgid: number): Promise<boolean> {
  if (!signalGroup(pgid, 0)) return false;
  if ((await readdir('/proc').catch(() => undefined)) === undefined) return true; // no /proc: the signal's answer is all there is
  return (await processTable(() => true)).some((entry) => entry.pgid === pgid);
}
