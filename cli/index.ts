// `paddock`: the command line on top of the client library. Reads PADDOCK_URL and PADDOCK_TOKEN, else
// the chosen profile (cli/profiles.ts). Answers go to stdout (--output json|yaml|name for programs),
// progress to stderr. Errors print one line, `paddock: <message> (<code>)`, and exit 1, or 2 for
// usage errors; a stack trace only with PADDOCK_DEBUG=1. Habits every command shares (--output,
// --profile, --version, usage errors) are put on the whole tree at the end (cli/habits.ts).
import os from 'node:os';
import { Command, CommanderError, InvalidArgumentError } from 'commander';
import type { ExplainView, MachineView, ReservationExplainView, ReservationView } from '../protocol/api.js';
import { interactiveConsole, memberMachine } from './console.js';
import { addImageCommands } from './images.js';
import { addJobCommands } from './jobs.js';
import { addTunnelCommands } from './tunnel.js';
import { addConfigCommands } from './config-check.js';
import { addBackupCommand } from './backup.js';
import { addMigrateCommand } from './migrate.js';
import { openSsh } from './openssh.js';
import { reservationAndMember, reservationIdOr } from './reservation-id.js';
import { addRunCommands } from './run.js';
import { logFormatOption, logLevelOption, processLog, type LogCommandOptions } from './log-options.js';
import { addLeaseCommands } from './lease.js';
import { metricsListenOption } from './metrics.js';
import type { AgentCommandOptions } from './agent.js';
import { addRetireCommand, healthLines, provisioningRows } from './machines.js';
import { duration, durationOrZero, durationText } from './duration.js';
import { print, table } from './output.js';
import { addTokenCommands, expiryText } from './tokens.js';
import { activeProfile, addProfileCommands } from './profiles.js';
import { addCompletionCommand } from './completion.js';
import { applyHabits } from './habits.js';
import { membersFromArguments, MemberSyntaxError, splitRemoteCommand } from '../client/members.js';
import { isEvent, Paddock, PaddockError, TimeoutError, type Progress, type Reservation, type ServerHealth } from '../client/index.js';

const progress = (line: string): void => {
  process.stderr.write(`${line}\n`);
};

const collect = (value: string, list: string[]) => [...list, value];
const positiveInteger = (name: string, max?: number) => (value: string) => {
  if (!/^\d+$/.test(value) || Number(value) < 1 || (max !== undefined && Number(value) > max)) {
    throw new InvalidArgumentError(`${name} is a whole number ${max === undefined ? 'of at least 1' : `from 1 to ${max}`}`);
  }
  return Number(value);
};
const integer = (value: string) => {
  if (!/^-?\d+$/.test(value)) throw new InvalidArgumentError('a whole number');
  return Number(value);
};
// Every time option reads a duration: bare seconds or 30s, 5m, 2h, 30d (cli/duration.ts).
const seconds = duration;

/** One progress line: a state change, a stage of a machine, or the queue position. */
function describe(update: Progress): string | undefined {
  if (!isEvent(update)) return update.state === 'queued' && update.queuePosition ? `queued, position ${update.queuePosition}` : undefined;
  const time = update.at.slice(11, 19);
  const change = `${update.from ? `${update.from} → ` : ''}${update.to}`;
  if (update.type === 'stage' || update.type === 'action')
    return `${time} ${update.machine}: ${update.to}${update.type === 'action' && update.reason ? ` (${update.reason})` : ''}`;
  if (update.type === 'allocation') return `${time} ${update.machine ?? 'no machine'}: ${change}${update.reason ? ` (${update.reason})` : ''}`;
  return `${time} ${change}${update.reason ? `: ${update.reason}` : ''}`;
}

/** A member's current allocation, not one that failed and was replaced by a retry on another machine. */
const isCurrent = (allocation: ReservationView['allocations'][number]) => allocation.replacedBy === undefined;

/** What `reserve --json` prints: enough to log in. */
function summary(view: ReservationView) {
  return {
    id: view.id,
    state: view.state,
    ...(view.reason ? { reason: view.reason } : {}),
    members: view.allocations.filter(isCurrent).map((allocation) => ({
      role: allocation.role,
      index: allocation.index,
      machine: allocation.machine,
      host: allocation.host,
      port: allocation.port,
      user: allocation.user,
      hostKey: allocation.hostKey,
      ...(allocation.console ? { console: allocation.console } : {}),
      ...(allocation.failure ? { failure: allocation.failure } : {}),
    })),
  };
}

