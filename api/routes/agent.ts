// /v1/agent: how lab-host agents pull work and report back. Agents need the agent or admin role.
import { z } from 'zod';
import { readBody } from '../body.js';
import { requireRole } from '../auth.js';
import { stages } from '../contract.js';
import type { Scheduler } from '../scheduler/scheduler.js';
import type { RouteTable } from './define.js';

const claimSchema = z.strictObject({
  agent: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/),
  kinds: z.array(z.string()).min(1),
  resume: z.boolean().default(false),
  wait: z.number().min(0).max(60).default(0),
});

const reportSchema = z.strictObject({
  agent: z.string(),
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

export function agentRoutes(table: RouteTable, scheduler: Scheduler): void {
  table.define(
    { method: 'post', path: '/v1/agent/claim', summary: 'Take provisioning and release tasks (long-polls up to `wait` seconds)', roles: ['agent', 'admin'], body: claimSchema },
    async (ctx) => {
      requireRole(ctx, 'agent', 'admin');
      const claim = await readBody(ctx, claimSchema, 'claim');
      ctx.body = { tasks: await scheduler.claim(claim.agent, claim.kinds, claim.resume, claim.wait * 1000) };
    },
  );

  table.define(
    { method: 'post', path: '/v1/agent/tasks/:id/report', summary: 'Report a stage, readiness, a failure or a finished release', roles: ['agent', 'admin'], body: reportSchema },
    async (ctx) => {
      requireRole(ctx, 'agent', 'admin');
      const { agent, report } = await readBody(ctx, reportSchema, 'report');
      await scheduler.report(agent, ctx.params.id, report);
      ctx.status = 204;
    },
  );

  table.define(
    { method: 'get', path: '/v1/agent/machines', summary: 'Machines of the given kinds with their live reservations, for leak cleanup', roles: ['agent', 'admin'], query: { kinds: 'comma-separated kinds' } },
    (ctx) => {
      requireRole(ctx, 'agent', 'admin');
      ctx.body = scheduler.agentMachines(String(ctx.query.kinds ?? '').split(',').filter(Boolean));
    },
  );
}
