// /v1/reservations/:id/console: the serial console a reservation's machines printed (boards and
// VMs), kept after release. `?follow=1` keeps the answer open and streams new output until the
// reservation has ended. The logs are the API's copies (console-logs.ts), which every lab host's
// agent sends as its machines print.
//
// Only the reservation's own machines are served: `machine` must name one of its allocations, and
// the file's path is built from the reservation's id and that allocation's machine name, never from
// the query text.
import type { ConsoleLogs } from '../console-logs.js';
import { ApiError } from '../errors.js';
import type { Allocation, Reservation } from '../scheduler/records.js';
import type { Caller } from '../../protocol/api.js';
import type { Scheduler } from '../scheduler/scheduler.js';
import type { RouteTable } from './define.js';
import { offsetOf, streamLog } from './follow.js';

export function consoleRoutes(table: RouteTable, scheduler: Scheduler, consoles: ConsoleLogs): void {
  table.define(
    {
      method: 'get',
      path: '/v1/reservations/:id/console',
      summary: "A machine's serial console log, as text; `follow=1` streams it live until the reservation ends",
      query: {
        machine: "which of the reservation's machines (default: the first with a log; the answer's Paddock-Machine header says which)",
        follow: '1 to keep streaming new output',
        offset: 'bytes to skip: where a broken follow stopped',
      },
      responses: { 200: 'text/plain', 400: 'machine is not a machine name', 404: 'not a machine of this reservation, or no console log (yet)' },
    },
    async (ctx) => {
      const reservation = await scheduler.reservations.get(ctx.state.caller as Caller, ctx.params.id);
      const follow = ctx.query.follow === '1' || ctx.query.follow === 'true';
      let allocation = reservationMachine(reservation, ctx.query.machine);
      if (!allocation) {
        // A member waiting for another machine (machine '') has no console.
        for (const candidate of reservation.allocations.filter((each) => each.machine !== '')) {
          if ((await consoles.size(reservation.id, candidate.machine)) > 0) {
            allocation = candidate;
            break;
          }
        }
      }
      allocation ??= reservation.allocations.find((each) => each.machine !== '');
      const file = allocation && consoles.file(reservation.id, allocation.machine);
      const exists = allocation !== undefined && (await consoles.size(reservation.id, allocation.machine)) > 0;
      if (!exists && !follow)
        throw new ApiError(404, 'not_found', `reservation ${reservation.id} has no console log${allocation ? ` for ${allocation.machine}` : ''}`);
      const start = offsetOf(ctx);
      if (allocation) ctx.set('Paddock-Machine', allocation.machine);
      streamLog(
        ctx,
        async () => file,
        follow,
        () => !scheduler.reservations.isLive(reservation.id),
        start,
      );
    },
  );
}

const machineName = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

/**
 * The allocation the `machine` query parameter names, undefined when it is absent. Throws 400 for
 * anything that is not a machine name (a path, a list, control characters) and 404 for a machine
 * that is not one of the reservation's own.
 */
export function reservationMachine(reservation: Reservation, machine: unknown): Allocation | undefined {
  if (machine === undefined) return undefined;
  if (typeof machine !== 'string' || !machineName.test(machine)) {
    throw new ApiError(400, 'invalid_parameter', 'machine must be one machine name (letters, digits, . _ -)', { field: 'machine' });
  }
  const allocation = reservation.allocations.find((candidate) => candidate.machine === machine);
  if (!allocation) throw new ApiError(404, 'not_found', `machine ${machine} is not one of reservation ${reservation.id}'s machines`);
  return allocation;
}