function showReservation(view: ReservationView): string {
  const lease = [`lease ${view.leaseSeconds}s`, view.expiresAt && `expires ${view.expiresAt}`, view.hardCapAt && `hard cap ${view.hardCapAt}`];
  const lines = [
    `${view.id}  ${view.state}${view.reason ? ` (${view.reason})` : ''}`,
    [`owner ${view.owner}`, `priority ${view.priority}`, ...lease, view.queuePosition && `queue position ${view.queuePosition}`].filter(Boolean).join(', '),
  ];
  for (const member of view.members) lines.push(`member ${member.role} ×${member.count}: ${member.spec}${member.image ? ` (image ${member.image})` : ''}`);
  for (const allocation of view.allocations) {
    const where = `${allocation.host ? ` ${allocation.user}@${allocation.host}:${allocation.port}` : ''}${allocation.console ? ` console telnet ${allocation.console.host} ${allocation.console.port}` : ''}${allocation.failure ? ` failed: ${allocation.failure.code}` : ''}`;
    const stages = Object.entries(allocation.stages)
      .map(([stage, at]) => `${stage} ${String(at).slice(11, 19)}`)
      .join(', ');
    const retry = allocation.waitingUntil
      ? ` for another machine after ${allocation.failure?.code ?? 'a failure'} on ${allocation.failedOn?.at(-1) ?? '?'}, until ${allocation.waitingUntil}`
      : allocation.replacedBy
        ? ` (replaced by ${allocation.replacedBy})`
        : '';
    const line = `${allocation.machine || '-'} ${allocation.state}${allocation.waitingUntil ? retry : `${where}${retry}`}`;
    lines.push(`  ${allocation.role}.${allocation.index} ${line}${stages ? ` [${stages}]` : ''}`);
  }
  return lines.join('\n');
}

function showExplain(explained: ExplainView): string {
  return [
    `matches: ${explained.matches.join(', ') || 'none'}`,
    ...explained.unavailable.map((entry) => `  ${entry.machine}: not free now: ${entry.reason}`),
    ...explained.rejected.map((entry) => `  ${entry.machine}: ${entry.term}: ${entry.reason}`),
  ].join('\n');
}

function showReservationExplain(explained: ReservationExplainView): string {
  const lines = [`${explained.id} ${explained.state}${explained.queuePosition ? `, queue position ${explained.queuePosition}` : ''}`];
  for (const member of explained.members) {
    lines.push(
      `${member.role} ×${member.count} (${member.spec}): matches ${member.matches.join(', ') || 'none'}; free now ${member.available.join(', ') || 'none'}`,
    );
    for (const entry of member.unavailable) lines.push(`  ${entry.machine}: not free now: ${entry.reason}`);
    for (const entry of member.rejected) lines.push(`  ${entry.machine}: ${entry.term}: ${entry.reason}`);
    for (const entry of member.waiting ?? []) {
      lines.push(
        `  ${member.role}.${entry.index}: waits for a free machine other than ${entry.failedOn.join(', ')} (${entry.code}) until ${entry.waitingUntil}`,
      );
    }
  }
  return lines.join('\n');
}

/** Labels or capacities as `key=value` words. */
const pairs = (record: Record<string, string | number>) =>
  Object.entries(record)
    .map(([key, value]) => `${key}=${value}`)
    .join(' ');

/** Why a machine is out of reach, one line each: its lab host silent, or the machine unreachable from it. */
function machineNotes(machine: MachineView): string[] {
  return [
    ...(machine.state === 'offline' ? [`${machine.name}: offline since ${machine.offlineSince ?? '?'}: ${machine.reason ?? ''}`] : []),
    ...(machine.unreachable ? [`${machine.name}: unreachable since ${machine.unreachable.since}: ${machine.unreachable.reason}`] : []),
    ...(machine.qualification?.state === 'running' ? [`${machine.name}: ${qualificationLine(machine.qualification)}`] : []),
  ];
}

