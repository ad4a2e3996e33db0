// The Unix users isolated runs execute as: uids from a range the admin sets aside (`--run-uids`,
// with no other use on the machine; a uid /etc/passwd or a gid /etc/group names is skipped; the
// gid is the uid's number), each held by one run at a
// time machine-wide, so that two runs never share a uid even across runner hosts on one machine.
// A uid is held through a directory under lockRoot (mkdir is atomic) naming the runner host's
// process; a lock whose process is gone was left by a runner host that died, and is taken over.
// Before a uid is handed out and when it is given back, every process it still has is killed and
// the files it left in the shared temp folders removed, so nothing passes from one run to the next.
// Whether this machine can isolate runs at all is checked once at start (checkIsolation).
import { setTimeout as sleep } from 'node:timers/promises';
import { spawn } from 'node:child_process';
import { lstat, mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { isolatedCommand, processesOf, type RunUser } from './launch.js';

export const defaultRunUids = '61000-61999';
export const defaultLockRoot = '/run/paddock-runner/uids';
/** Shared folders where a run may leave files for whoever gets its uid next. */
const sharedTempFolders = ['/tmp', '/var/tmp', '/dev/shm', '/run/lock'];

export class IsolationError extends Error {
  override readonly name = 'IsolationError';
}

export interface HeldRunUser extends RunUser {
  /** Kills what the user still runs, removes its temp files, and frees the uid. */
  release(): Promise<void>;
}

export class RunUsers {
  private next = 0;

  constructor(
    readonly first: number,
    readonly last: number,
    private readonly lockRoot = defaultLockRoot,
  ) {}

  /** `FIRST-LAST`, both uids above 0. Throws IsolationError. */
  static parse(range: string, lockRoot?: string): RunUsers {
    const match = /^(\d+)-(\d+)$/.exec(range.trim());
    const [first, last] = match ? [Number(match[1]), Number(match[2])] : [0, -1];
    if (!match || first < 1 || last < first || last > 2 ** 32 - 2)
      throw new IsolationError(`--run-uids takes FIRST-LAST, two uids above 0 with FIRST <= LAST, not '${range}'`);
    return new RunUsers(first, last, lockRoot);
  }

  get size(): number {
    return this.last - this.first + 1;
  }

  /** A uid of the range no run holds, held for this run until release(). Throws IsolationError when all are taken. */
  async acquire(): Promise<HeldRunUser> {
    await this.prepareLockRoot();
    const named = await namedIds();
    for (let tried = 0; tried < this.size; tried += 1) {
      const uid = this.first + ((this.next + tried) % this.size);
      if (named.has(uid) || !(await this.lock(uid))) continue;
      this.next = (uid - this.first + 1) % this.size;
      await clearUser(uid);
      return { uid, gid: uid, release: () => this.release(uid) };
    }
    throw new IsolationError(
      `no free run user: every uid of ${this.first}-${this.last} is held by a run (or named in /etc/passwd or /etc/group); give --run-uids a larger range`,
    );
  }

  private async release(uid: number): Promise<void> {
    await clearUser(uid);
    await rm(this.lockDir(uid), { recursive: true, force: true });
  }

  private lockDir(uid: number): string {
    return path.join(this.lockRoot, String(uid));
  }

  /** Takes the uid's lock: fresh, or from a runner host that is gone. */
  private async lock(uid: number): Promise<boolean> {
    const dir = this.lockDir(uid);
    try {
      await mkdir(dir, { mode: 0o700 });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      const owner = await readFile(path.join(dir, 'owner'), 'utf8').catch(() => '');
      // No owner file yet: another runner host is between its mkdir and its write; leave it alone.
      if (owner === '' || (await processAlive(owner))) return false;
      await rm(dir, { recursive: true, force: true });
      return this.lock(uid);
    }
    await writeFile(path.join(dir, 'owner'), await processIdentity(process.pid));
    return true;
  }

  /** The lock folder exists, and only this (root) user can make or remove locks in it. */
  private async prepareLockRoot(): Promise<void> {
    await mkdir(this.lockRoot, { recursive: true, mode: 0o700 });
    const info = await lstat(this.lockRoot);
    if (!info.isDirectory() || info.uid !== process.getuid?.() || (info.mode & 0o022) !== 0) {
      throw new IsolationError(`${this.lockRoot} must be a folder owned by this user and writable by it alone; it holds which run uses which uid`);
    }
  }
}

/** Kills every process of `uid` (a run user: none of them is anyone else's) and removes its temp files. */
async function clearUser(uid: number): Promise<void> {
  for (let round = 0; round < 20; round += 1) {
    const pids = await processesOf(uid);
    if (pids.length === 0) break;
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone meanwhile
      }
    }
    await sleep(50);
  }
  for (const folder of sharedTempFolders) {
    const entries = await readdir(folder).catch(() => [] as string[]);
    for (const entry of entries) {
      const target = path.join(folder, entry);
      // rm does not follow symlinks: a link planted by the run is removed, not what it points at.
      if ((await lstat(target).catch(() => undefined))?.uid === uid) await rm(target, { recursive: true, force: true }).catch(() => undefined);
    }
  }
}

