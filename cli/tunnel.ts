// `paddock tunnel ID MEMBER [PORT]`: a member's SSH port (or a board's console relay) through the
// API on stdin/stdout, for `ssh -o ProxyCommand`. `paddock ssh-config ID` writes the reservation's
// key and pinned host keys under a private directory and prints an OpenSSH config block per member,
// so scp, rsync and ansible work unchanged (through the tunnel where the access says `via: paddock`).
import { mkdir, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { Command } from 'commander';
import { shellQuote } from '../protocol/ssh.js';
import { knownHostsLine } from '../protocol/ssh-keys.js';
import type { CredentialsView } from '../protocol/api.js';
import { Paddock, PaddockError, type Reservation } from '../client/index.js';
import { memberMachine } from './console.js';

/** The command that opens a tunnel, as ssh runs it (this very program). */
export function proxyCommand(id: string, member: string): string {
  return [process.execPath, process.argv[1], 'tunnel', id, member, '22'].map(shellQuote).join(' ');
}

/** The ssh Host alias of a member, also the name its host key is pinned under. */
export const hostAlias = (id: string, machine: Pick<CredentialsView['machines'][number], 'role' | 'index'>) => `paddock-${id}-${machine.role}.${machine.index}`;

async function tunnel(id: string, member: string, port: string): Promise<void> {
  if (!['22', 'ssh', 'console'].includes(port)) throw new PaddockError(`a tunnel goes to port 22 (ssh) or console, not ${port}`, 'port_not_allowed');
  const reservation = await new Paddock().reservation(id);
  const machine = memberMachine(reservation, member);
  const stream = await reservation.tunnel(machine, port === 'console' ? 'console' : 'ssh');
  // stdin's end ends our half; the far end closing ends the command.
  await Promise.all([pipeline(process.stdin, stream).catch(() => undefined), pipeline(stream, process.stdout)]);
}

/** Writes the key and known_hosts under `dir` and returns the config text. */
export async function sshConfig(reservation: Reservation, dir: string): Promise<string> {
  const credentials = await reservation.credentials();
  if (credentials.machines.length === 0)
    throw new PaddockError(`reservation ${reservation.id} has no member ready for SSH (it is ${reservation.state})`, 'not_ready');
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const key = path.join(dir, 'key');
  const knownHosts = path.join(dir, 'known_hosts');
  await writeFile(key, credentials.privateKey, { mode: 0o600 });
  await writeFile(knownHosts, credentials.machines.map((machine) => `${knownHostsLine(hostAlias(reservation.id, machine), 22, machine.hostKey)}\n`).join(''), {
    mode: 0o600,
  });
  const blocks = credentials.machines.map((machine) => {
    const member = `${machine.role}.${machine.index}`;
    return [
      `Host ${hostAlias(reservation.id, machine)}`,
      `  HostName ${machine.host}`,
      `  Port ${machine.port}`,
      `  User ${machine.user}`,
      `  IdentityFile ${quoteOption(key)}`,
      '  IdentitiesOnly yes',
      `  HostKeyAlias ${hostAlias(reservation.id, machine)}`,
      `  UserKnownHostsFile ${quoteOption(knownHosts)}`,
      '  GlobalKnownHostsFile /dev/null',
      '  StrictHostKeyChecking yes',
      '  UpdateHostKeys no',
      ...(machine.via === 'paddock' ? [`  ProxyCommand ${proxyCommand(reservation.id, member)}`] : []),
    ].join('\n');
  });
  return `# Paddock reservation ${reservation.id}: ssh -F THIS_FILE ${hostAlias(reservation.id, credentials.machines[0])}\n${blocks.join('\n\n')}\n`;
}

/** ssh_config quotes a value holding spaces with double quotes. */
const quoteOption = (value: string) => (/[\s"]/.test(value) ? `"${value.replace(/"/g, '\\"')}"` : value);

export function addTunnelCommands(cli: Command): void {
  cli
    .command('tunnel')
    .description("a member's SSH port (22) or console relay through Paddock on stdin/stdout, for ssh's ProxyCommand; paddock tunnel ID MEMBER [22|console]")
    .argument('<id>')
    .argument('<member>', 'role, role.N or role[N]')
    .argument('[port]', '22 (ssh) or console', '22')
    .action(tunnel);

  cli
    .command('ssh-config')
    .description('an OpenSSH config block per member (key and pinned host keys written under --dir), so scp, rsync and ansible log in as paddock ssh does')
    .argument('<id>')
    .option('--dir <dir>', 'where the key and known_hosts go (default: ~/.paddock/reservations/ID, mode 0700)')
    .action(async (id: string, options: { dir?: string }) => {
      const reservation = await new Paddock().reservation(id);
      const dir = options.dir ?? path.join(os.homedir(), '.paddock', 'reservations', reservation.id);
      process.stdout.write(await sshConfig(reservation, dir));
    });
}
