// /v1/reservations/:id/console: the serial console a reservation's machines printed (boards and
// VMs), kept after release. `?follow=1` keeps the answer open and streams new output until the
// reservation has ended. The logs are files the agent writes under the data directory, so this
// serves the agents running inside `paddock serve`.
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { ApiError } from '../errors.js';
import type { Caller } from '../scheduler/service.js';
import type { Scheduler } from '../scheduler/scheduler.js';
import type { RouteTable } from './define.js';
import { streamLog } from './follow.js';

export function consoleRoutes(table: RouteTable, scheduler: Scheduler, consolesDir: string): void {
  table.define(
    {
      method: 'get',
      path: '/v1/reservations/:id/console',
      summary: "A machine's serial console log, as text; `follow=1` streams it live until the reservation ends",
      query: { machine: 'which machine (default: the first with a log)', follow: '1 to keep streaming new output' },
      responses: { 200: 'text/plain', 404: 'no console log (yet)' },
    },
    async (ctx) => {
      const reservation = await scheduler.get(ctx.state.caller as Caller, ctx.params.id);
      const dir = path.join(consolesDir, reservation.id);
      const logs = (await readdir(dir).catch(() => [] as string[])).filter((name) => name.endsWith('.log')).sort();
      const wanted = typeof ctx.query.machine === 'string' ? `${ctx.query.machine}.log` : undefined;
      const name = wanted ? logs.find((log) => log === wanted) : (reservation.allocations.map((allocation) => `${allocation.machine}.log`).find((log) => logs.includes(log)) ?? logs[0]);
      const follow = ctx.query.follow === '1' || ctx.query.follow === 'true';
      if (!name && !follow) throw new ApiError(404, 'not_found', `reservation ${reservation.id} has no console log${wanted ? ` for ${ctx.query.machine as string}` : ''}`);
      const locate = async () => {
        const file = name ?? wanted ?? (await readdir(dir).catch(() => [] as string[])).find((entry) => entry.endsWith('.log'));
        return file === undefined ? undefined : path.join(dir, file);
      };
      streamLog(ctx, locate, follow, () => !scheduler.isLive(reservation.id));
    },
  );
}