/** The uids /etc/passwd and the gids /etc/group name: real accounts and groups, never handed to a run. */
async function namedIds(): Promise<Set<number>> {
  const ids = (file: string) =>
    readFile(file, 'utf8').then(
      (text) => text.split('\n').map((line) => Number(line.split(':')[2])),
      () => [],
    );
  return new Set([...(await ids('/etc/passwd')), ...(await ids('/etc/group'))].filter(Number.isInteger));
}

/** `pid starttime`: a process, told apart from a later one that got the same pid. */
async function processIdentity(pid: number): Promise<string> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  return `${pid} ${stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? ''}`;
}

async function processAlive(identity: string): Promise<boolean> {
  const pid = Number(identity.split(' ')[0]);
  return Number.isInteger(pid) && pid > 0 && (await processIdentity(pid)) === identity.trim();
}

/**
 * Throws IsolationError, saying what is missing, unless this runner host can run a script as a
 * user of `users` in a PID namespace of its own: it runs as root, and the whole chain (setpriv,
 * unshare, Node and run-init.js readable by the run user) starts a trivial script that sees itself
 * as that user, with run-init.js as process 1 of its /proc.
 */
export async function checkIsolation(users: RunUsers, workRoot: string): Promise<void> {
  const single = 'or start it with --single-user for a personal runner host (scripts then run as this user, with no isolation at all)';
  if (process.getuid?.() !== 0)
    throw new IsolationError(
      `runs cannot be isolated: the runner host runs as uid ${process.getuid?.()}, not root, so it cannot run each script as a user of its own; start it as root, ${single}`,
    );
  await checkReachable(workRoot, single);
  const user = await users.acquire();
  try {
    const probe = isolatedCommand({ command: '/bin/sh', args: ['-c', 'echo "$(id -u) $(tr "\\0" " " < /proc/1/cmdline)"'] }, user);
    const { code, stdout, stderr } = await runProbe(probe, workRoot);
    if (code !== 0 || !stdout.startsWith(`${user.uid} `) || !stdout.includes('run-init')) {
      throw new IsolationError(
        `runs cannot be isolated: a test script as uid ${user.uid} in a PID namespace of its own failed (${(stderr.trim() || stdout.trim() || `exit code ${code}`).split('\n').at(-1)}); this needs setpriv and unshare (util-linux) and permission to make PID and mount namespaces; ${single}`,
      );
    }
  } finally {
    await user.release();
  }
}

/** Run users must reach the work folder: every folder above it must let others pass (o+x). */
async function checkReachable(workRoot: string, single: string): Promise<void> {
  for (let dir = path.dirname(workRoot); ; dir = path.dirname(dir)) {
    const info = await lstat(dir);
    if ((info.mode & 0o001) === 0)
      throw new IsolationError(
        `runs cannot be isolated: the run users cannot reach the work folder ${workRoot} because ${dir} does not let others pass (chmod o+x ${dir}, or choose another --work), ${single}`,
      );
    if (dir === path.dirname(dir)) return;
  }
}

function runProbe(command: { command: string; args: string[] }, cwd: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(command.command, command.args, { cwd, env: { PATH: process.env.PATH ?? '/usr/bin:/bin' }, stdio: ['ignore', 'pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.once('error', (error) => resolve({ code: -1, stdout, stderr: error.message }));
    child.once('close', (code) => resolve({ code, stdout, stderr }));
  });
}
