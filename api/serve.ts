// The API process: Koa, SQLite, the scheduler, the job service and the image store, listening.
// `paddock serve` (cli/serve.ts) starts this and, on the embedded default, a lab-host agent beside
// it that talks to it over loopback HTTP.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import path from 'node:path';
import { createApp } from './app.js';
import { ConsoleLogs } from './console-logs.js';
import { Tokens } from './auth.js';
import { ConfigError, embeddedConfig, loadConfig, parseConfig, parseDatabase, parseListen, type Config } from './config.js';
import { isProviderPool, planReload } from './config-reload.js';
import { databaseName, openDatabase } from './db/index.js';
import { announceLeader, Follower } from './leader.js';
import { Scheduler, type MachineChanges } from './scheduler/scheduler.js';
import { BlobStore } from '../images/store.js';
import { ImageCatalog } from './images.js';
import { expandProviderPools, providerImages } from './pools.js';
import { machineKinds } from '../provisioners/registry.js';
import { JobService } from './jobs/service.js';
import { Quotas } from './quotas.js';
import { RepositoryResolver } from './repositories.js';
import { createLog, type Log } from '../protocol/log.js';
import { ApiMetrics } from './metrics.js';
import { serveMetrics } from '../protocol/metrics.js';
import type { Registry } from 'prom-client';

export interface ServeOptions {
  configPath?: string;
  /** Override the config's listen address and data directory (`paddock serve --listen --data`). */
  listen?: string;
  dataDir?: string;
  /** Keep the data in this PostgreSQL database instead of the config's (`paddock serve --database`). */
  database?: string;
  /** Serve metrics here instead of the config's `metrics.listen` (`paddock serve --metrics-listen`). */
  metricsListen?: string;
  /** A parsed config instead of a file (tests). */
  config?: Config;
  /** Where the API's lines go (component api; its parts log through children). */
  log?: Log;
  /**
   * Told when this server lost leadership (its PostgreSQL session died): it has stopped serving, and
   * another server may lead already. `paddock serve` exits then, for its service manager to start it again.
   */
  onLeadershipLost?: (error: Error) => void;
}

export interface RunningApi {
  url: string;
  config: Config;
  adminTokenFile: string;
  /** The embedded agent's token (config `agent.enabled`): made anew at every start. */
  agentToken?: string;
  /** With `metrics.listen`: the metrics' registry (the embedded agent adds its own to it) and where they are served. */
  metrics?: { registry: Registry; url: string };
  /** What the router actually serves, method and path, for checking the OpenAPI document. */
  routes: { method: string; path: string }[];
  /**
   * Reads the config file again and applies its machine list (SIGHUP); logs what it did, what
   * waits for a restart, or why the file was refused (the running configuration then stays). Never
   * throws. Without a config file (the embedded defaults, a config given as an object) there is nothing to read.
   */
  reload(): Promise<ReloadOutcome>;
  close(): Promise<void>;
}

export type ReloadOutcome =
  ({ applied: true; changed: string[]; restartNeeded: string[] } & MachineChanges) | { applied: false; reason: string; problems?: string[] };

/** The command line's overrides (`--listen`, `--data`, `--metrics-listen`), applied at start and to a reloaded file alike. */
function applyOverrides(config: Config, options: ServeOptions): Config {
  if (options.listen !== undefined) config.listen = parseListen(options.listen);
  if (options.dataDir !== undefined) config.dataDir = options.dataDir;
  if (options.database !== undefined) config.database = parseDatabase(options.database);
  if (options.metricsListen !== undefined) config.metrics = { listen: parseListen(options.metricsListen) };
  if (!options.config) config.dataDir = path.resolve(config.dataDir);
  return config;
}

