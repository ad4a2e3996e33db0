// /v1/reservations/:id/power and /v1/reservations/:id/boot: what an owner (or an admin) does to a
// member's machine during the lease. Both answer 202 with the reservation at once; the member is
// `provisioning` until its agent reports it ready again (or off, or failed), which a client waits
// for with GET /v1/reservations/:id?wait=ready.
import type Koa from 'koa';
import { z } from 'zod';
import { powerActions, type Caller } from '../../protocol/api.js';
import { integer, text } from '../fields.js';
import { reservationView } from '../scheduler/records.js';
import type { Scheduler } from '../scheduler/scheduler.js';
import type { LeaseActionRequest } from '../scheduler/lease-actions.js';
import type { RouteTable } from './define.js';

const member = {
  role: text({ max: 32, pattern: /^[A-Za-z][A-Za-z0-9_-]{0,31}$/, message: 'a role is a word: letters, digits, _ and -' }),
  index: integer(0, 999).default(0),
};

const powerSchema = z.strictObject({ ...member, action: z.enum(powerActions) });

const bootSchema = z.strictObject({
  ...member,
  image: text({ min: 1, max: 200 }),
  // Typed at a bootloader on boards: printable ASCII only, as a bundle's own cmdline.
  cmdline: text({ max: 4096, pattern: /^[\x20-\x7e]*$/, message: 'a kernel command line holds printable ASCII only' }).optional(),
});

const responses = {
  202: 'asked for: the member is provisioning until it is ready again (off for power off)',
  404: 'no such reservation or member',
  409: 'the reservation is not ready or has ended (not_ready, lease_expired), the member is busy (member_busy), or its kind cannot (power_not_supported)',
};

export function leaseActionRoutes(table: RouteTable, scheduler: Scheduler): void {
  const act = async (ctx: Koa.Context, body: { role: string; index: number }, request: LeaseActionRequest) => {
    const reservation = await scheduler.leaseActions.act(ctx.state.caller as Caller, ctx.params.id, { role: body.role, index: body.index }, request);
    ctx.status = 202;
    ctx.body = reservationView(reservation);
  };

  table.define(
    {
      method: 'post',
      path: '/v1/reservations/:id/power',
      summary: "Power a member's machine off, on, or cycle it (a reboot that keeps its disk); readiness is tracked again",
      body: { schema: powerSchema, name: 'power request' },
      responses,
    },
    (ctx, body) => act(ctx, body, { type: 'power', power: body.action }),
  );

  table.define(
    {
      method: 'post',
      path: '/v1/reservations/:id/boot',
      summary: "Boot another image on a member's machine, keeping the lease and the other members; readiness is tracked again",
      body: { schema: bootSchema, name: 'boot request' },
      responses,
    },
    (ctx, body) => act(ctx, body, { type: 'boot', image: body.image, ...(body.cmdline !== undefined ? { cmdline: body.cmdline } : {}) }),
  );
}