/** A qualification in one line: how far it is, or how it ended. */
function qualificationLine(qualification: NonNullable<MachineView['qualification']>): string {
  const { state, passed, failed, boots, needed } = qualification;
  const counts = `${passed} passed, ${failed} failed of at most ${boots} boots (${needed} needed)`;
  if (state === 'running') return `qualifying since ${qualification.startedAt}: ${counts}${qualification.reason ? `; ${qualification.reason}` : ''}`;
  return `qualification ${state} at ${qualification.endedAt ?? '?'}: ${counts}${qualification.reason ? `; ${qualification.reason}` : ''}`;
}

/**
 * `reserve --wait`: progress on stderr until ready. Nobody renews the lease after this process
 * exits, so a request it gives up on (timeout, ^C, SIGTERM) is cancelled rather than left to
 * grab machines later.
 */
async function waitUntilReady(reservation: Reservation, timeout: number | undefined): Promise<void> {
  progress(`${reservation.id}: waiting until ready${timeout !== undefined ? ` (at most ${timeout}s)` : ''}`);
  const interrupted = (signal: NodeJS.Signals) => {
    progress(`${reservation.id}: ${signal}: cancelling the request`);
    reservation.release().then(
      () => process.exit(128 + (os.constants.signals[signal] ?? 0)),
      () => process.exit(1),
    );
  };
  process.once('SIGINT', interrupted).once('SIGTERM', interrupted);
  try {
    await reservation.ready({
      timeout,
      onProgress: (update) => {
        const line = describe(update);
        if (line) progress(`${reservation.id}: ${line}`);
      },
    });
  } catch (error) {
    if (!(error instanceof TimeoutError)) throw error;
    await reservation.release();
    throw new TimeoutError(`${error.message}; the request was cancelled`, error.code, undefined, error.details);
  } finally {
    process.off('SIGINT', interrupted).off('SIGTERM', interrupted);
  }
}

