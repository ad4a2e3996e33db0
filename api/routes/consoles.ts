// /v1/reservations/:id/console: the serial console a reservation's machines printed (boards and
// VMs), kept after release. `?follow=1` keeps the answer open and streams new output until the
// reservation has ended. The logs are files the agent writes under the data directory, so this
// serves the agents running inside `paddock serve`.
import { open, readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import type Koa from 'koa';
import { ApiError } from '../errors.js';
import type { Caller } from '../scheduler/service.js';
import type { Scheduler } from '../scheduler/scheduler.js';
import type { RouteTable } from './define.js';

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
      ctx.type = 'text/plain; charset=utf-8';
      ctx.set('Cache-Control', 'no-store');
      const body = new PassThrough();
      ctx.body = body;
      void stream(ctx, body, dir, name, wanted, follow, () => !scheduler.isLive(reservation.id));
    },
  );
}

/** Copies the log into `body`; when following, waits for the file to appear and to grow. */
async function stream(ctx: Koa.Context, body: PassThrough, dir: string, name: string | undefined, wanted: string | undefined, follow: boolean, ended: () => boolean): Promise<void> {
  let offset = 0;
  let closed = false;
  let finishing = false;
  ctx.req.once('close', () => (closed = true));
  try {
    for (;;) {
      const file = name ?? wanted ?? (await readdir(dir).catch(() => [] as string[])).find((entry) => entry.endsWith('.log'));
      if (file) {
        name = file;
        const size = await stat(path.join(dir, file)).then((info) => info.size, () => 0);
        if (size > offset) {
          const handle = await open(path.join(dir, file), 'r');
          try {
            const buffer = Buffer.alloc(Math.min(size - offset, 1024 * 1024));
            const { bytesRead } = await handle.read(buffer, 0, buffer.length, offset);
            offset += bytesRead;
            body.write(buffer.subarray(0, bytesRead));
          } finally {
            await handle.close();
          }
          continue;
        }
      }
      if (!follow || closed || finishing) break;
      // Once the reservation has ended, one more pass sends what came in before the end.
      if (ended()) {
        finishing = true;
        continue;
      }
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  } finally {
    body.end();
  }
}
