// /v1/reservations: create, list, show (with long-poll), events (JSON or server-sent events),
// explain, credentials, renew, release.
import type Koa from 'koa';
import { PassThrough } from 'node:stream';
import { z } from 'zod';
import { consoleSecret } from '../scheduler/console-secret.js';
import type { CredentialsView, ReservationExplainView, ReservationState } from '../../protocol/api.js';
import { ApiError, forbidden } from '../errors.js';
import { bounds, duration, integer, text } from '../fields.js';
import { parseMembers } from '../scheduler/requests.js';
import { reservationView, type Reservation } from '../scheduler/records.js';
import type { Caller } from '../../protocol/api.js';
import type { Reservations } from '../scheduler/reservations.js';
import type { Scheduler } from '../scheduler/scheduler.js';
import { isEnded } from '../scheduler/lifecycle.js';
import type { RouteTable } from './define.js';
import { pageOf, pageQuery, rowsPage, sendPage } from '../pages.js';
import { knownHostsLine } from '../../protocol/ssh-keys.js';

const caller = (ctx: Koa.Context) => ctx.state.caller as Caller;

const memberSchema = z.strictObject({
  role: text({ max: 32, pattern: /^[A-Za-z][A-Za-z0-9_-]{0,31}$/, message: 'a role is a word: letters, digits, _ and -' }),
  spec: text({ min: 1, max: 2000 }),
  count: integer(1, 1000).default(1),
  image: text({ min: 1, max: 200 }).optional(),
});

/** The body of POST /v1/reservations; what it parses to is what the scheduler takes. */
const reservationRequestSchema = z.strictObject({
  members: z.array(memberSchema).min(1).max(64),
  lease: duration('lease', bounds.leaseSeconds).optional(),
  priority: integer(-1000, 1000).default(0),
  queueTimeout: duration('queue timeout', bounds.queueTimeoutSeconds).optional(),
  idempotencyKey: text({ min: 1, max: 200 }).optional(),
});

const waitStates: Record<string, ReservationState[]> = {
  ready: ['ready'],
  granted: ['allocated', 'provisioning', 'ready', 'releasing'],
};