export function program(remoteCommand: string[] = []): Command {
  const cli = new Command('paddock').description('Machines for CI jobs: reserve, use, release.');
  cli.exitOverride().configureOutput({
    outputError: (text, write) => write(`paddock: ${text.trim().replace(/^error: /, '')} (usage)\n`),
  });
  const client = () => new Paddock(); // PADDOCK_URL and PADDOCK_TOKEN, set by the profile if not by the caller

  cli
    .command('serve')
    .description('run the API with a local lab-host agent (the embedded default) until a signal stops it')
    .option('--config <file>', 'the YAML config (listen address, data directory, machines); without it, two local QEMU VM slots')
    .option('--listen <host:port>', "listen here instead of the config's address (default 127.0.0.1:7300)")
    .option('--data <dir>', "keep data here instead of the config's dataDir (default ./paddock-data)")
    .option(
      '--database <url>',
      "keep the data in this PostgreSQL database instead of the config's (postgres://user@host:5432/name; a password goes in ~/.pgpass)",
    )
    .addOption(logFormatOption())
    .addOption(logLevelOption())
    .addOption(metricsListenOption())
    .action(async (options: { config?: string; listen?: string; data?: string; database?: string; metricsListen?: string } & LogCommandOptions) => {
      const { runServer } = await import('./server-process.js');
      // returns once listening; the server keeps the process alive
      await runServer({
        ...(options.config ? { configPath: options.config } : {}),
        ...(options.listen ? { listen: options.listen } : {}),
        ...(options.data ? { dataDir: options.data } : {}),
        ...(options.database ? { database: options.database } : {}),
        log: await processLog(options, 'api'),
        ...(options.metricsListen ? { metricsListen: options.metricsListen } : {}),
      });
    });

  cli
    .command('agent')
    .description('run a lab-host agent until a signal stops it: it pulls provisioning work for its machines from PADDOCK_URL with a token of role agent')
    .requiredOption('--name <name>', "this agent's name, the name of its token (paddock token create NAME --role agent)")
    .option('--token-file <file>', 'read the token from this file (owned by this user, mode 0600) rather than PADDOCK_TOKEN')
    .option('--data <dir>', 'where the agent keeps its image cache and what its machines hold', './paddock-agent-data')
    .option('--kinds <kinds>', 'the machine kinds it provisions, comma-separated (default: every kind)')
    .option('--concurrency <n>', 'provisioning and release tasks at once, 1 to 256', positiveInteger('--concurrency', 256), 16)
    .option(
      '--check-interval <duration>',
      'how often it checks that it can reach its machines (serial devices, PDUs, SSH ports), e.g. 30s; 0: never',
      durationOrZero,
      30,
    )
    .addOption(logFormatOption())
    .addOption(logLevelOption())
    .addOption(metricsListenOption())
    .action(async (options: AgentCommandOptions & LogCommandOptions) => {
      const { runAgent } = await import('./agent.js');
      await runAgent({ ...options, log: await processLog(options, 'agent') }); // the agent keeps the process alive
    });

  cli
    .command('reserve')
    .description('reserve machines: a SPEC for one member, or -m ROLE[:COUNT]=SPEC for a gang')
    .argument('[spec]', 'spec of a single member (role main)')
    .option('-n, --count <n>', 'machines for the positional spec', positiveInteger('--count'))
    .option('-m, --member <ROLE[:COUNT]=SPEC>', 'a gang member (repeatable)', collect, [] as string[])
    .option('--image <[ROLE=]IMAGE>', 'image to boot: IMAGE on every member, ROLE=IMAGE on the members of one role (repeatable)', collect, [] as string[])
    .option('--lease <duration>', 'lease, e.g. 30m', durationText)
    .option('--priority <n>', 'queue priority (higher first)', integer)
    .option('--queue-timeout <duration>', 'give up if not granted within this, e.g. 1h', durationText)
    .option('--idempotency-key <key>', 'a retried request with the same key returns the same reservation')
    .option('--wait', 'wait until every machine is ready, showing progress on stderr')
    .option('--timeout <duration>', 'with --wait: give up after this long, e.g. 5m (and cancel the request)', duration)
    .option('--json', 'print id, state and members as JSON')
    .action(async (spec: string | undefined, options) => {
      const members = membersFromArguments(spec, options.count, options.member, options.image);
      const reservation = await client().reserve(
        {
          members,
          ...(options.lease !== undefined ? { lease: options.lease } : {}),
          ...(options.priority !== undefined ? { priority: options.priority } : {}),
          ...(options.queueTimeout !== undefined ? { queueTimeout: options.queueTimeout } : {}),
          ...(options.idempotencyKey ? { idempotencyKey: options.idempotencyKey } : {}),
        },
        { renew: false },
      );
      if (options.wait) await waitUntilReady(reservation, options.timeout);
      print(options.json ? summary(reservation.view) : showReservation(reservation.view));
    });

  cli
    .command('ls')
    .description('your live reservations')
    .option('--all', "every user's (admins)")
    .option('--ended', 'include ended ones')
    .option('--json', 'the reservations as JSON')
    .action(async (options) => {
      const list = await client().list({ all: options.all, ended: options.ended });
      if (options.json) return print(list);
      if (list.length === 0) return print('no reservations');
      const rows = list.map((view) => [
        view.id,
        view.state,
        view.owner,
        view.allocations.map((allocation) => allocation.machine).join(',') || '-',
        view.expiresAt ?? '-',
      ]);
      print(table([['ID', 'STATE', 'OWNER', 'MACHINES', 'EXPIRES'], ...rows]));
    });

  cli
    .command('console')
    .description("a reservation's serial console log; -f follows it live until the reservation ends; -i types at it (the owner, one at a time)")
    .argument('[id]', 'the reservation (default: $PADDOCK_RESERVATION)')
    .argument('[member]', 'role, role.N or role[N] (default: the first machine)')
    .option('--machine <name>', 'which machine, by name')
    .option('-f, --follow', 'keep printing new output until the reservation ends')
    .option('-i, --interactive', 'attach the terminal to the live console (~. quits, ~t takes typing over)')
    .option('--takeover', 'with -i: type now, demoting whoever types')
    .option('--read-only', 'with -i: only watch')
    .action(
      async (
        first: string | undefined,
        second: string | undefined,
        options: { machine?: string; follow?: boolean; interactive?: boolean; takeover?: boolean; readOnly?: boolean },
      ) => {
        const { id, member } = reservationAndMember(first, second);
        const reservation = await client().reservation(id, { renew: false });
        if (options.interactive) {
          process.exitCode = await interactiveConsole(reservation, { ...options, ...(member ? { member } : {}) });
          return;
        }
        const machine = options.machine ?? (member ? memberMachine(reservation, member) : undefined);
        await reservation.console(process.stdout, { ...(machine ? { machine } : {}), ...(options.follow ? { follow: true } : {}) });
      },
    );

  cli
    .command('show')
    .description('a reservation: state, lease, machines with their stages, last events')
    .argument('[id]', 'the reservation (default: $PADDOCK_RESERVATION)')
    .option('--json', 'the reservation as JSON')
    .action(async (id: string | undefined, options) => {
      const given = reservationIdOr(id);
      const reservation = await client().reservation(given);
      if (options.json) return print(reservation.view);
      print(showReservation(reservation.view));
      const events = await reservation.events();
      if (events.length) print('events:');
      for (const event of events.slice(-10)) print(`  ${describe(event)}`);
    });

  cli
    .command('explain')
    .description('which machines a spec matches, and the first term every other machine fails')
    .argument('[spec]')
    .option('--reservation <id>', 'why a reservation waits: matches per member and its queue position')
    .option('--json', 'the answer as JSON')
    .action(async (spec: string | undefined, options) => {
      if (options.reservation !== undefined && spec !== undefined) throw new MemberSyntaxError('give a SPEC or --reservation ID, not both');
      if (options.reservation !== undefined) {
        const explained = await client().explainReservation(options.reservation);
        return print(options.json ? explained : showReservationExplain(explained));
      }
      if (spec === undefined) throw new MemberSyntaxError('explain needs a SPEC or --reservation ID');
      const explained = await client().explain(spec);
      print(options.json ? explained : showExplain(explained));
    });

  cli
    .command('ssh')
    .description("log in to a member with OpenSSH, the reservation's key and a pinned host key; paddock ssh [ID] [TARGET] [-- CMD…]")
    .argument('[id]', 'the reservation (default: $PADDOCK_RESERVATION)')
    .argument('[target]', 'role, role.N or role[N] (default: the first machine)')
    .action(async (first: string | undefined, second: string | undefined) => {
      const { id, member } = reservationAndMember(first, second);
      process.exitCode = await openSsh(await client().reservation(id), member, remoteCommand);
    });

  cli
    .command('release')
    .description('give machines back (idempotent)')
    .argument('[ids...]', 'the reservations (default: $PADDOCK_RESERVATION)')
    .option('--json', 'the released reservations as JSON: [{id, state}]')
    .action(async (given: string[], options: { json?: boolean }) => {
      const ids = given.length > 0 ? given : [reservationIdOr(undefined)];
      const paddock = client();
      const released: { id: string; state: string }[] = [];
      let failed: unknown;
      for (const id of ids) {
        try {
          const { state } = await (await paddock.reservation(id)).release();
          released.push({ id, state });
          if (!options.json) print(`${id}: ${state}`);
        } catch (error) {
          if (ids.length === 1) throw error;
          report(error);
          failed = error;
        }
      }
      if (options.json) print(released);
      if (failed) process.exitCode = 1;
    });

  cli
    .command('renew')
    .description('extend the lease (up to the hard cap)')
    .argument('[id]', 'the reservation (default: $PADDOCK_RESERVATION)')
    .action(async (given: string | undefined) => {
      const id = reservationIdOr(given);
      const view = await (await client().reservation(id)).renew();
      print(`${id}: ${view.state}, expires ${view.expiresAt ?? '-'}`);
    });

  const machines = cli.command('machines').description('the inventory: ls, show, and (admins) maintenance, activate, retire');
  machines
    .command('ls')
    .description('every machine: kind, state, lab host, health, reservation, labels')
    .option('--json', 'the machines as JSON')
    .option('--retired', 'the retired machines (left out otherwise)')
    .action(async (options) => {
      const list = await client().machines({ retired: options.retired === true });
      if (options.json) return print(list);
      const rows = list.map((machine) => [
        machine.name,
        machine.kind,
        machine.unreachable ? `${machine.state}, unreachable` : machine.state,
        machine.labHost,
        String(machine.health),
        machine.reservationId ?? '-',
        pairs(machine.labels),
      ]);
      print(table([['NAME', 'KIND', 'STATE', 'LAB HOST', 'HEALTH', 'RESERVATION', 'LABELS'], ...rows]));
      for (const line of list.flatMap(machineNotes)) print(line);
    });
  machines
    .command('show')
    .description('one machine: state, lab host, labels, capacities, why it is offline or unreachable, its health score and last provisionings')
    .argument('<name>')
    .option('--json', 'as JSON')
    .option('--limit <n>', 'how many of its last provisionings (default: the health window)', positiveInteger('--limit', 100))
    .action(async (name: string, options: { json?: boolean; limit?: number }) => {
      const machine = await client().machine(name, options.limit === undefined ? {} : { limit: options.limit });
      if (options.json) return print(machine);
      print(`${machine.name}  ${machine.kind}  ${machine.state}${machine.unreachable ? ', unreachable' : ''}  lab host ${machine.labHost}`);
      if (machine.reservationId) print(`reservation ${machine.reservationId}`);
      if (machine.reason && machine.state !== 'offline') print(`reason: ${machine.reason}`);
      print(`labels: ${pairs(machine.labels) || '-'}`);
      print(`capacities: ${pairs(machine.capacities) || '-'}`);
      print(`failures in a row: ${machine.failures}`);
      if (machine.qualification && machine.qualification.state !== 'running') print(qualificationLine(machine.qualification));
      for (const failure of machine.qualification?.failures ?? []) {
        print(`  failed boot ${failure.reservationId}: ${failure.code}${failure.stage ? ` at ${failure.stage}` : ''}: ${failure.reason}`);
      }
      for (const line of machineNotes(machine)) print(line);
      for (const line of healthLines(machine)) print(line);
      const history = provisioningRows(machine);
      if (history.length > 0) print(table(history));
    });
  machines
    .command('maintenance')
    .description('take a machine out of service (admins)')
    .argument('<name>')
    .option('--reason <text>', 'why, shown with the machine')
    .action(async (name: string, options) => print(`${name}: ${(await client().maintenance(name, options.reason)).state}`));
  machines
    .command('activate')
    .description('put a machine back into service (admins)')
    .argument('<name>')
    .action(async (name: string) => print(`${name}: ${(await client().activate(name)).state}`));
  addRetireCommand(machines, client, print);

  cli
    .command('agents')
    .description('the lab hosts and their agents (admins)')
    .command('ls')
    .description('every lab host the machines name and every agent heard: state, version, last heard, machines, tasks, warnings')
    .option('--json', 'as JSON')
    .action(async (options: { json?: boolean }) => {
      const list = await client().agents();
      if (options.json) return print(list);
      if (list.length === 0) return print('no lab hosts');
      const rows = list.map((agent) => [
        agent.name,
        agent.state,
        agent.version ?? '-',
        agent.lastHeard ?? 'never',
        agent.machines.join(',') || '-',
        agent.tasks.join(',') || '-',
      ]);
      print(table([['NAME', 'STATE', 'VERSION', 'LAST HEARD', 'MACHINES', 'TASKS'], ...rows]));
      for (const agent of list) for (const warning of agent.warnings) print(`${agent.name}: ${warning}`);
    });

  addTokenCommands(cli, client);
  addProfileCommands(cli);
  addCompletionCommand(cli);

  addLeaseCommands(cli, client, print);
  addImageCommands(cli, client, print, table);
  addJobCommands(cli, client, print, table);
  addTunnelCommands(cli);
  addConfigCommands(cli, print);
  addBackupCommand(cli, print);
  addMigrateCommand(cli, print);
  addRunCommands(cli, { client, waitUntilReady, parse: { positiveInteger, integer, seconds, duration: durationText } }, remoteCommand);

  cli
    .command('whoami')
    .description('who the token is (name, role), when it expires, and which server and profile are used')
    .option('--json', 'as JSON')
    .action(async (options: { json?: boolean }) => {
      const paddock = client();
      const me = await paddock.whoami();
      const profile = activeProfile();
      // The servers as the client shows them: every one of a list, none with its user:password.
      const url = paddock.http.where;
      if (options.json) return print({ ...me, url, ...(profile ? { profile: profile.name } : {}) });
      print(`${me.name} (${me.role})`);
      print(`server ${url}${profile ? ` (profile ${profile.name}, from ${profile.from})` : ''}`);
      if (me.expiresAt) print(`token expires ${expiryText(me)}`);
    });

  cli
    .command('servers')
    .description('each API server of PADDOCK_URL on its own: which leads, which follow, which do not answer; exit 1 unless one leads')
    .option('--json', 'as JSON')
    .action(async (options: { json?: boolean }) => {
      // /healthz needs no token: this works before one is set up.
      const list = await new Paddock({ token: process.env.PADDOCK_TOKEN || 'none' }).servers();
      const verdict = serversVerdict(list);
      if (!verdict.ok) process.exitCode = 1;
      if (options.json) return print({ servers: list, ...verdict });
      const rows = list.map((server) => [
        server.url,
        server.role,
        server.database ?? '-',
        server.version ?? '-',
        server.leader ? `leader ${server.leader}` : (server.reason ?? ''),
      ]);
      print(table([['SERVER', 'ROLE', 'DATABASE', 'VERSION', 'NOTE'], ...rows]));
      print(verdict.message);
    });

  applyHabits(cli);
  return cli;
}

