// Every route is declared through `define`, which registers it on the router and records it for
// the OpenAPI document, so the document cannot forget a route. `define` also checks the caller's
// role before the handler runs: a route that names no roles is for people (users and admins), so a
// new route is closed to agent and runner tokens unless it says otherwise.
import type Router from '@koa/router';
import type Koa from 'koa';
import { z } from 'zod';
import type { Role } from '../contract.js';
import { ApiError } from '../errors.js';

/** The roles of a route that names none: the people's routes. Agents and runner hosts have their own. */
export const peopleRoles: readonly Role[] = ['user', 'admin'];
/** Every role: routes any valid token may call (whoami). */
export const everyRole: readonly Role[] = ['user', 'admin', 'agent', 'runner'];

export interface RouteDoc {
  method: 'get' | 'post' | 'put' | 'delete';
  path: string;
  summary: string;
  /** false only for /healthz. */
  auth?: boolean;
  /** Who may call it; absent: users and admins (`peopleRoles`). */
  roles?: readonly Role[];
  body?: z.ZodType;
  query?: Record<string, string>;
  responses?: Record<number, string>;
}

export class RouteTable {
  readonly routes: RouteDoc[] = [];

  constructor(
    readonly router: Router,
    private readonly authenticate: Koa.Middleware,
  ) {}

  define(doc: RouteDoc, handler: (ctx: Koa.Context) => Promise<void> | void): void {
    this.routes.push(doc);
    const roles = doc.roles ?? peopleRoles;
    const run = async (ctx: Koa.Context) => {
      if (doc.auth !== false) checkRole(ctx, roles);
      await handler(ctx);
    };
    this.router[doc.method](doc.path, async (ctx, next) => {
      const context = ctx as unknown as Koa.Context;
      if (doc.auth === false) return run(context);
      return this.authenticate(context, () => run(context).then(() => next()));
    });
  }
}

function checkRole(ctx: Koa.Context, roles: readonly Role[]): void {
  const role = (ctx.state.caller as { role: Role }).role;
  if (!roles.includes(role)) throw new ApiError(403, 'forbidden', `this needs the ${roles.join(' or ')} role; your token has ${role}`, { roles, role });
}

export function openApiDocument(routes: RouteDoc[], version: string): unknown {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const route of routes) {
    const path = route.path.replace(/:([A-Za-z]+)/g, '{$1}');
    const parameters = [
      ...[...route.path.matchAll(/:([A-Za-z]+)/g)].map((match) => ({ name: match[1], in: 'path', required: true, schema: { type: 'string' } })),
      ...Object.entries(route.query ?? {}).map(([name, description]) => ({ name, in: 'query', required: false, description, schema: { type: 'string' } })),
    ];
    const responses: Record<string, unknown> = {};
    for (const [status, description] of Object.entries(route.responses ?? { 200: 'OK' })) responses[status] = { description };
    responses.default = { description: 'error', content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } } };
    paths[path] ??= {};
    paths[path][route.method] = {
      summary: route.summary,
      ...(route.auth === false ? { security: [] } : {}),
      ...(route.auth === false ? {} : { description: `Needs role: ${(route.roles ?? peopleRoles).join(' or ')}.` }),
      ...(parameters.length > 0 ? { parameters } : {}),
      ...(route.body ? { requestBody: { required: true, content: { 'application/json': { schema: z.toJSONSchema(route.body, { io: 'input', unrepresentable: 'any' }) } } } } : {}),
      responses,
    };
  }
  return {
    openapi: '3.1.0',
    info: { title: 'Paddock', version },
    security: [{ bearer: [] }],
    components: {
      securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } },
      schemas: {
        Error: {
          type: 'object',
          required: ['code', 'message'],
          properties: { code: { type: 'string' }, message: { type: 'string' }, details: {} },
        },
      },
    },
    paths,
  };
}
