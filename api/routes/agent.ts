// /v1/agent: how lab-host agents pull work and report back. Agents need the agent or admin role,
// and an agent token speaks only for the agent of its own name, which is its lab host's: it sees and
// moves only the machines whose `labHost` is that name. /v1/agents lists them for admins.
import type Koa from 'koa';
import { z } from 'zod';
import { machineProblemLimits, stages, type Caller, type Role } from '../../protocol/api.js';
import { warmFailuresKept } from '../../protocol/agent.js';
import { ApiError } from '../errors.js';
import { integer, machineText, name, text } from '../fields.js';
import { readRaw } from '../body.js';
import type { ConsoleLogs } from '../console-logs.js';
import type { Scheduler } from '../scheduler/scheduler.js';
import type { AgentInfo } from '../scheduler/lab-hosts.js';
import { hungUp, type RouteTable } from './define.js';
import { offsetOf } from './follow.js';
import { pageOf, pageQuery, sendPage, slicePage } from '../pages.js';

const agentName = name('agent', { at: true });
const port = integer(1, 65535);
/** An address or host name as an agent saw it. */
const host = text({ max: 255 });

const claimSchema = z.strictObject({
  agent: agentName,
  kinds: z
    .array(text({ max: 40 }))
    .min(1)
    .max(32),
  resume: z.boolean().default(false),
  wait: z.number().min(0).max(60).default(0),
  /** The agent's Paddock version and its clock (ISO 8601), shown on `paddock agents ls`. */
  version: text({ max: 40 }).optional(),
  clock: text({ max: 40, pattern: /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)$/, message: 'an ISO 8601 time' }).optional(),
});

const heartbeatSchema = z.strictObject({
  agent: agentName,
  version: claimSchema.shape.version,
  clock: claimSchema.shape.clock,
  /** What the agent's checks found wrong, one entry per machine of its lab host: the whole list, so the others are fine. */
  problems: z
    .array(z.strictObject({ machine: name('machine'), reason: text({ min: 1, max: machineProblemLimits.reason }) }))
    .max(machineProblemLimits.count)
    .refine((problems) => new Set(problems.map((problem) => problem.machine)).size === problems.length, 'one entry per machine')
    .optional(),
  /** The kinds whose machines the problems speak for (every kind without it). */
  kinds: claimSchema.shape.kinds.optional(),
});

const reportSchema = z.strictObject({
  agent: agentName,
  report: z.discriminatedUnion('kind', [
    z.strictObject({ kind: z.literal('stage'), stage: z.enum(stages) }),
    z
      .strictObject({
        kind: z.literal('ready'),
        host: host.optional(),
        port: port.optional(),
        user: text({ max: 64 }).optional(),
        hostKey: text({ max: 4000 }).optional(),
        console: z.strictObject({ host, port }).optional(),
      })
      .refine((ready) => ready.console !== undefined || (ready.host !== undefined && ready.port !== undefined && ready.user !== undefined), {
        message: 'a ready machine has SSH access (host, port, user, and the host key when it was seen), a console relay, or both',
      }),
    z.strictObject({
      kind: z.literal('failed'),
      reason: machineText(20000),
      fault: z.enum(['infrastructure', 'request']),
      stage: z.enum(stages).optional(),
      code: text({ max: 48, pattern: /^[a-z][a-z0-9_]{0,47}$/, message: 'a code is lower-case letters, digits and _' }).optional(),
    }),
    z.strictObject({ kind: z.literal('released') }),
    z.strictObject({ kind: z.literal('off') }),
  ]),
});

const warmSchema = z.strictObject({
  agent: agentName,
  /** Its warm machines that are ready, one entry per machine: the whole list. */
  warm: z
    .array(z.strictObject({ machine: name('machine'), image: text({ min: 1, max: 200 }) }))
    .max(machineProblemLimits.count)
    .refine((warm) => new Set(warm.map((each) => each.machine)).size === warm.length, 'one entry per machine'),
  /** Warm boots that failed since its last report. */
  failed: z
    .array(
      z.strictObject({
        machine: name('machine'),
        image: text({ min: 1, max: 200 }),
        id: text({ max: 64, pattern: /^warm-[a-z0-9]{1,48}$/, message: 'a warm boot id is warm- and lower-case letters or digits' }),
        reason: machineText(20000),
        fault: z.enum(['infrastructure', 'request']),
        code: text({ max: 48, pattern: /^[a-z][a-z0-9_]{0,47}$/, message: 'a code is lower-case letters, digits and _' }),
        stage: z.enum(stages).optional(),
        seconds: z
          .number()
          .min(0)
          .max(30 * 86400),
      }),
    )
    .max(warmFailuresKept)
    .optional(),
});

/** An agent token speaks only for the agent of its own name (an admin may speak for any). */
export function checkAgent(ctx: Koa.Context, agent: string): string {
  const caller = ctx.state.caller as Caller;
  if (caller.role === 'agent' && caller.name !== agent) {
    throw new ApiError(403, 'forbidden', `this token is for agent ${caller.name}, not ${agent}`, { agent: caller.name });
  }
  return agent;
}

