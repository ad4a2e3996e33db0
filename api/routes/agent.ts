// /v1/agent: how lab-host agents pull work and report back. Agents need the agent or admin role,
// and an agent token speaks only for the agent of its own name.
import type Koa from 'koa';
import { z } from 'zod';
import { readBody } from '../body.js';
import { requireRole } from '../auth.js';
import { stages, type Role } from '../contract.js';
import { ApiError } from '../errors.js';
import type { Scheduler } from '../scheduler/scheduler.js';
import type { RouteTable } from './define.js';

const agentName = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._@-]{0,62}$/, 'agent names use letters, digits, . _ @ - (up to 63)');

const claimSchema = z.strictObject({
  agent: agentName,
  kinds: z.array(z.string()).min(1),
  resume: z.boolean().default(false),
  wait: z.number().min(0).max(60).default(0),
});

const reportSchema = z.strictObject({
  agent: agentName,
  report: z.discriminatedUnion('kind', [
    z.strictObject({ kind: z.literal('stage'), stage: z.enum(stages) }),
    z
      .strictObject({
        kind: z.literal('ready'),
        host: z.string().optional(),
        port: z.number().int().min(1).max(65535).optional(),
        user: z.string().optional(),
        hostKey: z.string().optional(),
        console: z.strictObject({ host: z.string(), port: z.number().int().min(1).max(65535) }).optional(),
      })
      .refine((ready) => ready.console !== undefined || (ready.host !== undefined && ready.port !== undefined && ready.user !== undefined), {
        message: 'a ready machine has SSH access (host, port, user, and the host key when it was seen), a console relay, or both',
      }),
    z.strictObject({
      kind: z.literal('failed'),
      reason: z.string().max(20000),
      fault: z.enum(['infrastructure', 'request']),
      stage: z.enum(stages).optional(),
      code: z.string().regex(/^[a-z][a-z0-9_]{0,47}$/).optional(),
    }),
    z.strictObject({ kind: z.literal('released') }),
  ]),
});

/** An agent token speaks only for the agent of its own name (an admin may speak for any). */
function checkAgent(ctx: Koa.Context, agent: string): string {
  const caller = requireRole(ctx, 'agent', 'admin');
  if (caller.role === 'agent' && caller.name !== agent) {
    throw new ApiError(403, 'forbidden', `this token is for agent ${caller.name}, not ${agent}`, { agent: caller.name });
  }
  return agent;
}

export function agentRoutes(table: RouteTable, scheduler: Scheduler): void {
  const roles: Role[] = ['agent', 'admin'];
  table.define(
    { method: 'post', path: '/v1/agent/claim', summary: 'Take provisioning and release tasks (long-polls up to `wait` seconds)', roles, body: claimSchema },
    async (ctx) => {
      const claim = await readBody(ctx, claimSchema, 'claim');
      ctx.body = { tasks: await scheduler.claim(checkAgent(ctx, claim.agent), claim.kinds, claim.resume, claim.wait * 1000) };
    },
  );

  table.define(
    { method: 'post', path: '/v1/agent/tasks/:id/report', summary: 'Report a stage, readiness, a failure or a finished release (only on a task this agent holds)', roles, body: reportSchema },
    async (ctx) => {
      const { agent, report } = await readBody(ctx, reportSchema, 'report');
      await scheduler.report(checkAgent(ctx, agent), ctx.params.id, report);
      ctx.status = 204;
    },
  );

  table.define(
    { method: 'get', path: '/v1/agent/machines', summary: 'Machines of the given kinds with their live reservations, for leak cleanup', roles, query: { kinds: 'comma-separated kinds' } },
    (ctx) => {
      ctx.body = scheduler.agentMachines(String(ctx.query.kinds ?? '').split(',').filter(Boolean));
    },
  );
}
