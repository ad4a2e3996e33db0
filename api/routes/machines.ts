// /v1/machines and /v1/explain: the inventory with its states and health, maintenance, retirement,
// and spec explanations.
import { z } from 'zod';
import { text } from '../fields.js';
import type { ExplainView } from '../../protocol/api.js';
import { ApiError } from '../errors.js';
import { machineView } from '../scheduler/records.js';
import type { Scheduler } from '../scheduler/scheduler.js';
import { parseSpec, SpecError } from '../scheduler/spec.js';
import type { RouteTable } from './define.js';
import { pageOf, pageQuery, sendPage, slicePage } from '../pages.js';

const maintenanceSchema = z.strictObject({ reason: text({ max: 500 }).optional() });
const retireSchema = maintenanceSchema;
const explainSchema = z.strictObject({ spec: text({ max: 2000 }) });

export function machineRoutes(table: RouteTable, scheduler: Scheduler): void {
  table.define(
    {
      method: 'get',
      path: '/v1/machines',
      summary: 'Every machine in service with its state and health score, by name (paginated); the retired ones with retired=true',
      query: { state: 'only machines in this state', retired: 'the retired machines instead (they are left out otherwise)', ...pageQuery },
    },
    (ctx) => {
      const state = ctx.query.state;
      const retired = ctx.query.retired === '1' || ctx.query.retired === 'true' || state === 'retired';
      const machines = [...scheduler.inventory.machines.values()]
        .filter((machine) => (machine.state === 'retired') === retired && (state === undefined || machine.state === state))
        .sort((a, b) => (a.name < b.name ? -1 : 1));
      const page = slicePage(machines, (machine) => [machine.name], pageOf(ctx, 1));
      sendPage(ctx, { ...page, items: page.items.map(machineView) });
    },
  );

  table.define(
    {
      method: 'get',
      path: '/v1/machines/:name',
      summary: 'One machine, with its health score and its last provisionings (newest first; limit: how many, 1 to 100, default health.window)',
      query: { limit: 'how many of its last provisionings' },
    },
    (ctx) => {
      const machine = scheduler.machines.machine(ctx.params.name);
      const limit = ctx.query.limit === undefined ? undefined : Number(ctx.query.limit);
      if (limit !== undefined && !(Number.isInteger(limit) && limit >= 1 && limit <= 100))
        throw new ApiError(400, 'invalid_request', 'limit is a whole number from 1 to 100', { limit: ctx.query.limit });
      ctx.body = { ...machineView(machine), provisionings: scheduler.health.provisionings(machine.name, limit) };
    },
  );

  table.define(
    {
      method: 'post',
      path: '/v1/machines/:name/retire',
      summary: 'Retire a machine for good (after its current reservation): never handed out again, its history kept',
      roles: ['admin'],
      body: { schema: retireSchema, name: 'retire request' },
    },
    async (ctx, { reason }) => {
      ctx.body = machineView(await scheduler.machines.retire(ctx.params.name, reason));
    },
  );

  table.define(
    {
      method: 'post',
      path: '/v1/machines/:name/maintenance',
      summary: 'Take a machine out of service (after its current reservation)',
      roles: ['admin'],
      body: { schema: maintenanceSchema, name: 'maintenance request' },
    },
    async (ctx, { reason }) => {
      ctx.body = machineView(await scheduler.machines.setMaintenance(ctx.params.name, reason));
    },
  );

  table.define(
    { method: 'post', path: '/v1/machines/:name/activate', summary: 'Put a machine in maintenance or quarantine back in service', roles: ['admin'] },
    async (ctx) => {
      ctx.body = machineView(await scheduler.machines.activate(ctx.params.name));
    },
  );

  table.define(
    {
      method: 'post',
      path: '/v1/explain',
      summary: 'Which machines a spec matches (and why those not free now are not), and the first term every other machine fails',
      body: { schema: explainSchema, name: 'explain request' },
    },
    async (ctx, { spec: text }) => {
      let spec;
      try {
        spec = parseSpec(text);
      } catch (error) {
        if (error instanceof SpecError) throw new ApiError(400, 'invalid_spec', error.message, { spec: text, position: error.position });
        throw error;
      }
      const { matches, rejected, unavailable } = scheduler.inventory.explain(spec);
      const explained: ExplainView = { spec: text, matches, rejected, unavailable };
      ctx.body = explained;
    },
  );
}
