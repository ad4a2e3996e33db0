// The real OpenSSH client (ssh, scp) on a reservation's members: the reservation's key and an
// ssh_config with the pinned host keys (sshConfig in tunnel.ts: StrictHostKeyChecking yes, the
// tunnel's ProxyCommand where the access says `via: paddock`) in a private temp directory (0700),
// removed afterwards, also when a signal comes. Also the child-process runner the commands that
// hold a lease share: signals this process gets go to the child, whose exit status comes back.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { PaddockError, type Reservation } from '../client/index.js';
import { parseMemberTarget } from '../client/members.js';
import { hostAlias, sshConfig } from './tunnel.js';

const forwarded = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

/** A shell's exit status for a death by `signal`: 128 + its number. */
export const signalStatus = (signal: NodeJS.Signals | null): number => 128 + (signal ? (os.constants.signals[signal] ?? 0) : 127);

/**
 * Runs `file` with this terminal (stdio inherited) and resolves with its exit status, or 128 + N
 * when it died of signal N or this process was sent one (which goes on to the child, so this
 * process lives on to clean up). Returns at once, without starting it, when `stop` is aborted.
 */
export async function runChild(
  file: string,
  args: readonly string[],
  options: { env?: NodeJS.ProcessEnv; stop?: AbortSignal; missing?: { message: string; code: string } } = {},
): Promise<number> {
  let received: NodeJS.Signals | undefined;
  let child: ChildProcess | undefined;
  const forward = (signal: NodeJS.Signals) => {
    received = signal;
    child?.kill(signal);
  };
  for (const signal of forwarded) process.on(signal, forward);
  try {
    if (options.stop?.aborted) return signalStatus((options.stop.reason as NodeJS.Signals | undefined) ?? 'SIGTERM');
    return await new Promise<number>((resolve, reject) => {
      child = spawn(file, args, { stdio: 'inherit', ...(options.env ? { env: options.env } : {}) });
      child.once('error', (error: NodeJS.ErrnoException) =>
        reject(
          error.code === 'ENOENT'
            ? new PaddockError(options.missing?.message ?? `${file}: no such command`, options.missing?.code ?? 'command_not_found')
            : error,
        ),
      );
      child.once('exit', (code, signal) => resolve(received ? signalStatus(received) : (code ?? signalStatus(signal))));
    });
  } finally {
    for (const signal of forwarded) process.off(signal, forward);
  }
}

/**
 * The member a TARGET names (`role`, `role.N`, `role[N]`; default the first ready one), checked
 * to be a ready member of the reservation, as its `role.N`.
 */
export async function readyMember(reservation: Reservation, target: string | undefined): Promise<string> {
  if (target === undefined) {
    const first = (await reservation.credentials()).machines[0];
    if (!first) throw new PaddockError(`reservation ${reservation.id} has no ready member (it is ${reservation.state})`, 'invalid_target');
    return `${first.role}.${first.index}`;
  }
  await reservation.target(target); // invalid_target when it is not a ready member
  const { role, index } = parseMemberTarget(target);
  return `${role}.${index}`;
}

/**
 * Writes the reservation's ssh_config (and its key and known_hosts) into a private temp directory,
 * calls `work` with the config file and each member's Host alias, and removes the directory after.
 */
export async function withSshConfig<T>(reservation: Reservation, work: (config: string, alias: (member: string) => string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'paddock-ssh-'));
  try {
    const config = path.join(dir, 'config');
    await writeFile(config, await sshConfig(reservation, dir), { mode: 0o600 });
    return await work(config, (member) => hostAlias(reservation.id, parseMemberTarget(member)));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** The OpenSSH options every call passes before its own: the private config, no chatter. */
const common = (config: string) => ['-F', config, '-o', 'LogLevel=ERROR'];

/**
 * `ssh` to a member with `command` (none: a login shell, with a TTY when this is a terminal).
 * Resolves with ssh's exit status: the remote command's, or 255 for ssh's own failures.
 */
export async function openSsh(reservation: Reservation, target: string | undefined, command: readonly string[], stop?: AbortSignal): Promise<number> {
  const member = await readyMember(reservation, target);
  return withSshConfig(reservation, (config, alias) =>
    runChild('ssh', [...common(config), '--', alias(member), ...command], {
      ...(stop ? { stop } : {}),
      missing: { message: 'the OpenSSH client (ssh) is not installed or not on PATH', code: 'ssh_not_found' },
    }),
  );
}

/** One end of a copy: a local path, or a PATH on a MEMBER. */
export type CopyEnd = { local: string } | { member: string; path: string };

/** `scp` between here and a member; `recursive` copies directories. Resolves with scp's exit status. */
export async function openScp(reservation: Reservation, from: CopyEnd, to: CopyEnd, recursive: boolean): Promise<number> {
  const remote = 'member' in from ? from : 'member' in to ? to : undefined;
  if (!remote) throw new PaddockError('one end of the copy is a MEMBER:PATH', 'usage');
  const member = await readyMember(reservation, remote.member);
  return withSshConfig(reservation, (config, alias) => {
    const operand = (end: CopyEnd) => ('local' in end ? end.local : `${alias(member)}:${end.path}`);
    return runChild('scp', [...common(config), ...(recursive ? ['-r'] : []), '--', operand(from), operand(to)], {
      missing: { message: 'the OpenSSH client (scp) is not installed or not on PATH', code: 'scp_not_found' },
    });
  });
}