export async function startApi(options: ServeOptions): Promise<RunningApi> {
  const log = options.log ?? createLog({ component: 'api' });
  const config = applyOverrides(
    options.config ?? (options.configPath ? loadConfig(options.configPath) : parseConfig(embeddedConfig, '<embedded defaults>')),
    options,
  );
  // The provider pool entries as the file has them, before their clouds make them machines: a reload compares with these.
  const startPools = config.machines.filter(isProviderPool);
  const db = await openDatabase(config.dataDir, config.database);
  // One server, its answers: a follower's until this server leads (PostgreSQL), then the API's.
  let answer: (req: IncomingMessage, res: ServerResponse) => unknown = (_req, res) => res.writeHead(503).end();
  let upgrade: (req: IncomingMessage, socket: Duplex, head: Buffer) => unknown = (_req, socket) => socket.destroy();
  const server = createServer((req, res) => void answer(req, res));
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => void upgrade(req, socket, head));
  // No limit on a whole request: an image upload of many GB takes as long as the network needs,
  // and is cut only when it stalls (images.idleTimeout). Headers still have to come in time.
  server.requestTimeout = 0;
  // Clients (got, Node's agent) drop an idle kept-alive socket after 5 s; the server waits longer,
  // so it never closes one just as a client sends on it (an ECONNRESET the client cannot retry).
  server.keepAliveTimeout = 65_000;
  const listen = async () => {
    server.listen(config.listen.port, config.listen.host);
    await new Promise<void>((resolve, reject) => {
      server.once('listening', resolve);
      server.once('error', reject);
    });
    const address = server.address() as AddressInfo;
    const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
    return `http://${host}:${address.port}`;
  };
  // Metrics from the start, a follower's too (Prometheus scrapes every server; paddock_api_leader
  // says which leads), and before the API takes its port: an address that cannot be had stops the
  // start with nothing listening.
  const metrics = config.metrics.listen ? new ApiMetrics() : undefined;
  const metricsListener = metrics && config.metrics.listen ? await serveMetrics(metrics.registry, config.metrics.listen).catch(closing(db, server)) : undefined;
  if (metricsListener) log.info({ url: metricsListener.url }, 'metrics served');
  let url = '';
  if (db.session) {
    // Several servers may share this database: follow until this one leads.
    const follower = new Follower(db.session, log.child({ component: 'leader' }));
    answer = follower.handle;
    upgrade = follower.upgrade;
    url = await listen().catch(closing(db, server, metricsListener));
    log.info({ url, database: databaseName(db.url!) }, 'paddock listening as a follower; waiting to lead');
    await follower.lead().catch(closing(db, server, metricsListener));
    log.info({ url }, 'leading: loading the state from the database');
  }
  const tokens = new Tokens(db);
  const { adminTokenFile = path.join(config.dataDir, 'admin-token') } = await tokens.start(config.dataDir);
  log.info({ file: adminTokenFile }, 'admin token written');
  // The embedded agent's own token with the agent role and the agent's name, made anew at every
  // start: the agent needs no more, and it speaks only for that name.
  const agentToken = config.agent.enabled ? await tokens.rotate(config.agent.name, 'agent').catch(closing(db, server, metricsListener)) : undefined;
  // Provider pools (OpenStack flavors) become machines before the scheduler loads the inventory.
  const pools = await expandProviderPools(config, { dataDir: config.dataDir, log: log.child({ component: 'provisioner' }) });
  const { lease, queue, health, reaper, agents } = config;
  const leaseActionKinds = new Set(Object.values(machineKinds).flatMap((kind) => (kind.leaseActions ? [kind.kind] : [])));
  const scheduler = new Scheduler(db, {
    machines: config.machines,
    policy: { lease, queue, health, reaper, agents },
    poolLimits: pools.limits,
    leaseActionKinds,
    log: log.child({ component: 'scheduler' }),
  });
  const quotas = new Quotas(config.quotas);
  scheduler.reservations.admit = (caller, members, live) => quotas.admitReservation(caller, members, live);
  await scheduler.start();
  const blobs = new BlobStore(path.join(config.dataDir, 'images'), config.images.reserve);
  await blobs.init();
  const images = new ImageCatalog(
    db,
    blobs,
    config.images,
    (ref) => scheduler.reservations.imageInUse(ref),
    () => providerImages(pools, { dataDir: config.dataDir, log: log.child({ component: 'provisioner' }) }),
  );
  images.quotas = quotas;
  scheduler.agents.onImageFailure = (ref, reason) =>
    void images
      .recordBootFailure(ref, reason)
      .catch((error: unknown) => log.error({ image: ref, error: (error as Error).message }, 'cannot count a boot failure'));
  const collect = () =>
    images.collect().then(
      (removed) => removed.forEach((ref) => log.info({ image: ref }, 'image expired and was removed')),
      (error: unknown) => log.error({ error: (error as Error).message }, 'image collection failed'),
    );
  await collect();
  const collector = setInterval(() => void collect(), Math.max(100, config.images.collectInterval * 1000));
  collector.unref();
  const jobs = new JobService(db, tokens, (owner, reason) => scheduler.reservations.releaseAllOf(owner, reason), {
    dataDir: config.dataDir,
    heartbeatTimeoutMs: config.runners.heartbeatTimeout * 1000,
    maxLogBytes: config.runners.maxLogSize,
    log: log.child({ component: 'jobs' }),
    repositories: new RepositoryResolver(config.repositories, log.child({ component: 'jobs' })),
  });
  jobs.runs.admitRun = (caller, live) => quotas.admitRun(caller, live);
  quotas.accountOf = (name) => {
    // A run token is named after its run; a run's owner may itself be a run (a job a script made).
    let account = name;
    for (let depth = 0; depth < 8; depth++) {
      const owner = jobs.runs.ownerOfRun(account);
      if (owner === undefined) break;
      account = owner;
    }
    return account;
  };
  await jobs.start();
  metrics?.watch(scheduler);
  metrics?.watchImages(images);
  metrics?.watchRuns(jobs);
  const { app, table, streams, tunnels } = createApp({
    scheduler,
    tokens,
    images,
    jobs,
    log,
    consoles: new ConsoleLogs(path.join(config.dataDir, 'consoles'), config.consoles.maxLogSize),
    telnetConsoles: config.consoles.telnet,
    ...(metrics ? { requestMetrics: metrics.middleware() } : {}),
  });
  const close = once(async () => {
    clearInterval(collector);
    await metricsListener?.close();
    await jobs.stop();
    await scheduler.stop();
    tunnels.close();
    streams.close();
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await db.close();
  });
  answer = app.callback();
  metrics?.leading();
  upgrade = streams.upgrade;
  if (!server.listening) url = await listen();
  log.info({ url, machines: config.machines.length, dataDir: config.dataDir }, 'paddock listening');
  if (db.session) {
    // Followers send clients here from now on.
    const advertised = config.advertise ?? url;
    await announceLeader(db.session, advertised);
    log.info({ url: advertised }, 'leading: followers send clients here');
    void db.session.lost.then((error) => {
      log.error({ error: error.message }, 'leadership lost (the PostgreSQL session ended): another server may lead now; stopping');
      void close().finally(() => options.onLeadershipLost?.(error));
    });
  }

  const reload = async (): Promise<ReloadOutcome> => {
    if (options.config || !options.configPath) {
      log.warn('configuration not reloaded: the server runs without a config file (--config)');
      return { applied: false, reason: 'no config file' };
    }
    let next: Config;
    try {
      next = applyOverrides(loadConfig(options.configPath), options);
    } catch (error) {
      const problems = error instanceof ConfigError ? error.problems : [(error as Error).message];
      log.error({ file: options.configPath, problems }, 'configuration not reloaded: the file has problems; the running configuration stays');
      return { applied: false, reason: 'invalid configuration', problems };
    }
    const plan = planReload(config, startPools, next);
    let changes: MachineChanges;
    try {
      changes = await scheduler.applyMachines(plan.definitions);
    } catch (error) {
      // The commit failed (/healthz says the store is failing): the machines' states go back to the
      // committed ones; a machine added stays listed until the next start, which applies the file anyway.
      log.error({ error: (error as Error).message }, 'configuration not fully reloaded: the machine list could not be stored');
      return { applied: false, reason: (error as Error).message };
    }
    config.machines = plan.definitions;
    const { added, retired, retiredOnRelease, kept, stillRetired } = changes;
    log.info(
      { file: options.configPath, added, retired, retiredOnRelease, kept, machines: config.machines.length },
      'configuration reloaded: machine list applied',
    );
    if (stillRetired.length > 0) log.warn({ machines: stillRetired }, 'named again but retired: a retired machine never comes back');
    if (plan.restartNeeded.length > 0 || plan.changed.length > 0)
      log.warn({ settings: plan.restartNeeded, machines: plan.changed }, 'changed in the file but applied only at the next start: a restart is needed');
    return { applied: true, ...changes, changed: plan.changed, restartNeeded: plan.restartNeeded };
  };
  // One reload at a time, in the order asked.
  let reloading: Promise<unknown> = Promise.resolve();

  return {
    url,
    config,
    adminTokenFile,
    ...(agentToken === undefined ? {} : { agentToken }),
    ...(metrics && metricsListener ? { metrics: { registry: metrics.registry, url: metricsListener.url } } : {}),
    routes: table.router.stack.flatMap((layer) =>
      layer.methods.filter((method) => method !== 'HEAD').map((method) => ({ method: method.toLowerCase(), path: layer.path as string })),
    ),
    reload: () => {
      const done = reloading.then(reload, reload);
      reloading = done.catch(() => undefined);
      return done;
    },
    close,
  };
}

/** Closes the server (listening already as a follower), its metrics and the database before passing a start-up error on, so a refused start leaves nothing open. */
function closing(db: { close(): Promise<void> }, server: Server, metrics?: { close(): Promise<void> }): (error: unknown) => Promise<never> {
  return async (error) => {
    await metrics?.close();
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
    await db.close();
    throw error;
  };
}

function once(close: () => Promise<void>): () => Promise<void> {
  let closing: Promise<void> | undefined;
  return () => (closing ??= close());
}
