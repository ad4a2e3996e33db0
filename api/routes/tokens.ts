// /v1/tokens (admins) and /v1/whoami.
import { z } from 'zod';
import { name } from '../fields.js';
import type { Tokens } from '../auth.js';
import type { Caller } from '../../protocol/api.js';
import { everyRole, type RouteTable } from './define.js';
import { pageOf, pageQuery, sendPage, slicePage } from '../pages.js';

const tokenSchema = z.strictObject({
  name: name('token', { at: true }),
  role: z.enum(['user', 'admin', 'agent', 'runner']).default('user'),
});

export function tokenRoutes(table: RouteTable, tokens: Tokens): void {
  table.define({ method: 'get', path: '/v1/whoami', summary: 'The name and role of the token used', roles: everyRole }, (ctx) => {
    const caller = ctx.state.caller as Caller;
    ctx.body = { name: caller.name, role: caller.role };
  });

  table.define(
    {
      method: 'post',
      path: '/v1/tokens',
      summary: 'Create a token; the answer is the only time it is shown',
      roles: ['admin'],
      body: { schema: tokenSchema, name: 'token request' },
      responses: { 201: 'created' },
    },
    async (ctx, { name, role }) => {
      ctx.status = 201;
      ctx.set('Cache-Control', 'no-store');
      ctx.body = await tokens.create(name, role);
    },
  );

  table.define(
    { method: 'get', path: '/v1/tokens', summary: 'Token names and roles, by name (paginated)', roles: ['admin'], query: pageQuery },
    async (ctx) => {
      sendPage(
        ctx,
        slicePage(await tokens.list(), (token) => [token.name], pageOf(ctx, 1)),
      );
    },
  );

  table.define({ method: 'delete', path: '/v1/tokens/:name', summary: 'Revoke a token', roles: ['admin'] }, async (ctx) => {
    await tokens.revoke(ctx.params.name);
    ctx.status = 204;
  });
}
