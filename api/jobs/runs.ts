// Runs of jobs. Running a job records the commit its ref points at now and queues the run; a runner
// host takes it (dispatch.ts), runs the script and streams its output; the run ends passed, failed,
// timed out or cancelled. Whatever way it ends, every reservation made with the run's token is
// released and the token revoked. Live runs are kept in memory and written to the database on every
// change. Users see their own runs, admins all.
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { Caller, RunView } from '../../protocol/api.js';
import { displayRepository } from '../../protocol/repository.js';
import type { RunState } from '../../protocol/runner.js';
import type { Tokens } from '../auth.js';
import { plainRow, plainRows, type Database, type RunRow } from '../db/index.js';
import { DomainError, forbidden, notFound } from '../domain-error.js';
import { maxPageSize, newestFirst, type Key, type Page } from '../pages.js';
import { LongPoll } from '../pull.js';
import type { JobCatalog } from './catalog.js';
import type { RunLogs } from './logs.js';
import type { Log } from '../../protocol/log.js';

const liveStates: RunState[] = ['queued', 'assigned', 'running'];

export interface RunEnd {
  exitCode?: number;
  signal?: string;
  reason?: string;
  fault?: 'infrastructure' | 'request';
  result?: unknown;
}

export class Runs {
  readonly live = new Map<string, RunRow>();
  /** When a cancel of each live run was asked for. */
  readonly cancelAt = new Map<string, number>();
  /** When each live run was last known to its runner host: handed over, or listed in a heartbeat. */
  readonly knownAt = new Map<string, number>();
  /** Runner hosts waiting in a claim for a queued run. */
  readonly queued = new LongPoll();
  /** Refuses a new run (throws), e.g. over the caller's quota; else holds it until the returned function is called. */
  admitRun?: (caller: Caller, live: Iterable<RunRow>) => () => void;
  /** Told of every run that ended, with its end stored (metrics). */
  onEnded: (run: RunRow) => void = () => undefined;
  /** Runs whose end is being recorded, so two reports cannot end one run twice. */
  private readonly ending = new Set<string>();
  /** Runs that have ended whose last log line is still being written: followers keep reading. */
  private readonly closingLogs = new Set<string>();
  private readonly changes = new EventEmitter();

  constructor(
    private readonly db: Database,
    private readonly tokens: Tokens,
    private readonly catalog: JobCatalog,
    private readonly logs: RunLogs,
    /** Releases every live reservation of an owner (the scheduler's releaseAllOf). */
    private readonly releaseAllOf: (owner: string, reason: string) => Promise<string[]>,
    private readonly log: Log,
    private readonly now: () => number,
  ) {
    this.changes.setMaxListeners(0);
  }

  /** The live runs stored, put in memory (at start). */
  async load(): Promise<RunRow[]> {
    const rows = plainRows(await this.db.runs.findAll({ where: { state: liveStates }, raw: true }));
    for (const row of rows) {
      row.cancelRequested = Boolean(row.cancelRequested);
      this.live.set(row.id, row);
    }
    return rows;
  }

  /** Records the commit the job's ref points at now and queues a run of it. */
  async run(caller: Caller, idOrName: string, parameters: Record<string, string> = {}): Promise<RunView> {
    const job = await this.catalog.get(caller, idOrName);
    this.admitRun?.(caller, this.live.values())(); // again below, after the await: this one spares resolving the ref
    const commit = await this.catalog.resolve(caller, job);
    const now = new Date(this.now());
    const row: RunRow = {
      id: `run-${randomBytes(6).toString('hex')}`,
      jobId: job.id,
      job: job.name,
      owner: caller.name,
      state: 'queued',
      repository: job.repository,
      ref: job.ref,
      commit,
      script: job.script,
      parameters: JSON.stringify({ ...(JSON.parse(job.parameters) as Record<string, string>), ...parameters }),
      timeLimit: job.timeLimit,
      runner: null,
      cancelRequested: false,
      exitCode: null,
      signal: null,
      fault: null,
      reason: null,
      result: null,
      createdAt: now,
      startedAt: null,
      endedAt: null,
    };
    const admitted = this.admitRun?.(caller, this.live.values());
    try {
      await this.db.runs.create(row);
      this.live.set(row.id, row);
    } finally {
      admitted?.();
    }
    await this.logs.write(
      row.id,
      `paddock: run ${row.id} of job ${job.name}: ${displayRepository(job.repository)} ${job.ref} at ${commit}, script ${job.script}\n`,
    );
    this.queued.wake();
    return runView(row);
  }

  /** Deletes a job, refused while a run of it is live. */
  async deleteJob(caller: Caller, idOrName: string): Promise<void> {
    const job = await this.catalog.get(caller, idOrName);
    if ([...this.live.values()].some((run) => run.jobId === job.id)) throw new DomainError('job_running', `job ${job.name} has a run that has not ended`);
    await this.catalog.remove(job);
  }

  /** One page of runs, newest first (keys: [createdAt ms, id]). */
  async list(caller: Caller, options: { job?: string; all?: boolean }, page: Page = { limit: maxPageSize }): Promise<{ items: RunView[]; next?: Key }> {
    const where: { owner?: string; jobId?: string } = options.all && caller.role === 'admin' ? {} : { owner: caller.name };
    if (options.job) where.jobId = (await this.catalog.get(caller, options.job)).id;
    const { items, next } = await newestFirst(this.db.runs, where, page);
    return { items: items.map((row) => runView(this.live.get(row.id) ?? row)), ...(next ? { next } : {}) };
  }

