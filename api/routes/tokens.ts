// /v1/tokens and /v1/whoami. Admins create, list, revoke and rotate any token; any token may revoke
// or rotate itself (a leaked token is ended by its holder at once), and nothing else.
import type Koa from 'koa';
import { z } from 'zod';
import { bounds, duration, name } from '../fields.js';
import type { Tokens } from '../auth.js';
import type { Caller } from '../../protocol/api.js';
import { forbidden } from '../domain-error.js';
import { everyRole, type RouteTable } from './define.js';
import { pageOf, pageQuery, sendPage, slicePage } from '../pages.js';

const expires = duration('token expiry', bounds.tokenExpirySeconds).optional();

const tokenSchema = z.strictObject({
  name: name('token', { at: true }),
  role: z.enum(['user', 'admin', 'agent', 'runner']).default('user'),
  expires,
});

const rotateSchema = z.strictObject({ expires });

/** Admins act on any token; anyone else only on its own. */
function mayManage(ctx: Koa.Context, target: string, action: string): void {
  const caller = ctx.state.caller as Caller;
  if (caller.role === 'admin') return;
  if (caller.name !== target) throw forbidden(`only an admin may ${action} another's token; your token is ${caller.name}`);
}

export function tokenRoutes(table: RouteTable, tokens: Tokens): void {
  table.define(
    { method: 'get', path: '/v1/whoami', summary: 'The name and role of the token used, and when it expires if it does', roles: everyRole },
    async (ctx) => {
      const caller = ctx.state.caller as Caller;
      const { expiresAt } = await tokens.get(caller.name).catch(() => ({ expiresAt: undefined }));
      ctx.body = { name: caller.name, role: caller.role, ...(expiresAt ? { expiresAt } : {}) };
    },
  );

  table.define(
    {
      method: 'post',
      path: '/v1/tokens',
      summary: 'Create a token (`expires`: a duration, e.g. 30d); the answer is the only time it is shown',
      roles: ['admin'],
      body: { schema: tokenSchema, name: 'token request' },
      responses: { 201: 'created' },
    },
    async (ctx, { name, role, expires }) => {
      ctx.status = 201;
      ctx.set('Cache-Control', 'no-store');
      ctx.body = await tokens.create(name, role, expires === undefined ? {} : { expiresInSeconds: expires });
    },
  );

  table.define(
    { method: 'get', path: '/v1/tokens', summary: 'Token names, roles and expiries, by name (paginated)', roles: ['admin'], query: pageQuery },
    async (ctx) => {
      sendPage(
        ctx,
        slicePage(await tokens.list(), (token) => [token.name], pageOf(ctx, 1)),
      );
    },
  );

  table.define(
    { method: 'delete', path: '/v1/tokens/:name', summary: 'Revoke a token at once (admins: any; others: their own)', roles: everyRole },
    async (ctx) => {
      mayManage(ctx, ctx.params.name, 'revoke');
      if ((ctx.state.caller as Caller).name === ctx.params.name) ctx.state.endsOwnToken = true;
      await tokens.revoke(ctx.params.name);
      ctx.status = 204;
    },
  );

  table.define(
    {
      method: 'post',
      path: '/v1/tokens/:name/rotate',
      summary:
        'A new secret for a token, same name and role; the old one ends at once. `expires` sets a new lifetime, else the old one is kept (admins: any; others: their own)',
      roles: everyRole,
      body: { schema: rotateSchema, name: 'rotation' },
      responses: { 201: 'rotated' },
    },
    async (ctx, { expires }) => {
      mayManage(ctx, ctx.params.name, 'rotate');
      if ((ctx.state.caller as Caller).name === ctx.params.name) ctx.state.endsOwnToken = true;
      ctx.status = 201;
      ctx.set('Cache-Control', 'no-store');
      ctx.body = await tokens.reissue(ctx.params.name, expires === undefined ? {} : { expiresInSeconds: expires });
    },
  );
}
