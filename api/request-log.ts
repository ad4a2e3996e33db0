// Request ids and the access log. Every answer carries `X-Request-Id`: the caller's (a proxy's) when
// it is short and plain, else a fresh one; a hostile value is replaced, never logged. Every line
// logged while the request is served carries it as `request`, and error bodies carry it as
// `requestId` so a user can quote it. One access line per request once its answer is sent (or cut):
// method, the route pattern (never the path with its ids, never the query string), status,
// duration, bytes sent and the request id. Headers are never logged.
import type Koa from 'koa';
import { requestId, withLogFields, type Log } from '../protocol/log.js';

export function requestLog(log: Log): Koa.Middleware {
  return async (ctx, next) => {
    const id = requestId(ctx.get('x-request-id') || undefined);
    ctx.state.requestId = id;
    ctx.set('X-Request-Id', id);
    const started = process.hrtime.bigint();
    const socket = ctx.req.socket;
    const sentBefore = socket.bytesWritten;
    ctx.res.once('close', () => {
      const route = ctx._matchedRoute;
      log.info(
        {
          request: id,
          method: ctx.method,
          route: typeof route === 'string' ? route : '(no route)',
          status: ctx.res.statusCode,
          ms: Number((process.hrtime.bigint() - started) / 1000n) / 1000,
          bytes: socket.bytesWritten - sentBefore,
          ...(ctx.res.writableFinished ? {} : { aborted: true }),
        },
        'request',
      );
    });
    await withLogFields({ request: id }, next);
  };
}