/**
 * What a list of servers' answers says as a whole: one leads (or the followers name one not in the
 * list), none does, or several do, which servers on one database never do.
 */
function serversVerdict(list: ServerHealth[]): { ok: boolean; leader?: string; message: string } {
  const leaders = list.filter((server) => server.role === 'leader').map((server) => server.url);
  const named = [...new Set(list.flatMap((server) => (server.role === 'follower' && server.leader ? [server.leader] : [])))];
  if (leaders.length > 1)
    return {
      ok: false,
      message: `${leaders.length} servers lead (${leaders.join(', ')}): servers on one database never do; the list names separate Paddocks (each with its own SQLite file or database), or one server twice`,
    };
  if (leaders.length === 1) {
    const elsewhere = named.filter((leader) => new URL(leader).origin !== new URL(leaders[0]).origin);
    const also = elsewhere.length ? `; a follower names ${elsewhere.join(', ')} (another address of it, or another Paddock)` : '';
    return { ok: true, leader: leaders[0], message: `${leaders[0]} leads${also}` };
  }
  if (named.length === 1) return { ok: true, leader: named[0], message: `no server of the list leads; the followers name ${named[0]}` };
  if (named.length > 1) return { ok: false, message: `no server of the list leads, and the followers name several leaders: ${named.join(', ')}` };
  return { ok: false, message: 'no server leads' };
}

