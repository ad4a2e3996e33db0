// Commands that hold a lease while work runs, and copies with the pinned host key:
// - `paddock run SPEC -- CMD…`: reserve, wait (progress on stderr), run CMD on a member over SSH (or
//   here with --local), renewing the lease meanwhile; release at the end, also on a signal or a
//   failure; exit with CMD's status, or `reservationFailedStatus` when no machine was had;
// - `paddock shell SPEC`: the same around an interactive login;
// - `paddock scp [ID:]MEMBER:PATH LOCAL` and the reverse.
import type { Command } from 'commander';
import type { CredentialsView, MemberRequest, ReservationRequest } from '../protocol/api.js';
import { membersFromArguments, MemberSyntaxError, parseMemberTarget } from '../client/members.js';
import { PaddockError, type Paddock, type Reservation } from '../client/index.js';
import { openScp, openSsh, runChild, signalStatus, withSshConfig, type CopyEnd } from './openssh.js';
import { reservationIdOr } from './reservation-id.js';
import { shellQuote } from '../protocol/ssh.js';

/** `paddock run`'s and `paddock shell`'s exit status when the reservation failed, or it was had but CMD could not be started. */
export const reservationFailedStatus = 125;

/** A failure before CMD ran: reported as usual, with exit status 125. */
class HoldFailedError extends PaddockError {
  readonly exitStatus = reservationFailedStatus;
}

type Parser<T> = (value: string) => T;

export interface RunDependencies {
  client: () => Paddock;
  /** Progress on stderr until every member is ready; cancels the request on a timeout or a signal. */
  waitUntilReady: (reservation: Reservation, timeout: number | undefined) => Promise<void>;
  parse: { positiveInteger: (name: string) => Parser<number>; integer: Parser<number>; seconds: Parser<number>; duration: Parser<number | string> };
}

interface HoldOptions {
  count?: number;
  member: string[];
  image: string[];
  lease?: number | string;
  priority?: number;
  queueTimeout?: number | string;
  timeout?: number;
  on?: string;
}

const progress = (line: string): void => {
  process.stderr.write(`${line}\n`);
};
const collect = (value: string, list: string[]) => [...list, value];

/** The options `run` and `shell` share with `reserve`. */
function holdOptions(command: Command, parse: RunDependencies['parse']): Command {
  return command
    .argument('[spec]', 'spec of a single member (role main)')
    .option('-n, --count <n>', 'machines for the positional spec', parse.positiveInteger('--count'))
    .option('-m, --member <ROLE[:COUNT]=SPEC>', 'a gang member (repeatable)', collect, [] as string[])
    .option('--image <[ROLE=]IMAGE>', 'image to boot: IMAGE on every member, ROLE=IMAGE on the members of one role (repeatable)', collect, [] as string[])
    .option('--lease <duration>', 'lease, e.g. 30m (renewed while the command runs)', parse.duration)
    .option('--priority <n>', 'queue priority (higher first)', parse.integer)
    .option('--queue-timeout <duration>', 'give up if not granted within this, e.g. 1h', parse.duration)
    .option('--timeout <duration>', 'give up if not ready after this long, e.g. 10m (and cancel the request)', parse.seconds)
    .option('--on <member>', 'the member to log in to: ROLE, ROLE.N or ROLE[N] (default: the first)');
}

/** The request, checked before anything is reserved: the members, their images and `--on`. */
function holdRequest(spec: string | undefined, options: HoldOptions): ReservationRequest {
  const members = membersFromArguments(spec, options.count, options.member, options.image);
  if (options.on !== undefined) checkMember(members, options.on);
  return {
    members,
    ...(options.lease !== undefined ? { lease: options.lease } : {}),
    ...(options.priority !== undefined ? { priority: options.priority } : {}),
    ...(options.queueTimeout !== undefined ? { queueTimeout: options.queueTimeout } : {}),
  };
}

function checkMember(members: readonly MemberRequest[], target: string): void {
  const { role, index } = parseMemberTarget(target);
  const member = members.find((candidate) => candidate.role === role);
  if (!member) throw new MemberSyntaxError(`--on ${target}: no member has role "${role}" (the roles are ${members.map((each) => each.role).join(', ')})`);
  if (index >= (member.count ?? 1)) throw new MemberSyntaxError(`--on ${target}: role ${role} has ${member.count ?? 1} machine(s), numbered from 0`);
}

