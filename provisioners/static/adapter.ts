// What the static provisioner does on a host over its root admin login: add a reservation's key to
// the tenant's authorized_keys file, take it out again and end the tenant's processes, list whose
// keys are there. Every line Paddock adds has one shape: an expiry at the reservation's hard cap,
// `restrict,pty`, the key, and the tag `paddock:<reservationId>` as its comment, so a line of any
// other shape is one Paddock did not write, and a key left behind stops working at the hard cap.
import { shellQuote } from '../../protocol/ssh.js';
import { normalizeKeyLine, scrub, sshExec, type SshClient } from '../../protocol/ssh.js';
import { addScript, listScript, releaseScript } from './scripts.js';

const tagPrefix = 'paddock:';
const reservationIdPattern = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/**
 * The only line shape Paddock writes (POSIX ERE, for grep -E on the host). `restrict` turns off
 * forwarding, the agent, X11 and ~/.ssh/rc; `pty` gives back the terminal an interactive login needs.
 */
export const expectedLinePattern = '^expiry-time="[0-9]{14}Z",restrict,pty [A-Za-z0-9@._-]+ [A-Za-z0-9+/]+=* paddock:[A-Za-z0-9][A-Za-z0-9._-]*$';

/** The comment that marks a reservation's lines. */
export function reservationTag(reservationId: string): string {
  if (!reservationIdPattern.test(reservationId)) throw new Error(`not a usable reservation id: ${JSON.stringify(reservationId)}`);
  return `${tagPrefix}${reservationId}`;
}

/** OpenSSH's `expiry-time` value for an instant, in UTC (`Z`, OpenSSH 8.9 and later). */
export function expiryTime(at: Date): string {
  return `${at.toISOString().replace(/\D/g, '').slice(0, 14)}Z`;
}

/** The authorized_keys line for a reservation: valid until `expiresAt`, restricted, tagged. */
export function taggedKeyLine(publicKey: string, reservationId: string, expiresAt: Date): string {
  return `expiry-time="${expiryTime(expiresAt)}",restrict,pty ${normalizeKeyLine(publicKey)} ${reservationTag(reservationId)}`;
}

function command(script: string, ...words: string[]): string {
  return ['sh', '-c', shellQuote(script), 'paddock-sh', ...words.map(shellQuote)].join(' ');
}

async function run(client: SshClient, what: string, commandLine: string, stdin?: string): Promise<string> {
  const result = await sshExec(client, commandLine, stdin === undefined ? {} : { stdin });
  if (result.code !== 0) {
    const detail = scrub(result.stderr.trim()).slice(0, 500);
    throw new Error(`${what} failed (exit ${result.code ?? 'by signal'})${detail ? `: ${detail}` : ''}`);
  }
  return result.stdout;
}

/** Where a tenant's keys live and who she is. */
export interface TenantFile {
  file: string;
  user: string;
}

/**
 * Adds the reservation's key line to the tenant's file, valid until `expiresAt`; adding it again
 * changes nothing. Refuses (and adds nothing) when the tenant could change the file or a folder above it.
 */
export async function addReservationKey(client: SshClient, tenant: TenantFile, reservationId: string, publicKey: string, expiresAt: Date): Promise<void> {
  const line = taggedKeyLine(publicKey, reservationId, expiresAt);
  await run(client, `adding the key of ${reservationId} for ${tenant.user} to ${tenant.file}`, command(addScript, tenant.file, tenant.user), `${line}\n`);
}

/** What a release found on the host. */
export interface ReleaseResult {
  /** Lines of this reservation removed. */
  removed: number;
  /** Lines of other reservations still there (the tenant's processes are then left alone). */
  others: number;
  /** Lines Paddock did not write, removed; `strangeLines` shows the first few, keys scrubbed. */
  unexpected: number;
  strangeLines: string[];
  /** Processes of the tenant that were killed. */
  killed: number;
  /** Steps of the file's path the tenant could change, with why (empty when safe). */
  unsafe: string;
}

/**
 * Removes the reservation's lines and every line Paddock did not write, and, when no other
 * reservation's key is left, kills all the tenant's processes. Releasing twice is fine.
 */
export async function releaseTenant(client: SshClient, tenant: TenantFile, reservationId: string): Promise<ReleaseResult> {
  const output = await run(
    client,
    `releasing ${reservationId} from ${tenant.user} (${tenant.file})`,
    command(releaseScript, tenant.file, tenant.user, reservationTag(reservationId), expectedLinePattern),
  );
  const [counts = '', unsafe = '', ...strange] = output.split('\n');
  const field = (name: string) => Number(new RegExp(`(?:^| )${name}=(\\d+)`).exec(counts)?.[1] ?? 0);
  return {
    removed: field('mine'),
    others: field('others'),
    unexpected: field('unexpected'),
    strangeLines: strange.filter((line) => line !== '').map(scrub),
    killed: field('killed'),
    unsafe: unsafe.replace(/^unsafe=/, '').trim(),
  };
}

/** Reservation ids with at least one tagged line in the tenant's file, sorted, each once. */
export async function listReservations(client: SshClient, file: string): Promise<string[]> {
  const output = await run(client, `listing the reservation keys in ${file}`, command(listScript, file));
  const ids = output
    .split('\n')
    .map((tag) => tag.trim().slice(tagPrefix.length))
    .filter((id) => reservationIdPattern.test(id));
  return [...new Set(ids)].sort();
}
