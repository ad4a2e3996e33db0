// Jobs and their runs, put together. Each part calls only the parts below it:
//
//   reproductions   dispatch (runner hosts: claims, heartbeats, output, ends; the watchdog)
//            \        /
//             runs (queue, show, wait, cancel, end)
//             /      \
//      catalog        logs (DATA/runs/ID.log)
//
// The scheduler is reached through one function, `releaseAllOf`, so jobs depend on it and never
// the other way. Nothing here knows HTTP: refusals are domain errors (api/domain-error.ts).
import type { Tokens } from '../auth.js';
import type { Database } from '../db/index.js';
import type { RepositoryResolver } from '../repositories.js';
import { JobCatalog } from './catalog.js';
import { Dispatch } from './dispatch.js';
import { RunLogs } from './logs.js';
import { Reproductions } from './reproductions.js';
import { Runs } from './runs.js';
import type { Log } from '../../protocol/log.js';

export interface JobServiceOptions {
  dataDir: string;
  /** A runner host not heard from for this long is taken for dead; its runs fail. */
  heartbeatTimeoutMs: number;
  /** The longest log kept per run; output beyond it is dropped (the run goes on). */
  maxLogBytes: number;
  log: Log;
  /** Resolves refs on the API host within the config's repository rules. */
  repositories: RepositoryResolver;
  now?: () => number;
}

export class JobService {
  readonly catalog: JobCatalog;
  readonly logs: RunLogs;
  readonly runs: Runs;
  readonly dispatch: Dispatch;
  /** `paddock jobs reproduce`: runs reproduced elsewhere, each with a token of its own. */
  readonly reproductions: Reproductions;

  constructor(
    db: Database,
    tokens: Tokens,
    /** Releases every live reservation of an owner (the scheduler's releaseAllOf). */
    releaseAllOf: (owner: string, reason: string) => Promise<string[]>,
    options: JobServiceOptions,
  ) {
    const now = options.now ?? Date.now;
    const { log, repositories } = options;
    this.catalog = new JobCatalog(db, repositories, now);
    this.logs = new RunLogs(options.dataDir, options.maxLogBytes, log);
    this.runs = new Runs(db, tokens, this.catalog, this.logs, releaseAllOf, log, now);
    this.dispatch = new Dispatch(this.runs, this.logs, tokens, repositories, { heartbeatTimeoutMs: options.heartbeatTimeoutMs, log, now });
    this.reproductions = new Reproductions(tokens, releaseAllOf, (caller, id) => this.runs.get(caller, id), repositories, { log, now });
  }

  async start(): Promise<void> {
    await this.logs.start();
    this.dispatch.start(await this.runs.load());
    await this.reproductions.start();
  }

  async stop(): Promise<void> {
    this.dispatch.stop();
    this.reproductions.stop();
    await this.logs.settle();
  }
}
