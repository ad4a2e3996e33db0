// Every route is declared through `define`, which registers it on the router and records it for
// the OpenAPI document, so the document cannot forget a route. `define` also enforces what the
// declaration says before the handler runs: the caller's role (a route that names no roles is for
// people, users and admins, so a new route is closed to agent and runner tokens unless it says
// otherwise), the path and query parameters, and the JSON body, which the handler receives parsed.
import type Router from '@koa/router';
import type Koa from 'koa';
import { z } from 'zod';
import type { Role } from '../../protocol/api.js';
import { readBody } from '../body.js';
import { ApiError } from '../errors.js';
import { pathParameters, queryParameters } from '../fields.js';

/** The roles of a route that names none: the people's routes. Agents and runner hosts have their own. */
export const peopleRoles: readonly Role[] = ['user', 'admin'];
/** Every role: routes any valid token may call (whoami). */
export const everyRole: readonly Role[] = ['user', 'admin', 'agent', 'runner'];

export interface RouteDoc<Body extends z.ZodType = z.ZodType> {
  method: 'get' | 'post' | 'put' | 'delete';
  path: string;
  summary: string;
  /** false only for /healthz. */
  auth?: boolean;
  /** Who may call it; absent: users and admins (`peopleRoles`). */
  roles?: readonly Role[];
  /** The JSON body's schema, and what error messages call it (`invalid claim: …`). */
  body?: { schema: Body; name: string };
  query?: Record<string, string>;
  responses?: Record<number, string>;
}

export class RouteTable {
  readonly routes: RouteDoc[] = [];

  constructor(
    readonly router: Router,
    private readonly authenticate: Koa.Middleware,
  ) {}

  define<Body extends z.ZodType = z.ZodNever>(doc: RouteDoc<Body>, handler: (ctx: Koa.Context, body: z.infer<Body>) => Promise<void> | void): void {
    for (const name of pathParameterNames(doc.path))
      if (!pathParameters[name]) throw new Error(`${doc.path}: no schema for the path parameter ${name} in api/fields.ts`);
    for (const name of Object.keys(doc.query ?? {}))
      if (!queryParameters[name]) throw new Error(`${doc.path}: no schema for the query parameter ${name} in api/fields.ts`);
    this.routes.push(doc as RouteDoc);
    const roles = doc.roles ?? peopleRoles;
    const run = async (ctx: Koa.Context) => {
      if (doc.auth !== false) checkRole(ctx, roles);
      checkParameters(ctx, doc);
      const body = doc.body ? await readBody(ctx, doc.body.schema, doc.body.name) : (undefined as z.infer<Body>);
      await handler(ctx, body);
    };
    this.router[doc.method](doc.path, async (ctx, next) => {
      const context = ctx as unknown as Koa.Context;
      if (doc.auth === false) return run(context);
      return this.authenticate(context, () => run(context).then(() => next()));
    });
  }
}

const pathParameterNames = (path: string) => [...path.matchAll(/:([A-Za-z]+)/g)].map((match) => match[1]);

/**
 * Every path parameter against its schema, and every query parameter: declared by the route, given
 * once, and matching its schema. Handlers then only see checked values (400 invalid_parameter).
 */
function checkParameters(ctx: Koa.Context, doc: Pick<RouteDoc, 'path' | 'query'>): void {
  const refuse = (where: 'path' | 'query', name: string, message: string) =>
    new ApiError(400, 'invalid_parameter', `${where} parameter ${name}: ${message}`, { in: where, parameter: name });
  for (const name of pathParameterNames(doc.path)) {
    const result = pathParameters[name].safeParse(ctx.params[name]);
    if (!result.success) throw refuse('path', name, result.error.issues[0].message);
  }
  for (const [name, value] of Object.entries(ctx.query)) {
    if (!doc.query || !(name in doc.query)) {
      const known = Object.keys(doc.query ?? {});
      throw refuse('query', name.slice(0, 40), `not a parameter of this route${known.length > 0 ? ` (it takes ${known.join(', ')})` : ''}`);
    }
    if (typeof value !== 'string') throw refuse('query', name, 'given more than once');
    const result = queryParameters[name].safeParse(value);
    if (!result.success) throw refuse('query', name, result.error.issues[0].message);
  }
}

function checkRole(ctx: Koa.Context, roles: readonly Role[]): void {
  const role = (ctx.state.caller as { role: Role }).role;
  if (!roles.includes(role)) throw new ApiError(403, 'forbidden', `this needs the ${roles.join(' or ')} role; your token has ${role}`, { roles, role });
}

function parameterSchema(schema: z.ZodType): unknown {
  const { $schema: _draft, ...rest } = z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any' }) as Record<string, unknown>;
  return rest;
}

export function openApiDocument(routes: RouteDoc[], version: string): unknown {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const route of routes) {
    const path = route.path.replace(/:([A-Za-z]+)/g, '{$1}');
    const parameters = [
      ...pathParameterNames(route.path).map((name) => ({ name, in: 'path', required: true, schema: parameterSchema(pathParameters[name]) })),
      ...Object.entries(route.query ?? {}).map(([name, description]) => ({
        name,
        in: 'query',
        required: false,
        description,
        schema: parameterSchema(queryParameters[name]),
      })),
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
      ...(route.body
        ? {
            requestBody: {
              required: true,
              content: { 'application/json': { schema: z.toJSONSchema(route.body.schema, { io: 'input', unrepresentable: 'any' }) } },
            },
          }
        : {}),
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
          properties: { code: { type: 'string' }, message: { type: 'string' }, details: {}, requestId: { type: 'string' } },
        },
      },
    },
    paths,
  };
}

/** Whether the caller hung up before its answer was sent: a long-poll whose worker went away. */
export function hungUp(ctx: Koa.Context): () => boolean {
  let gone = false;
  ctx.res.once('close', () => (gone = !ctx.res.writableFinished));
  return () => gone;
}
