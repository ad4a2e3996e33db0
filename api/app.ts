// createApp(deps) builds the Koa application; it starts nothing and has no side effects, so tests
// and `paddock serve` put the parts together the same way.
import Router from '@koa/router';
import Koa from 'koa';
import { authenticate, type Tokens } from './auth.js';
import { ApiError, errorMiddleware } from './errors.js';
import type { ConsoleLogs } from './console-logs.js';
import { agentRoutes } from './routes/agent.js';
import { consoleStreamRoute, consoleStreamSocket } from './routes/console-stream.js';
import { consoleRoutes } from './routes/consoles.js';
import { dashboard } from './dashboard.js';
import { imageRoutes } from './routes/images.js';
import { jobRoutes } from './routes/jobs.js';
import { runnerRoutes } from './routes/runner.js';
import type { JobService } from './jobs/service.js';
import type { ImageCatalog } from './images.js';
import { openApiDocument, RouteTable } from './routes/define.js';
import { machineRoutes } from './routes/machines.js';
import { reservationRoutes } from './routes/reservations.js';
import { leaseActionRoutes } from './routes/lease-actions.js';
import { tokenRoutes } from './routes/tokens.js';
import { tunnelRoutes, tunnelSockets } from './routes/tunnels.js';
import { webSockets, type WebSockets } from './routes/websockets.js';
import { TunnelBroker } from './tunnels.js';
import type { Scheduler } from './scheduler/scheduler.js';
import { version } from '../protocol/version.js';
import type { Log } from '../protocol/log.js';
import { requestLog } from './request-log.js';

export { version };

export interface AppDeps {
  scheduler: Scheduler;
  tokens: Tokens;
  images: ImageCatalog;
  jobs: JobService;
  log: Log;
  /** The console logs agents send (DATA/consoles), each capped. */
  consoles: ConsoleLogs;
  /** Whether credentials carry the board consoles' telnet relays (config `consoles.telnet`). */
  telnetConsoles: boolean;
  /** Measures every request (api/metrics.ts), when metrics are served. */
  requestMetrics?: Koa.Middleware;
}

export function createApp({ scheduler, tokens, images, jobs, log, consoles, telnetConsoles, requestMetrics }: AppDeps): {
  app: Koa;
  table: RouteTable;
  /** The WebSocket routes (console streams, tunnels), for the server's `upgrade` event. */
  streams: WebSockets;
  tunnels: TunnelBroker;
} {
  const tunnels = new TunnelBroker();
  const app = new Koa();
  app.proxy = false;
  const router = new Router();
  const table = new RouteTable(router, authenticate(tokens));
  table.define({ method: 'get', path: '/healthz', summary: 'Liveness: answers without a token; 503 store_failing while commits fail', auth: false }, (ctx) => {
    if (scheduler.storeFailure()) throw new ApiError(503, 'store_failing', 'the database refuses writes; changes are refused until a commit succeeds');
    ctx.body = { ok: true, version, database: scheduler.databaseDialect, role: 'leader' };
  });
  table.define(
    { method: 'get', path: '/healthz/leader', summary: 'For load balancers: 200 on the server that leads (a follower answers 503 not_leader)', auth: false },
    (ctx) => {
      ctx.body = { ok: true, role: 'leader' };
    },
  );
  table.define({ method: 'get', path: '/v1/openapi.json', summary: 'This document' }, (ctx) => {
    ctx.body = openApiDocument(table.routes, version);
  });
  tokenRoutes(table, tokens);
  machineRoutes(table, scheduler);
  reservationRoutes(table, scheduler, { telnetConsoles });
  leaseActionRoutes(table, scheduler);
  consoleRoutes(table, scheduler, consoles);
  consoleStreamRoute(table);
  imageRoutes(table, images);
  agentRoutes(table, scheduler, consoles);
  jobRoutes(table, jobs);
  runnerRoutes(table, jobs.dispatch);
  tunnelRoutes(table, tunnels);
  // A client that stops reading an event stream is not an error worth a log line.
  app.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code === 'ERR_STREAM_PREMATURE_CLOSE' || error.code === 'ECONNRESET' || error.code === 'EPIPE') return;
    log.error({ error: `${error.name}: ${error.message}` }, 'unexpected error');
  });
  app.use(requestLog(log));
  if (requestMetrics) app.use(requestMetrics);
  app.use(errorMiddleware(log));
  app.use(dashboard(log));
  app.use(router.routes());
  app.use(router.allowedMethods({ throw: true }));
  const streams = webSockets([consoleStreamSocket(scheduler, tokens, consoles, tunnels, log), ...tunnelSockets(scheduler, tokens, tunnels)], log);
  return { app, table, streams, tunnels };
}
