// The API's WebSocket routes (the console stream, tunnels): one `upgrade` handler for the HTTP
// server that picks the route by path. Everything is checked before the upgrade, and a refusal is
// an ordinary HTTP error answer shaped as every other. ws is loaded by the first WebSocket, not at
// start.
import type { IncomingMessage } from 'node:http';
import { STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';
import type { WebSocket, WebSocketServer } from 'ws';
import { ApiError, toApiError } from '../errors.js';
import { requestId, withLogFields, type Log } from '../../protocol/log.js';

export interface WebSocketRoute {
  /** The path it serves; its groups are the path's parameters. */
  pattern: RegExp;
  /** The largest message taken from the other end. */
  maxPayload: number;
  /** Checks the request (throwing ApiErrors), then calls `take` to upgrade. */
  accept(request: IncomingMessage, match: RegExpExecArray, url: URL, take: (open: (ws: WebSocket) => void) => Promise<boolean>): Promise<void>;
}

export interface WebSockets {
  /** For the HTTP server's `upgrade` event. */
  upgrade(request: IncomingMessage, socket: Duplex, head: Buffer): void;
  /** Ends every open WebSocket (the server is stopping). */
  close(): void;
}

export function webSockets(routes: WebSocketRoute[], log: Log): WebSockets {
  const servers = new Map<number, Promise<WebSocketServer>>();
  const serverFor = (maxPayload: number) => {
    let server = servers.get(maxPayload);
    if (!server) {
      // A browser that sends its token as a subprotocol (see `authorizationOf`) is answered with the
      // plain `paddock` protocol: the token is never echoed back.
      server = import('ws').then(({ WebSocketServer }) => {
        const created = new WebSocketServer({
          noServer: true,
          maxPayload,
          handleProtocols: (offered) => (offered.has(webSocketProtocol) ? webSocketProtocol : false),
        });
        created.on('headers', (headers, request) => headers.push(`X-Request-Id: ${ids.get(request)}`));
        return created;
      });
      servers.set(maxPayload, server);
    }
    return server;
  };
  const open = new Set<WebSocket>();
  /** The request id of each upgrade request, for the 101 answer's headers. */
  const ids = new WeakMap<IncomingMessage, string>();

  const accept = async (request: IncomingMessage, socket: Duplex, head: Buffer) => {
    const url = new URL(request.url ?? '/', 'http://paddock');
    for (const route of routes) {
      const match = route.pattern.exec(url.pathname);
      if (!match) continue;
      for (const name of url.searchParams.keys()) {
        if (/token/i.test(name)) throw new ApiError(400, 'invalid_parameter', 'send the token in the Authorization header, never in the URL');
      }
      // `take` says whether it upgraded: not when the caller hung up while the route checked.
      return route.accept(request, match, url, async (opened) => {
        const server = await serverFor(route.maxPayload);
        if (socket.destroyed) return false;
        server.handleUpgrade(request, socket, head, (ws) => {
          open.add(ws);
          ws.once('close', () => open.delete(ws));
          opened(ws);
        });
        return true;
      });
    }
    throw new ApiError(404, 'not_found', 'no WebSocket route here');
  };

  return {
    upgrade(request, socket, head) {
      socket.on('error', () => undefined);
      const given = request.headers['x-request-id'];
      const id = requestId(typeof given === 'string' ? given : undefined);
      ids.set(request, id);
      const path = new URL(request.url ?? '/', 'http://paddock').pathname;
      const matched = routes.find((route) => route.pattern.test(path));
      let status = 101;
      const started = process.hrtime.bigint();
      socket.once('close', () =>
        log.info(
          {
            request: id,
            method: request.method,
            route: matched ? routeName(matched.pattern) : '(no route)',
            status,
            ms: Number((process.hrtime.bigint() - started) / 1000n) / 1000,
          },
          'request',
        ),
      );
      withLogFields({ request: id }, () => accept(request, socket, head)).catch((error: unknown) => {
        const apiError = toApiError(error);
        if (apiError.status >= 500 && apiError.code === 'internal')
          log.error({ path: request.url?.split('?')[0], error: (error as Error).message }, 'websocket failed');
        status = apiError.status;
        refuse(socket, apiError, id);
      });
    },
    close() {
      for (const ws of open) ws.terminate();
      for (const server of servers.values()) void server.then((each) => each.close());
    },
  };
}

/** The subprotocol a browser asks for beside its token (`new WebSocket(url, ['paddock', 'paddock.bearer.TOKEN'])`). */
export const webSocketProtocol = 'paddock';
const bearerProtocol = 'paddock.bearer.';

/**
 * The Authorization header of an upgrade. A browser cannot set headers on a WebSocket, so it may
 * send its token as a subprotocol named `paddock.bearer.TOKEN` instead (as Kubernetes does): never
 * in the URL, where it would reach logs and histories, and never as a cookie, which another page
 * could make the browser send (the API has no ambient credential for a hostile page to ride on).
 */
export function authorizationOf(request: IncomingMessage): string | undefined {
  if (request.headers.authorization) return request.headers.authorization;
  const offered = (request.headers['sec-websocket-protocol'] ?? '').split(',').map((protocol) => protocol.trim());
  const bearer = offered.find((protocol) => protocol.startsWith(bearerProtocol));
  return bearer === undefined ? undefined : `Bearer ${bearer.slice(bearerProtocol.length)}`;
}

/** The handler of a WebSocket route as the OpenAPI document shows it: a plain GET (no upgrade) gets 426. */
export function upgradeRequired(ctx: { set(name: string, value: string): void }): never {
  ctx.set('Upgrade', 'websocket');
  throw new ApiError(426, 'upgrade_required', 'this is a WebSocket: send Connection: Upgrade, Upgrade: websocket');
}

/** A query parameter given at most once. */
export function one(url: URL, name: string): string | undefined {
  const values = url.searchParams.getAll(name);
  if (values.length > 1) throw new ApiError(400, 'invalid_parameter', `${name} is given once`);
  return values[0];
}

/** Only the parameters a route takes. */
export function onlyParameters(url: URL, allowed: readonly string[]): void {
  for (const name of url.searchParams.keys()) {
    if (!allowed.includes(name))
      throw new ApiError(400, 'invalid_parameter', `unknown query parameter ${JSON.stringify(name.slice(0, 40))} (allowed: ${allowed.join(', ') || 'none'})`);
  }
}

/** A route's pattern as the access log names it: `/v1/reservations/:id/tunnel`. */
const routeName = (pattern: RegExp) =>
  pattern.source
    .replace(/^\^|\$$/g, '')
    .replaceAll('\\/', '/')
    .replace(/\([^)]*\)/g, ':id');

/** An error answer in place of the upgrade, shaped as every other API error. */
function refuse(socket: Duplex, error: ApiError, id: string): void {
  if (socket.destroyed) return;
  const body = JSON.stringify({ code: error.code, message: error.message, ...(error.details === undefined ? {} : { details: error.details }), requestId: id });
  socket.end(
    `HTTP/1.1 ${error.status} ${STATUS_CODES[error.status] ?? 'Error'}\r\nContent-Type: application/json; charset=utf-8\r\nX-Request-Id: ${id}\r\n` +
      `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
  );
}