/**
 * Reserves, waits until ready, and runs `work` while the client renews the lease; releases
 * afterwards, whatever happened. A signal during `work` aborts `stop` (the child gets it too), and
 * the status is then 128 + its number.
 */
async function hold(dependencies: RunDependencies, request: ReservationRequest, timeout: number | undefined, work: Work): Promise<number> {
  let reservation: Reservation | undefined;
  try {
    reservation = await dependencies.client().reserve(request); // renewed in the background until released
    await dependencies.waitUntilReady(reservation, timeout);
  } catch (error) {
    await reservation?.release().catch(() => undefined);
    throw setupFailure(error);
  }
  const stop = new AbortController();
  const interrupted = (signal: NodeJS.Signals) => stop.abort(signal);
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, interrupted);
  try {
    const status = await work(reservation, stop.signal).catch((error: unknown) => Promise.reject(setupFailure(error)));
    return stop.signal.aborted ? signalStatus(stop.signal.reason as NodeJS.Signals) : status;
  } finally {
    for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.off(signal, interrupted);
    try {
      progress(`${reservation.id}: ${(await reservation.release()).state}`);
    } catch (error) {
      const failure = error as { message?: string; code?: string };
      progress(`${reservation.id}: could not release: ${failure.message ?? String(error)}${failure.code ? ` (${failure.code})` : ''}`);
    }
  }
}

type Work = (reservation: Reservation, stop: AbortSignal) => Promise<number>;

function setupFailure(error: unknown): unknown {
  if (error instanceof MemberSyntaxError || error instanceof HoldFailedError) return error;
  if (error instanceof PaddockError) return new HoldFailedError(error.message, error.code, error.status, error.details, { cause: error });
  return new HoldFailedError((error as Error)?.message ?? String(error), (error as { code?: string })?.code ?? 'failed', undefined, undefined, {
    cause: error,
  });
}

/** A role as it appears in an environment variable name: upper case, `-` as `_`. */
const variableRole = (role: string) => role.toUpperCase().replace(/-/g, '_');

/** Two roles that would share PADDOCK_HOST_<ROLE>_<N> (`a-b` and `a_b`, `x` and `X`) are a usage error. */
function checkVariableNames(members: readonly MemberRequest[]): void {
  const seen = new Map<string, string>();
  for (const { role } of members) {
    const other = seen.get(variableRole(role));
    if (other !== undefined)
      throw new MemberSyntaxError(`roles ${other} and ${role} would share the variables PADDOCK_HOST_${variableRole(role)}_N; rename one`);
    seen.set(variableRole(role), role);
  }
}

/**
 * What `run --local` gives its command (README: "Commands that hold a lease"): the reservation,
 * its members as JSON, each member's address as PADDOCK_HOST_/PORT_/USER_<ROLE>_<N>, and an
 * ssh_config naming each member `paddock-ID-ROLE.N`.
 */
export function memberEnvironment(id: string, machines: CredentialsView['machines'], sshConfigFile: string, alias: (member: string) => string) {
  const environment: Record<string, string> = {
    PADDOCK_RESERVATION: id,
    PADDOCK_SSH_CONFIG: sshConfigFile,
    PADDOCK_MEMBERS: JSON.stringify(
      machines.map((machine) => ({
        role: machine.role,
        index: machine.index,
        machine: machine.machine,
        host: machine.host,
        port: machine.port,
        user: machine.user,
        hostKey: machine.hostKey,
        via: machine.via,
        sshHost: alias(`${machine.role}.${machine.index}`),
      })),
    ),
  };
  for (const machine of machines) {
    const suffix = `${variableRole(machine.role)}_${machine.index}`;
    environment[`PADDOCK_HOST_${suffix}`] = machine.host;
    environment[`PADDOCK_PORT_${suffix}`] = String(machine.port);
    environment[`PADDOCK_USER_${suffix}`] = machine.user;
  }
  return environment;
}

/**
 * CMD as given after `--`: one argument is a shell command line (`-- 'make && make check'`), several
 * are the words of a command, passed on as they are (`-- sh -c 'echo a; echo b'`), here and on a
 * member alike (quoted for the member's shell, where plain ssh would join them with spaces).
 */