/** The one line for an error; a stack only with PADDOCK_DEBUG=1. */
function report(error: unknown): void {
  if (process.env.PADDOCK_DEBUG === '1') console.error(error);
  if (error instanceof PaddockError && error.code === 'configuration' && /^no (Paddock server|token):/.test(error.message)) {
    // The client library's words speak to a program ("pass { url }"); a person has a profile too.
    console.error(
      error.message.startsWith('no token')
        ? 'paddock: no token: set PADDOCK_TOKEN, or give the profile a tokenFile (paddock profiles --help) (configuration)'
        : 'paddock: no Paddock server: set PADDOCK_URL (e.g. http://127.0.0.1:7300), or choose a profile with --profile NAME (paddock profiles --help) (configuration)',
    );
  } else if (error instanceof PaddockError || error instanceof MemberSyntaxError) {
    console.error(`paddock: ${error.message} (${error.code})`);
  } else {
    const failure = error as { message?: string; code?: string };
    console.error(`paddock: ${failure?.message ?? String(error)}${typeof failure?.code === 'string' ? ` (${failure.code})` : ''}`);
  }
}

export async function main(argv: string[]): Promise<void> {
  // `paddock ls | head`: a reader that has had enough is no error.
  process.stdout.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    throw error;
  });
  const { args, command } = splitRemoteCommand(argv);
  try {
    await program(command).parseAsync(args, { from: 'user' });
  } catch (error) {
    if (error instanceof CommanderError) {
      // Commander printed the message (or the help) already.
      process.exitCode = error.exitCode === 0 ? 0 : 2;
      return;
    }
    report(error);
    // Some errors carry their own status: `run` when no machine was had (125), no reservation given (2).
    process.exitCode = error instanceof MemberSyntaxError ? 2 : ((error as { exitStatus?: number }).exitStatus ?? 1);
  }
}
