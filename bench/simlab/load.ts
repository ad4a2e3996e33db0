// What the simlab benchmark's clients do against the API, as CI jobs would:
// - cyclers reserve one board (with an idempotency key, sent twice now and then: the second answer
//   must be the first reservation) and release it as soon as it is granted, without waiting for it
//   to boot: their rate is the scheduler's and the store's, what grows with the lab, while the
//   boots they start and abort keep the agents busy;
// - jobs reserve a board, wait until it is ready, fetch its credentials (the private key, the
//   board's host key), hold it for a job's length and release it: they keep boards booting, failing
//   and being retried beside the cyclers, and their time to ready is a board's, not Paddock's.
import { setTimeout as sleep } from 'node:timers/promises';
import { request, type Server } from '../server.js';

export const boardMember = { role: 'board', spec: 'type=simboard', count: 1 };
const granted = new Set(['allocated', 'provisioning', 'ready']);
const ended = new Set(['released', 'failed', 'expired', 'cancelled']);

export interface Client {
  server: Server;
  token: string;
}

interface ReservationAnswer {
  id: string;
  state: string;
  allocations: { host?: string; port?: number; user?: string; hostKey?: string }[];
}

/**
 * One request of the client to its server. A follower of several servers on one database answers
 * 307 with the leader's URL (on this host): the request goes there, with the token, as the client
 * library does.
 */
async function send(client: Client, method: string, pathname: string, body?: unknown): ReturnType<typeof request> {
  const answer = await request(client.server.port, client.token, method, pathname, body);
  const location = answer.headers.location;
  if (answer.status !== 307 || !location) return answer;
  const leader = new URL(location, `http://127.0.0.1:${client.server.port}`);
  return request(Number(leader.port), client.token, method, `${leader.pathname}${leader.search}`, body);
}

function fail(what: string, answer: { status: number; body: unknown }): never {
  throw new Error(`${what}: HTTP ${answer.status} ${JSON.stringify(answer.body).slice(0, 500)}`);
}

async function reserve(client: Client, key: string, again: boolean): Promise<ReservationAnswer> {
  const body = { members: [boardMember], lease: 600, queueTimeout: 600, idempotencyKey: key };
  const created = await send(client, 'POST', '/v1/reservations', body);
  if (created.status !== 201) fail('reserve', created);
  const reservation = created.body as unknown as ReservationAnswer;
  if (again) {
    const repeated = await send(client, 'POST', '/v1/reservations', body);
    const same = repeated.body as unknown as ReservationAnswer;
    if (repeated.status !== 200 || same.id !== reservation.id)
      throw new Error(`the same idempotency key made another reservation: ${reservation.id}, then HTTP ${repeated.status} ${same.id}`);
  }
  return reservation;
}

/** Long-polls until the reservation is in one of `states` or has ended. */
async function waitFor(client: Client, reservation: ReservationAnswer, wait: 'granted' | 'ready'): Promise<ReservationAnswer> {
  const states = wait === 'ready' ? new Set(['ready']) : granted;
  let current = reservation;
  while (!states.has(current.state) && !ended.has(current.state)) {
    const answer = await send(client, 'GET', `/v1/reservations/${current.id}?wait=${wait}&timeout=60`);
    if (answer.status !== 200) fail(`wait ${wait}`, answer);
    current = answer.body as unknown as ReservationAnswer;
  }
  return current;
}

async function release(client: Client, id: string): Promise<void> {
  const released = await send(client, 'DELETE', `/v1/reservations/${id}`);
  if (released.status !== 200 || !['releasing', 'released'].includes(released.body.state)) fail('release', released);
}

export interface Tally {
  cycles: number;
  /** Reservations that ended before they were granted (their queue timeout). */
  ungranted: number;
  /** Every reservation made, for the time in queue from the stored history. */
  reservations: Set<string>;
  /** Jobs: seconds from the request to every machine ready. */
  readySeconds: number[];
  /** Jobs whose reservation failed (every retry of a board failed too). */
  jobsFailed: number;
}

export const newTally = (): Tally => ({ cycles: 0, ungranted: 0, reservations: new Set(), readySeconds: [], jobsFailed: 0 });

/** Reserve+release cycles until `done()`; every 16th request is sent twice with its key. */
export async function cycler(client: Client, name: string, tally: Tally, done: () => boolean): Promise<void> {
  for (let index = 0; !done(); index++) {
    const reservation = await waitFor(client, await reserve(client, `${name}-${index}`, index % 16 === 15), 'granted');
    tally.reservations.add(reservation.id);
    if (!granted.has(reservation.state)) tally.ungranted += 1;
    await release(client, reservation.id);
    if (granted.has(reservation.state)) tally.cycles += 1;
  }
}

/** Jobs until `done()`: reserve, wait until ready, check the credentials, hold for `holdMs`, release. */
export async function job(client: Client, name: string, tally: Tally, holdMs: number, done: () => boolean): Promise<void> {
  for (let index = 0; !done(); index++) {
    const started = process.hrtime.bigint();
    const reservation = await waitFor(client, await reserve(client, `${name}-${index}`, false), 'ready');
    tally.reservations.add(reservation.id);
    if (reservation.state === 'ready') {
      tally.readySeconds.push(Number(process.hrtime.bigint() - started) / 1e9);
      const credentials = await send(client, 'GET', `/v1/reservations/${reservation.id}/credentials`);
      const body = credentials.body as unknown as { privateKey?: string; machines?: { hostKey?: string }[] };
      if (credentials.status !== 200 || !body.privateKey?.includes('PRIVATE KEY') || !body.machines?.[0]?.hostKey?.startsWith('ssh-ed25519 '))
        fail('credentials of a ready board', credentials);
      await sleep(holdMs);
    } else tally.jobsFailed += 1;
    await release(client, reservation.id);
  }
}

/** Median milliseconds of one reservation answered granted, one at a time (the release outside the timing). */
export async function allocationLatency(client: Client, name: string, samples: number): Promise<number> {
  const times: number[] = [];
  for (let index = 0; index < samples; index++) {
    const started = process.hrtime.bigint();
    const reservation = await reserve(client, `${name}-${index}`, false);
    const elapsed = Number(process.hrtime.bigint() - started) / 1e6;
    if (granted.has(reservation.state)) times.push(elapsed);
    await release(client, (await waitFor(client, reservation, 'granted')).id);
  }
  return percentile(times, 0.5);
}

/** The nearest-rank percentile (NaN of nothing). */
export function percentile(values: readonly number[], share: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(share * sorted.length) - 1))];
}