export function reservationRoutes(table: RouteTable, scheduler: Scheduler, options: { telnetConsoles: boolean }): void {
  const { reservations } = scheduler;
  const view = (reservation: Reservation) => reservationView(reservation, reservations.queuePosition(reservation));

  table.define(
    {
      method: 'post',
      path: '/v1/reservations',
      summary: 'Request machines: all members are granted together or the request queues',
      body: { schema: reservationRequestSchema, name: 'reservation request' },
      responses: { 201: 'created', 200: 'an earlier request with the same idempotency key', 422: 'no machine could ever satisfy it' },
    },
    async (ctx, request) => {
      const { reservation, created } = await reservations.create(caller(ctx), request);
      ctx.status = created ? 201 : 200;
      ctx.body = view(reservation);
    },
  );

  table.define(
    {
      method: 'get',
      path: '/v1/reservations',
      summary: "Your live reservations, oldest first (admins: ?all=1 for everyone's; ?ended=1: every one, newest first); paginated",
      query: { all: '1: every user (admin)', ended: '1: include ended ones', ...pageQuery },
    },
    async (ctx) => {
      const page = await reservations.list(caller(ctx), { all: ctx.query.all === '1', includeEnded: ctx.query.ended === '1' }, pageOf(ctx, 2));
      // Queue positions come from one sort of the queue for the whole page, not one per item.
      const positions = page.items.some((reservation) => reservation.state === 'queued') ? reservations.queuePositions() : undefined;
      sendPage(ctx, { ...page, items: page.items.map((reservation) => reservationView(reservation, positions?.get(reservation.id))) });
    },
  );

  table.define(
    {
      method: 'get',
      path: '/v1/reservations/:id',
      summary: 'One reservation; ?wait=ready&timeout=60 holds the answer until it is ready or ended',
      query: { wait: 'ready: long-poll until ready or ended; granted: until machines are allocated', timeout: 'seconds to wait, at most 300' },
    },
    async (ctx) => {
      let reservation = await reservations.get(caller(ctx), ctx.params.id);
      if (ctx.query.wait !== undefined) {
        const states = waitStates[String(ctx.query.wait)];
        if (!states) throw new ApiError(400, 'invalid_request', 'wait is ready (until every machine is ready) or granted (until machines are allocated)');
        const timeout = Number(ctx.query.timeout ?? 60);
        if (!Number.isFinite(timeout) || timeout < 0) throw new ApiError(400, 'invalid_request', 'timeout is a number of seconds');
        reservation = await reservations.waitFor(reservation, states, Math.min(timeout, 300) * 1000);
      }
      ctx.body = view(reservation);
    },
  );

  table.define(
    {
      method: 'get',
      path: '/v1/reservations/:id/events',
      summary: 'Its events, oldest first (paginated); with Accept: text/event-stream, a live stream that ends with the reservation',
      query: pageQuery,
    },
    async (ctx) => {
      const id = ctx.params.id;
      const reservation = await reservations.get(caller(ctx), id);
      if (ctx.get('accept').includes('text/event-stream')) {
        return stream(ctx, reservations, reservation);
      }
      const page = pageOf(ctx, 1);
      const events = await reservations.events(caller(ctx), id, page.after ? Number(page.after[0]) : 0, page.limit + 1);
      sendPage(
        ctx,
        rowsPage(events, (event) => [event.id], page),
      );
    },
  );

  table.define(
    {
      method: 'get',
      path: '/v1/reservations/:id/explain',
      summary: 'Why a reservation waits: matches per member, why those not free now are not (offline, unreachable, …), and its queue position',
    },
    async (ctx) => {
      const reservation = await reservations.get(caller(ctx), ctx.params.id);
      const explained: ReservationExplainView = {
        id: reservation.id,
        state: reservation.state,
        queuePosition: reservations.queuePosition(reservation),
        members: parseMembers(reservation.members).map((member) => {
          const { matches, rejected, available, unavailable } = scheduler.inventory.explain(member.spec);
          const waiting = reservation.allocations
            .filter((allocation) => allocation.role === member.role && allocation.state === 'waiting')
            .map((allocation) => ({
              index: allocation.index,
              code: allocation.failure?.code ?? 'infrastructure_failed',
              failedOn: allocation.failedOn ?? [],
              waitingUntil: allocation.waitingUntil ?? '',
            }));
          return {
            role: member.role,
            count: member.count,
            spec: member.spec.text,
            matches,
            rejected,
            available,
            unavailable,
            ...(waiting.length ? { waiting } : {}),
          };
        }),
      };
      ctx.body = explained;
    },
  );

  table.define({ method: 'get', path: '/v1/reservations/:id/credentials', summary: 'The private key and pinned host keys (the owner only)' }, async (ctx) => {
    const reservation = await reservations.get(caller(ctx), ctx.params.id);
    if (reservation.owner !== caller(ctx).name) throw forbidden('only the owner of a reservation gets its credentials');
    if (isEnded(reservation.state)) throw new ApiError(409, 'lease_expired', `reservation ${reservation.id} is ${reservation.state}`);
    const machines = reservation.allocations
      .filter((allocation) => allocation.state === 'ready' && allocation.host && allocation.hostKey)
      .map((allocation) => ({
        role: allocation.role,
        index: allocation.index,
        machine: allocation.machine,
        host: allocation.host!,
        port: allocation.port!,
        user: allocation.user!,
        hostKey: allocation.hostKey!,
        via: scheduler.inventory.get(allocation.machine)?.access ?? 'direct',
      }));
    const credentials: CredentialsView = {
      reservationId: reservation.id,
      privateKey: reservation.privateKey,
      publicKey: reservation.publicKey,
      knownHosts: machines.map((machine) => `${knownHostsLine(machine.host, machine.port, machine.hostKey)}\n`).join(''),
      machines,
    };
    const relays = reservation.allocations.filter((allocation) => allocation.state === 'ready' && allocation.console);
    if (options.telnetConsoles && relays.length > 0) {
      credentials.console = {
        secret: consoleSecret(reservation),
        relays: relays.map((allocation) => ({ role: allocation.role, index: allocation.index, machine: allocation.machine, ...allocation.console! })),
      };
    }
    ctx.set('Cache-Control', 'no-store');
    ctx.body = credentials;
  });

  table.define(
    {
      method: 'post',
      path: '/v1/reservations/:id/renew',
      summary: 'Heartbeat: extends the lease by its duration, up to the hard cap',
      responses: { 200: 'renewed', 409: 'already ended' },
    },
    async (ctx) => {
      ctx.body = view(await reservations.renew(caller(ctx), ctx.params.id));
    },
  );

  table.define({ method: 'delete', path: '/v1/reservations/:id', summary: 'Release (idempotent); a queued request is cancelled' }, async (ctx) => {
    ctx.body = view(await reservations.release(caller(ctx), ctx.params.id));
  });
}

/** Server-sent events: what happened so far, then every new event until the reservation ends. */
async function stream(ctx: Koa.Context, reservations: Reservations, reservation: Reservation): Promise<void> {
  const body = new PassThrough();
  ctx.status = 200;
  ctx.set({ 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache', Connection: 'keep-alive' });
  ctx.body = body;
  let last = Number(ctx.get('last-event-id') || 0);
  const send = (event: { id: number; type: string }) => {
    if (event.id <= last) return;
    last = event.id;
    body.write(`id: ${event.id}\nevent: ${event.type}\ndata: ${JSON.stringify(event)}\n\n`);
  };
  const buffered: Parameters<typeof send>[0][] = [];
  let replaying = true;
  const unsubscribe = reservations.subscribe(reservation.id, (event) => {
    if (replaying) buffered.push(event);
    else {
      send(event);
      if (event.type === 'state' && isEnded(event.to as Reservation['state'])) close();
    }
  });
  const keepAlive = setInterval(() => body.write(': keep-alive\n\n'), 15_000);
  const close = () => {
    clearInterval(keepAlive);
    unsubscribe();
    body.end();
  };
  ctx.req.on('close', close);
  for (const event of await reservations.events(ctx.state.caller as Caller, reservation.id, last)) send(event);
  for (const event of buffered) send(event);
  replaying = false;
  if (isEnded(reservation.state)) close();
}
