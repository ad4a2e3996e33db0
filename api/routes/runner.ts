// /v1/runner: what runner hosts call (role runner). They pull runs (long-poll, so no inbound
// connection is needed), send heartbeats, stream output and report how each run ended. See
// protocol/runner.ts.
import type Koa from 'koa';
import { z } from 'zod';
import { readRaw } from '../body.js';
import { ApiError } from '../errors.js';
import { integer, machineText, name, text } from '../fields.js';
import type { Caller, Role } from '../../protocol/api.js';
import type { Dispatch } from '../jobs/dispatch.js';
import { hungUp, type RouteTable } from './define.js';
import { pageOf, pageQuery, sendPage, slicePage } from '../pages.js';

const runnerName = name('runner');
const claimSchema = z.strictObject({
  runner: runnerName,
  slots: integer(0, 256),
  fresh: z.boolean().default(false),
  wait: z.number().min(0).max(60).default(20),
});
const heartbeatSchema = z.strictObject({ runner: runnerName, runs: z.array(text({ max: 40 })).max(256) });
const startedSchema = z.strictObject({ runner: runnerName });
const finishedSchema = z.strictObject({
  runner: runnerName,
  outcome: z.enum(['passed', 'failed', 'timed_out', 'cancelled']),
  exitCode: integer(-(2 ** 31), 2 ** 31 - 1).optional(),
  signal: text({ max: 20 }).optional(),
  reason: machineText(20000).optional(),
  fault: z.enum(['infrastructure', 'request']).optional(),
  result: z.unknown().optional(),
});

/** The most output one log request may carry. */
const maxChunk = 4 * 1024 * 1024;

/** A runner token speaks only for the runner host of its own name (an admin may speak for any). */
function checkRunner(ctx: Koa.Context, runner: string): string {
  const caller = ctx.state.caller as Caller;
  if (caller.role === 'runner' && caller.name !== runner) {
    throw new ApiError(403, 'forbidden', `this token is for runner host ${caller.name}, not ${runner}`);
  }
  return runner;
}

export function runnerRoutes(table: RouteTable, dispatch: Dispatch): void {
  const roles: Role[] = ['runner', 'admin'];
  table.define(
    {
      method: 'get',
      path: '/v1/runners',
      summary: 'The runner hosts heard from, when last, and the runs they hold, by name (admins; paginated)',
      roles: ['admin'],
      query: pageQuery,
    },
    (ctx) => {
      sendPage(
        ctx,
        slicePage(dispatch.runnerHosts(), (runner) => [runner.name], pageOf(ctx, 1)),
      );
    },
  );

  table.define(
    {
      method: 'post',
      path: '/v1/runner/claim',
      summary: 'Take up to `slots` queued runs (long-poll up to `wait` seconds)',
      roles,
      body: { schema: claimSchema, name: 'claim' },
    },
    async (ctx, { runner, slots, fresh, wait }) => {
      checkRunner(ctx, runner);
      ctx.body = { runs: await dispatch.claim(runner, slots, fresh, wait * 1000, hungUp(ctx)) };
    },
  );

  table.define(
    {
      method: 'post',
      path: '/v1/runner/heartbeat',
      summary: 'Say the runner host is alive and which runs it runs; the answer lists those cancelled',
      roles,
      body: { schema: heartbeatSchema, name: 'heartbeat' },
    },
    async (ctx, { runner, runs }) => {
      ctx.body = dispatch.heartbeat(checkRunner(ctx, runner), runs);
    },
  );

  table.define(
    {
      method: 'post',
      path: '/v1/runner/runs/:id/started',
      summary: 'The script of a run has started',
      roles,
      body: { schema: startedSchema, name: 'started' },
    },
    async (ctx, { runner }) => {
      await dispatch.started(checkRunner(ctx, runner), ctx.params.id);
      ctx.status = 204;
    },
  );

  table.define(
    {
      method: 'post',
      path: '/v1/runner/runs/:id/log',
      summary: "Append to a run's output (text/plain body; ?runner=NAME&offset=BYTES, where the chunk starts in what the runner host sent)",
      roles,
      query: {
        runner: 'the runner host',
        offset: 'where the chunk starts in the output the runner host has sent for the run (a chunk sent again is stored once)',
      },
    },
    async (ctx) => {
      const runner = runnerName.safeParse(ctx.query.runner);
      if (!runner.success) throw new ApiError(400, 'invalid_request', "runner is the runner host's name");
      // Checked by the route (a whole number); left out by a runner host older than offsets, whose chunks are appended as they come.
      const offset = ctx.query.offset as string | undefined;
      const chunk = await readRaw(ctx, maxChunk);
      await dispatch.appendLog(checkRunner(ctx, runner.data), ctx.params.id, chunk, offset === undefined ? undefined : Number(offset));
      ctx.status = 204;
    },
  );

  table.define(
    { method: 'post', path: '/v1/runner/runs/:id/finished', summary: 'How a run ended', roles, body: { schema: finishedSchema, name: 'finish' } },
    async (ctx, finish) => {
      await dispatch.finished(checkRunner(ctx, finish.runner), ctx.params.id, finish);
      ctx.status = 204;
    },
  );
}