/** What an agent says of itself in a claim or a heartbeat. */
function agentInfo(body: { version?: string; clock?: string }): AgentInfo {
  return { ...(body.version === undefined ? {} : { version: body.version }), ...(body.clock === undefined ? {} : { clock: body.clock }) };
}

/** The most bytes of console one request carries (agents send 256 KiB chunks). */
const consoleChunkMax = 1024 * 1024;

export function agentRoutes(table: RouteTable, scheduler: Scheduler, consoles: ConsoleLogs): void {
  const { agents } = scheduler;
  const roles: Role[] = ['agent', 'admin'];
  table.define(
    {
      method: 'post',
      path: '/v1/agent/claim',
      summary: 'Take provisioning and release tasks (long-polls up to `wait` seconds)',
      roles,
      body: { schema: claimSchema, name: 'claim' },
    },
    async (ctx, claim) => {
      checkAgent(ctx, claim.agent);
      ctx.body = { tasks: await agents.claim(claim.agent, claim.kinds, claim.resume, claim.wait * 1000, agentInfo(claim), hungUp(ctx)) };
    },
  );

  table.define(
    {
      method: 'post',
      path: '/v1/agent/heartbeat',
      summary:
        'Say the agent is alive (with its version and clock) while it does other things than claim, and which of its machines it cannot reach; ' +
        'answers how often to send it',
      roles,
      body: { schema: heartbeatSchema, name: 'heartbeat' },
      responses: { 200: '{ intervalSeconds }', 403: "a problem names a machine that is not of this agent's lab host (not_your_task): nothing changes" },
    },
    async (ctx, heartbeat) => {
      checkAgent(ctx, heartbeat.agent);
      const checked = heartbeat.problems === undefined ? undefined : { problems: heartbeat.problems, ...(heartbeat.kinds ? { kinds: heartbeat.kinds } : {}) };
      ctx.body = { intervalSeconds: await agents.heartbeat(heartbeat.agent, agentInfo(heartbeat), checked) };
    },
  );

  table.define(
    {
      method: 'post',
      path: '/v1/agent/warm',
      summary:
        "Report the agent's warm machines that are ready (machines not of its lab host are ignored, so their VMs are stopped); " +
        'answers which machines to keep warm with which image, and how often to report',
      roles,
      body: { schema: warmSchema, name: 'warm report' },
      responses: { 200: '{ targets, held, intervalSeconds }' },
    },
    (ctx, report) => {
      ctx.body = scheduler.warm.report(checkAgent(ctx, report.agent), report.warm, report.failed);
    },
  );

  table.define(
    {
      method: 'post',
      path: '/v1/agent/tasks/:id/report',
      summary: 'Report a stage, readiness, a failure or a finished release (only on a task this agent holds)',
      roles,
      body: { schema: reportSchema, name: 'report' },
    },
    async (ctx, { agent, report }) => {
      await agents.report(checkAgent(ctx, agent), ctx.params.id, report);
      ctx.status = 204;
    },
  );

  table.define(
    {
      method: 'get',
      path: '/v1/agent/machines',
      summary: "The machines of an agent's lab host of the given kinds with their live reservations, for leak cleanup",
      roles,
      query: {
        kinds: 'comma-separated kinds',
        agent: "the agent (an agent token: its own name, the default; an admin: any, or every lab host's machines without it)",
      },
    },
    async (ctx) => {
      const caller = ctx.state.caller as Caller;
      const agent = typeof ctx.query.agent === 'string' ? checkAgent(ctx, ctx.query.agent) : caller.role === 'agent' ? caller.name : undefined;
      ctx.body = await agents.agentMachines(
        agent,
        String(ctx.query.kinds ?? '')
          .split(',')
          .filter(Boolean),
      );
    },
  );

  table.define(
    {
      method: 'post',
      path: '/v1/agent/consoles/:id/:machine',
      summary:
        "Append to a machine's console log (the body's raw bytes, from byte `offset` of the lab host's log; bytes the API has are skipped); " +
        'answers the size to send from next, and whether the log reached its cap',
      roles,
      query: { offset: "where the body starts in the lab host's log" },
      responses: {
        200: '{ size, capped }',
        403: "not a machine of this agent's lab host (not_your_task)",
        404: 'no such reservation, or not one of its machines',
        409: 'offset_ahead: the API holds fewer bytes than offset (details.size)',
        413: 'a chunk over 1 MiB',
      },
    },
    async (ctx) => {
      const caller = ctx.state.caller as Caller;
      const reservation = await scheduler.reservations.consoleOf(caller.role === 'agent' ? caller.name : undefined, ctx.params.id, ctx.params.machine);
      const bytes = await readRaw(ctx, consoleChunkMax);
      ctx.body = await consoles.append(reservation.id, ctx.params.machine, offsetOf(ctx), bytes);
    },
  );

  table.define(
    {
      method: 'get',
      path: '/v1/agents',
      summary: 'The lab hosts and their agents: state, version, last heard, machines, tasks held, warnings, by name (admins; paginated)',
      roles: ['admin'],
      query: pageQuery,
    },
    (ctx) => {
      sendPage(
        ctx,
        slicePage(agents.agentViews(), (agent) => [agent.name], pageOf(ctx, 1)),
      );
    },
  );
}
