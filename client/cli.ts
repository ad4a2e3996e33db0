// `paddock`: the command line on top of the client library. Reads PADDOCK_URL and PADDOCK_TOKEN.
// Errors print `paddock: <message> (<code>)` and exit 1 (2 for usage errors); --json prints
// machine-readable answers on stdout, progress goes to stderr.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Command, CommanderError, Option } from 'commander';
import type { EventView, ReservationView } from '../api/contract.js';
import { membersFromArguments, MemberSyntaxError } from './cli-members.js';
import { Paddock, PaddockError } from './index.js';

const print = (value: unknown): void => {
  process.stdout.write(`${typeof value === 'string' ? value : JSON.stringify(value, null, 2)}\n`);
};
const progress = (line: string): void => {
  process.stderr.write(`${line}\n`);
};

function describeEvent(event: EventView): string {
  const time = event.at.slice(11, 19);
  if (event.type === 'stage') return `${time} ${event.machine}: ${event.to}`;
  if (event.type === 'allocation') return `${time} ${event.machine}: ${event.from ? `${event.from} → ` : ''}${event.to}${event.reason ? ` (${event.reason})` : ''}`;
  return `${time} ${event.from ? `${event.from} → ` : ''}${event.to}${event.reason ? `: ${event.reason}` : ''}`;
}

function summary(view: ReservationView) {
  return {
    id: view.id,
    state: view.state,
    ...(view.reason ? { reason: view.reason } : {}),
    members: view.allocations.map((allocation) => ({
      role: allocation.role, index: allocation.index, machine: allocation.machine,
      host: allocation.host, port: allocation.port, user: allocation.user, hostKey: allocation.hostKey,
    })),
  };
}

function table(rows: string[][]): string {
  const widths = rows[0].map((_, column) => Math.max(...rows.map((row) => row[column].length)));
  return rows.map((row) => row.map((cell, column) => cell.padEnd(widths[column])).join('  ').trimEnd()).join('\n');
}

function showReservation(view: ReservationView): string {
  const lines = [
    `${view.id}  ${view.state}${view.reason ? ` (${view.reason})` : ''}`,
    `owner ${view.owner}, priority ${view.priority}, lease ${view.leaseSeconds}s${view.expiresAt ? `, expires ${view.expiresAt}` : ''}${view.queuePosition ? `, queue position ${view.queuePosition}` : ''}`,
  ];
  for (const member of view.members) lines.push(`member ${member.role} ×${member.count}: ${member.spec}${member.image ? ` (image ${member.image})` : ''}`);
  for (const allocation of view.allocations) {
    const where = allocation.host ? ` ${allocation.user}@${allocation.host}:${allocation.port}` : '';
    const stages = Object.keys(allocation.stages).join(' → ');
    lines.push(`  ${allocation.role}.${allocation.index} ${allocation.machine} ${allocation.state}${where}${stages ? ` [${stages}]` : ''}`);
  }
  return lines.join('\n');
}