  async get(caller: Caller, id: string): Promise<RunView> {
    return runView(await this.row(caller, id));
  }

  private async row(caller: Caller, id: string): Promise<RunRow> {
    const row = this.live.get(id) ?? (/^run-[0-9a-f]{12}$/.test(id) ? plainRow(await this.db.runs.findByPk(id, { raw: true })) : null);
    if (!row) throw notFound(`run ${id}`);
    if (row.owner !== caller.name && caller.role !== 'admin') throw forbidden(`run ${id} belongs to another user`);
    return row;
  }

  /** Live, or ended with its log not yet closed: what a follower of the log waits for. */
  isLive(id: string): boolean {
    return this.live.has(id) || this.closingLogs.has(id);
  }

  /** The owner of a live run: whom its run token (named after the run) acts for. */
  ownerOfRun(id: string): string | undefined {
    return this.live.get(id)?.owner;
  }

  /** Resolves once the run has ended or the timeout passed. */
  async waitForEnd(caller: Caller, id: string, timeoutMs: number): Promise<RunView> {
    await this.row(caller, id);
    if (this.live.has(id)) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, timeoutMs);
        const channel = `end:${id}`;
        function done() {
          clearTimeout(timer);
          resolve();
        }
        this.changes.once(channel, done);
        timer.unref();
      });
    }
    return this.get(caller, id);
  }

  async cancel(caller: Caller, id: string): Promise<RunView> {
    const row = await this.row(caller, id);
    if (!this.live.has(id)) return runView(row);
    if (row.state === 'queued') {
      await this.end(row, 'cancelled', { reason: `cancelled by ${caller.name} before it started` });
    } else if (!row.cancelRequested) {
      row.cancelRequested = true;
      this.cancelAt.set(id, this.now());
      await this.save(row);
      await this.logs.write(id, `paddock: cancel requested by ${caller.name}\n`);
    }
    return runView(row);
  }

  /** Ends a live run: its token is revoked, its end stored and logged, its reservations released. */
  async end(row: RunRow, state: RunState, details: RunEnd): Promise<void> {
    if (!this.live.has(row.id) || this.ending.has(row.id)) return;
    this.ending.add(row.id);
    // Nothing the run made outlives it: its token goes before the end is visible.
    await this.tokens.revoke(row.id).catch(() => undefined);
    this.ending.delete(row.id);
    this.closingLogs.add(row.id);
    this.live.delete(row.id);
    this.cancelAt.delete(row.id);
    this.knownAt.delete(row.id);
    row.state = state;
    row.endedAt = new Date(this.now());
    if (details.exitCode !== undefined) row.exitCode = details.exitCode;
    if (details.signal) row.signal = details.signal;
    if (details.reason) row.reason = details.reason.slice(0, 4000);
    if (details.fault) row.fault = details.fault;
    if (details.result !== undefined) row.result = JSON.stringify(details.result);
    try {
      await this.save(row);
      // Its reservations are released.
      const released = await this.releaseAllOf(row.id, `run ${row.id} ended (${state})`);
      const summary = [
        `paddock: run ${state}`,
        row.exitCode !== null ? `exit code ${row.exitCode}` : '',
        row.signal ? `signal ${row.signal}` : '',
        row.reason ?? '',
      ]
        .filter(Boolean)
        .join('; ');
      await this.logs.write(row.id, `${summary}${released.length > 0 ? `; released ${released.join(', ')}` : ''}\n`);
      await this.logs.ended(row.id);
      this.log.info(
        { run: row.id, outcome: state, exitCode: row.exitCode ?? undefined, signal: row.signal ?? undefined, reason: row.reason ?? undefined, released },
        'run ended',
      );
    } finally {
      this.closingLogs.delete(row.id);
    }
    this.changes.emit(`end:${row.id}`);
    this.onEnded(row);
  }

  async save(row: RunRow): Promise<void> {
    await this.db.runs.upsert(row);
  }
}

export function runView(row: RunRow): RunView {
  const iso = (value: Date | string | null) => (value === null ? undefined : new Date(value).toISOString());
  const view: RunView = {
    id: row.id,
    job: row.job,
    jobId: row.jobId,
    owner: row.owner,
    state: row.state as RunState,
    repository: displayRepository(row.repository),
    ref: row.ref,
    commit: row.commit,
    script: row.script,
    parameters: JSON.parse(row.parameters) as Record<string, string>,
    timeLimitSeconds: row.timeLimit,
    createdAt: iso(row.createdAt)!,
  };
  if (row.runner) view.runner = row.runner;
  if (row.cancelRequested) view.cancelRequested = true;
  if (row.exitCode !== null) view.exitCode = row.exitCode;
  if (row.signal) view.signal = row.signal;
  if (row.reason) view.reason = row.reason;
  if (row.fault) view.fault = row.fault as 'infrastructure' | 'request';
  if (row.result !== null) view.result = JSON.parse(row.result);
  if (row.startedAt) view.startedAt = iso(row.startedAt);
  if (row.endedAt) view.endedAt = iso(row.endedAt);
  return view;
}