const remoteLine = (command: string[]) => (command.length === 1 ? command : [command.map(shellQuote).join(' ')]);
const localArgv = (command: string[]) => (command.length === 1 ? ['/bin/sh', '-c', command[0]] : command);

async function runLocally(reservation: Reservation, command: string[], stop: AbortSignal): Promise<number> {
  const { machines } = await reservation.credentials();
  return withSshConfig(reservation, (config, alias) => {
    const [file, ...args] = localArgv(command);
    progress(`${reservation.id}: running ${file} here`);
    return runChild(file, args, { env: { ...process.env, ...memberEnvironment(reservation.id, machines, config, alias) }, stop });
  });
}

/** `[ID:]MEMBER:PATH` (a colon before any slash, as scp reads it) or a local path. */
export function copyEnd(text: string): CopyEnd & { id?: string } {
  const at = text.indexOf(':');
  const slash = text.indexOf('/');
  if (at <= 0 || (slash >= 0 && slash < at)) return { local: text };
  let head = text.slice(0, at);
  let rest = text.slice(at + 1);
  let id: string | undefined;
  if (/^r-[0-9a-f]{12}$/.test(head)) {
    const next = rest.indexOf(':');
    if (next < 0) throw new MemberSyntaxError(`"${text}": after a reservation id comes MEMBER:PATH`);
    id = head;
    head = rest.slice(0, next);
    rest = rest.slice(next + 1);
  }
  const { role, index } = parseMemberTarget(head);
  return { ...(id ? { id } : {}), member: `${role}.${index}`, path: rest };
}

export function addRunCommands(cli: Command, dependencies: RunDependencies, remoteCommand: string[]): void {
  holdOptions(
    cli
      .command('run')
      .description(
        "reserve, wait, run CMD on a member over SSH (or here with --local) while the lease is renewed, release; exit with CMD's status (125: no machine); paddock run SPEC -- CMD…",
      ),
    dependencies.parse,
  )
    .option('--local', 'run CMD here, with PADDOCK_RESERVATION, PADDOCK_MEMBERS, PADDOCK_SSH_CONFIG and PADDOCK_HOST_<ROLE>_<N> in its environment')
    .action(async (spec: string | undefined, options: HoldOptions & { local?: boolean }) => {
      if (remoteCommand.length === 0) throw new MemberSyntaxError('run needs a command after --, e.g. paddock run x86 -- make test');
      if (options.local && options.on !== undefined) throw new MemberSyntaxError('--on names the member CMD runs on over SSH; with --local it runs here');
      const request = holdRequest(spec, options);
      if (options.local) checkVariableNames(request.members);
      process.exitCode = await hold(dependencies, request, options.timeout, (reservation, stop) => {
        if (options.local) return runLocally(reservation, remoteCommand, stop);
        progress(`${reservation.id}: running on ${options.on ?? 'the first member'}`);
        return openSsh(reservation, options.on, remoteLine(remoteCommand), stop);
      });
    });

  holdOptions(
    cli
      .command('shell')
      .description('reserve, wait, and log in with OpenSSH (a TTY when this is a terminal) while the lease is renewed; release when the session ends'),
    dependencies.parse,
  ).action(async (spec: string | undefined, options: HoldOptions) => {
    const request = holdRequest(spec, options);
    process.exitCode = await hold(dependencies, request, options.timeout, (reservation, stop) => openSsh(reservation, options.on, [], stop));
  });

  cli
    .command('scp')
    .description('copy files to or from a member with OpenSSH scp and the pinned host key; paddock scp [ID:]MEMBER:PATH LOCAL, or LOCAL [ID:]MEMBER:PATH')
    .argument('<from>')
    .argument('<to>')
    .option('-r, --recursive', 'copy directories')
    .action(async (fromText: string, toText: string, options: { recursive?: boolean }) => {
      const from = copyEnd(fromText);
      const to = copyEnd(toText);
      const remote = 'member' in from ? from : to;
      if ('member' in from === 'member' in to) throw new MemberSyntaxError('one of FROM and TO is [ID:]MEMBER:PATH, the other a local path');
      const reservation = await dependencies.client().reservation(reservationIdOr(remote.id));
      process.exitCode = await openScp(reservation, from, to, options.recursive === true);
    });
}