export function program(): Command {
  const cli = new Command('paddock').description('Machines for CI jobs: reserve, use, release.').showHelpAfterError();
  cli.exitOverride();
  const client = () => new Paddock();

  cli
    .command('serve')
    .description('run the API with a local lab-host agent (the embedded default)')
    .option('--config <file>', 'the YAML config (listen address, data directory, machines)')
    .action(async (options: { config?: string }) => {
      const { runServer } = await import('../api/main.js');
      await runServer(options.config);
      await new Promise(() => undefined); // serve until a signal stops the process
    });

  cli
    .command('reserve')
    .description('reserve machines: a SPEC for one member, or -m ROLE[:COUNT]=SPEC for a gang')
    .argument('[spec]', 'spec of a single member (role main)')
    .option('-n, --count <n>', 'machines for the positional spec', (value) => Number.parseInt(value, 10))
    .option('-m, --member <ROLE[:COUNT]=SPEC>', 'a gang member (repeatable)', (value: string, list: string[]) => [...list, value], [] as string[])
    .option('--image <name>', 'image to boot on every member')
    .option('--lease <duration>', 'lease, e.g. 30m')
    .option('--priority <n>', 'queue priority', (value) => Number.parseInt(value, 10))
    .option('--queue-timeout <duration>', 'give up if not granted within this, e.g. 1h')
    .option('--idempotency-key <key>', 'a retried request with the same key returns the same reservation')
    .option('--wait', 'wait until every machine is ready, showing progress')
    .option('--timeout <seconds>', 'with --wait: give up after this many seconds', (value) => Number(value))
    .option('--json', 'print id, state and members as JSON')
    .action(async (spec: string | undefined, options) => {
      const members = membersFromArguments(spec, options.count, options.member, options.image);
      const reservation = await client().reserve(
        {
          members,
          ...(options.lease ? { lease: options.lease } : {}),
          ...(options.priority !== undefined ? { priority: options.priority } : {}),
          ...(options.queueTimeout ? { queueTimeout: options.queueTimeout } : {}),
          ...(options.idempotencyKey ? { idempotencyKey: options.idempotencyKey } : {}),
        },
        { renew: false },
      );
      if (!options.json) progress(`${reservation.id}: ${reservation.state}`);
      if (options.wait) await reservation.ready({ timeout: options.timeout, onProgress: (event) => progress(`${reservation.id}: ${describeEvent(event)}`) });
      print(options.json ? summary(reservation.view) : showReservation(reservation.view));
    });

  cli
    .command('ls')
    .description('your live reservations')
    .option('--all', 'every user\'s (admins)')
    .option('--ended', 'include ended ones')
    .option('--json', 'JSON')
    .action(async (options) => {
      const list = await client().list({ all: options.all, ended: options.ended });
      if (options.json) return print(list.map(summary));
      if (list.length === 0) return print('no reservations');
      print(table([['ID', 'STATE', 'OWNER', 'MACHINES', 'EXPIRES'], ...list.map((view) => [view.id, view.state, view.owner, view.allocations.map((a) => a.machine).join(',') || '-', view.expiresAt ?? '-'])]));
    });

  cli
    .command('show')
    .argument('<id>')
    .option('--json', 'JSON')
    .description('a reservation: state, lease, machines with their stages, last events')
    .action(async (id: string, options) => {
      const reservation = await client().reservation(id);
      if (options.json) return print(reservation.view);
      print(showReservation(reservation.view));
      const events = await reservation.events();
      for (const event of events.slice(-10)) print(`  ${describeEvent(event)}`);
    });

  cli
    .command('explain')
    .argument('[spec]')
    .option('--reservation <id>', 'why a reservation waits')
    .option('--json', 'JSON')
    .description('which machines a spec matches, and the first term every other machine fails')
    .action(async (spec: string | undefined, options) => {
      if (options.reservation) {
        const explained = await client().explainReservation(options.reservation);
        return print(options.json ? explained : [
          `${explained.id} ${explained.state}${explained.queuePosition ? `, queue position ${explained.queuePosition}` : ''}`,
          ...explained.members.map((member) => `${member.role} ×${member.count} (${member.spec}): matches ${member.matches.join(', ') || 'none'}; free now ${member.available.join(', ') || 'none'}`),
        ].join('\n'));
      }
      if (spec === undefined) throw new MemberSyntaxError('explain needs a SPEC or --reservation ID');
      const explained = await client().explain(spec);
      if (options.json) return print(explained);
      print([`matches: ${explained.matches.join(', ') || 'none'}`, ...explained.rejected.map((entry) => `  ${entry.machine}: ${entry.term}: ${entry.reason}`)].join('\n'));
    });

  cli
    .command('ssh')
    .argument('<id>')
    .argument('[target]', 'role, role.N or role[N] (default: the first machine)')
    .argument('[command...]', 'after --: the command to run')
    .description('log in with OpenSSH using the reservation\'s key and a pinned known_hosts')
    .action(async (id: string, target: string | undefined, command: string[]) => {
      const reservation = await client().reservation(id);
      const credentials = await reservation.credentials();
      const machine = await reservation.target(target ?? `${credentials.machines[0]?.role ?? 'main'}.${credentials.machines[0]?.index ?? 0}`);
      const dir = mkdtempSync(path.join(os.tmpdir(), 'paddock-ssh-'));
      try {
        writeFileSync(path.join(dir, 'key'), credentials.privateKey, { mode: 0o600 });
        writeFileSync(path.join(dir, 'known_hosts'), `${machine.port === 22 ? machine.host : `[${machine.host}]:${machine.port}`} ${machine.hostKey}\n`);
        const args = [
          '-i', path.join(dir, 'key'), '-o', 'IdentitiesOnly=yes', '-o', 'StrictHostKeyChecking=yes',
          '-o', `UserKnownHostsFile=${path.join(dir, 'known_hosts')}`, '-o', 'LogLevel=ERROR', '-p', String(machine.port),
          `${machine.user}@${machine.host}`, ...command,
        ];
        const code = await new Promise<number>((resolve, reject) => {
          const child = spawn('ssh', args, { stdio: 'inherit' });
          child.once('error', reject);
          child.once('exit', (status) => resolve(status ?? 255));
        });
        process.exitCode = code;
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });

  cli
    .command('release')
    .argument('<ids...>')
    .description('give machines back (idempotent)')
    .action(async (ids: string[]) => {
      const paddock = client();
      for (const id of ids) print(`${id}: ${(await (await paddock.reservation(id)).release()).state}`);
    });

  cli
    .command('renew')
    .argument('<id>')
    .description('extend the lease (up to the hard cap)')
    .action(async (id: string) => {
      const view = await (await client().reservation(id)).renew();
      print(`${id}: expires ${view.expiresAt}`);
    });

  const machines = cli.command('machines').description('the inventory');
  machines
    .command('ls')
    .option('--json', 'JSON')
    .action(async (options) => {
      const list = await client().machines();
      if (options.json) return print(list);
      print(table([['NAME', 'KIND', 'STATE', 'RESERVATION', 'LABELS'], ...list.map((machine) => [machine.name, machine.kind, machine.state, machine.reservationId ?? '-', Object.entries(machine.labels).map(([key, value]) => `${key}=${value}`).join(' ')])]));
    });
  machines
    .command('maintenance')
    .argument('<name>')
    .option('--reason <text>')
    .action(async (name: string, options) => print(`${name}: ${(await client().maintenance(name, options.reason)).state}`));
  machines
    .command('activate')
    .argument('<name>')
    .action(async (name: string) => print(`${name}: ${(await client().activate(name)).state}`));

  cli
    .command('token')
    .description('tokens (admins)')
    .command('create')
    .argument('<name>')
    .addOption(new Option('--role <role>').choices(['user', 'admin', 'agent']).default('user'))
    .option('--json', 'JSON')
    .action(async (name: string, options) => {
      const created = await client().createToken(name, options.role);
      print(options.json ? created : created.token);
    });

  return cli;
}

export async function main(argv: string[]): Promise<void> {
  try {
    await program().parseAsync(argv, { from: 'user' });
  } catch (error) {
    if (error instanceof CommanderError) {
      process.exitCode = error.exitCode === 0 ? 0 : 2;
      return;
    }
    if (process.env.PADDOCK_DEBUG === '1') console.error(error);
    if (error instanceof MemberSyntaxError) {
      console.error(`paddock: ${error.message}`);
      process.exitCode = 2;
    } else if (error instanceof PaddockError) {
      console.error(`paddock: ${error.message} (${error.code})`);
      process.exitCode = 1;
    } else {
      console.error(`paddock: ${(error as Error).message ?? String(error)}`);
      process.exitCode = 1;
    }
  }
}
