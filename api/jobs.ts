// Jobs and their runs. A job names a script in a git repository (and the ref to take it from),
// parameters and a time limit. Running it records the commit the ref points at now and queues the
// run; a runner host takes it (long-poll), gets a token made for this run alone, runs the script and
// streams its output here; the run ends passed, failed, timed out or cancelled. Whatever way it
// ends, every reservation made with the run's token is released and the token revoked. A runner
// host that stops sending heartbeats has its runs failed as infrastructure errors.
//
// Live runs are kept in memory and written to the database on every change; logs are files under
// DATA/runs/. Users see their own jobs and runs, admins all.
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { appendFile, mkdir, stat } from 'node:fs/promises';
import path from 'node:path';
import type { JobView, RunnerView, RunView } from '../protocol/api.js';
import { plainRow, plainRows, type Database, type JobRow, type RunRow } from './db/index.js';
import { DomainError, forbidden, notFound } from './domain-error.js';
import { afterWhere, maxPageSize, rowsPage, type Key, type Page } from './pages.js';
import type { Tokens } from './auth.js';
import type { Caller } from '../protocol/api.js';
import { type RunFinish, type RunState, type RunTask } from '../protocol/runner.js';
import { displayRepository } from '../protocol/repository.js';
import type { RepositoryResolver } from './repositories.js';
import { LongPoll } from './pull.js';
import { Reproductions } from './reproductions.js';

export interface JobInput {
  name: string;
  repository: string;
  ref: string;
  script: string;
  parameters: Record<string, string>;
  timeLimitSeconds: number;
}

export interface JobServiceOptions {
  dataDir: string;
  /** A runner host not heard from for this long is taken for dead; its runs fail. */
  heartbeatTimeoutMs: number;
  /** The longest log kept per run; output beyond it is dropped (the run goes on). */
  maxLogBytes: number;
  log: (line: string) => void;
  /** Resolves refs on the API host within the config's repository rules. */
  repositories: RepositoryResolver;
  now?: () => number;
}

/** Reservations a run made still live this long after a cancel the runner host did not act on: the run is ended here. */
const cancelGraceMs = 30_000;
/** A running run this long past its time limit that its runner host has not ended is failed here. */
const limitGraceMs = 60_000;

const liveStates: RunState[] = ['queued', 'assigned', 'running'];

export class JobService {
  private readonly live = new Map<string, RunRow>();
  private readonly runners = new Map<string, number>();
  private readonly cancelAt = new Map<string, number>();
  /** When each live run was last known to its runner host: handed over, or listed in a heartbeat. */
  private readonly knownAt = new Map<string, number>();
  /** Each runner host's last heartbeat (claims and output say it is alive, but not what it runs). */
  private readonly heartbeats = new Map<string, number>();
  /** Runs whose end is being recorded, so two reports cannot end one run twice. */
  private readonly ending = new Set<string>();
  /** Runs that have ended whose last log line is still being written: followers keep reading. */
  private readonly closingLogs = new Set<string>();
  /** Runner hosts waiting in a claim for a run. */
  private readonly runnerPull = new LongPoll();
  private readonly changes = new EventEmitter();
  private readonly logSizes = new Map<string, number>();
  private logWrites = new Map<string, Promise<void>>();
  private watchdog?: NodeJS.Timeout;
  private readonly now: () => number;
  /** Refuses a new run (throws), e.g. over the caller's quota; else holds it until the returned function is called. */
  admitRun?: (caller: Caller, live: Iterable<RunRow>) => () => void;
  /** `paddock jobs reproduce`: runs reproduced elsewhere, each with a token of its own. */
  readonly reproductions: Reproductions;

  constructor(
    private readonly db: Database,
    private readonly tokens: Tokens,
    /** Releases every live reservation of an owner (the scheduler's releaseAllOf). */
    private readonly releaseAllOf: (owner: string, reason: string) => Promise<string[]>,
    private readonly options: JobServiceOptions,
  ) {
    this.now = options.now ?? Date.now;
    this.changes.setMaxListeners(0);
    this.reproductions = new Reproductions(tokens, releaseAllOf, (caller, id) => this.getRun(caller, id), options.repositories, { log: options.log, now: this.now });
  }

  get logsDir(): string {
    return path.join(this.options.dataDir, 'runs');
  }

  logFile(id: string): string {
    return path.join(this.logsDir, `${id}.log`);
  }

  async start(): Promise<void> {
    await mkdir(this.logsDir, { recursive: true, mode: 0o700 });
    const rows = plainRows(await this.db.runs.findAll({ where: { state: liveStates }, raw: true }));
    const now = this.now();
    for (const row of rows) {
      row.cancelRequested = Boolean(row.cancelRequested);
      this.live.set(row.id, row);
      // Runner hosts get a heartbeat's time to show up again after a restart of the API.
      if (row.runner && !this.runners.has(row.runner)) this.runners.set(row.runner, now);
      this.knownAt.set(row.id, now);
    }
    this.watchdog = setInterval(() => void this.watch().catch((error: unknown) => this.options.log(`run watchdog: ${(error as Error).message}`)), 1000);
    this.watchdog.unref();
    await this.reproductions.start();
  }

  async stop(): Promise<void> {
    clearInterval(this.watchdog);
    this.reproductions.stop();
    this.runnerPull.stop();
    await Promise.all(this.logWrites.values());
  }

  // ---- jobs -----------------------------------------------------------------------------------

  async addJob(caller: Caller, input: JobInput): Promise<JobView> {
    if (await this.db.jobs.findOne({ where: { owner: caller.name, name: input.name } })) {
      throw new DomainError('conflict', `you have a job named ${input.name} already`);
    }
    await this.options.repositories.resolve(caller.name, input.repository, input.ref);
    const row: JobRow = {
      id: `job-${randomBytes(6).toString('hex')}`,
      name: input.name,
      owner: caller.name,
      repository: input.repository,
      ref: input.ref,
      script: input.script,
      parameters: JSON.stringify(input.parameters),
      timeLimit: input.timeLimitSeconds,
      createdAt: new Date(this.now()),
    };
    await this.db.jobs.create(row);
    return jobView(row);
  }

  async listJobs(caller: Caller, all: boolean): Promise<JobView[]> {
    const where = all && caller.role === 'admin' ? {} : { owner: caller.name };
    return plainRows(await this.db.jobs.findAll({ where, order: [['name', 'ASC']], raw: true })).map(jobView);
  }

  /** A job by id, or by name among the caller's (an admin's name lookup falls back to anyone's, if unique). */
  async getJob(caller: Caller, idOrName: string): Promise<JobRow> {
    let row = plainRow(await this.db.jobs.findByPk(idOrName, { raw: true }));
    if (!row) row = plainRow(await this.db.jobs.findOne({ where: { owner: caller.name, name: idOrName }, raw: true }));
    if (!row && caller.role === 'admin') {
      const named = plainRows(await this.db.jobs.findAll({ where: { name: idOrName }, raw: true }));
      if (named.length > 1) throw new DomainError('conflict', `${named.length} users have a job named ${idOrName}: use its id`);
      row = named[0] ?? null;
    }
    if (!row) throw notFound(`job ${idOrName}`);
    if (row.owner !== caller.name && caller.role !== 'admin') throw forbidden(`job ${idOrName} belongs to another user`);
    return row;
  }

  async deleteJob(caller: Caller, idOrName: string): Promise<void> {
    const job = await this.getJob(caller, idOrName);
    if ([...this.live.values()].some((run) => run.jobId === job.id)) throw new DomainError('job_running', `job ${job.name} has a run that has not ended`);
    await this.db.jobs.destroy({ where: { id: job.id } });
  }

  // ---- runs -----------------------------------------------------------------------------------

  /** Records the commit the job's ref points at now and queues a run of it. */
  async run(caller: Caller, idOrName: string, parameters: Record<string, string> = {}): Promise<RunView> {
    const job = await this.getJob(caller, idOrName);
    this.admitRun?.(caller, this.live.values())(); // again below, after the await: this one spares resolving the ref
    const commit = await this.options.repositories.resolve(caller.name, job.repository, job.ref);
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
    await this.writeLog(row.id, `paddock: run ${row.id} of job ${job.name}: ${displayRepository(job.repository)} ${job.ref} at ${commit}, script ${job.script}\n`);
    this.runnerPull.wake();
    return runView(row);
  }

  /** One page of runs, newest first (keys: [createdAt ms, id]). */
  async listRuns(caller: Caller, options: { job?: string; all?: boolean }, page: Page = { limit: maxPageSize }): Promise<{ items: RunView[]; next?: Key }> {
    const where: Record<string, unknown> = options.all && caller.role === 'admin' ? {} : { owner: caller.name };
    if (options.job) where.jobId = (await this.getJob(caller, options.job)).id;
    Object.assign(where, afterWhere(['createdAt', 'id'], page, true));
    const rows = plainRows(await this.db.runs.findAll({ where, order: [['createdAt', 'DESC'], ['id', 'DESC']], limit: page.limit + 1, raw: true }));
    const { items, next } = rowsPage(rows, (row) => [new Date(row.createdAt).getTime(), row.id], page);
    return { items: items.map((row) => runView(this.live.get(row.id) ?? row)), ...(next ? { next } : {}) };
  }

  async getRun(caller: Caller, id: string): Promise<RunView> {
    return runView(await this.runRow(caller, id));
  }

  private async runRow(caller: Caller, id: string): Promise<RunRow> {
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
    await this.runRow(caller, id);
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
    return this.getRun(caller, id);
  }

  async cancel(caller: Caller, id: string): Promise<RunView> {
    const row = await this.runRow(caller, id);
    if (!this.live.has(id)) return runView(row);
    if (row.state === 'queued') {
      await this.end(row, 'cancelled', { reason: `cancelled by ${caller.name} before it started` });
    } else if (!row.cancelRequested) {
      row.cancelRequested = true;
      this.cancelAt.set(id, this.now());
      await this.save(row);
      await this.writeLog(id, `paddock: cancel requested by ${caller.name}\n`);
    }
    return runView(row);
  }

  // ---- runner hosts -----------------------------------------------------------------------------

  /**
   * Hands a runner host up to `slots` queued runs, oldest first, each with a token made for it.
   * `fresh` (its first claim after it started) fails the runs it had taken before: they died with it.
   */
  async claim(runner: string, slots: number, fresh: boolean, waitMs: number, gone: () => boolean = () => false): Promise<RunTask[]> {
    this.runners.set(runner, this.now());
    if (fresh) {
      for (const row of [...this.live.values()]) {
        if (row.runner === runner) await this.end(row, 'failed', { fault: 'infrastructure', reason: `runner host ${runner} restarted while the run was ${row.state}` });
      }
    }
    if (slots <= 0) return [];
    return this.runnerPull.claim(() => this.take(runner, slots), waitMs, () => {
      // A runner host that went away while it waited (killed, say) must not be handed runs.
      if (gone()) return false;
      this.runners.set(runner, this.now());
      return true;
    });
  }

  private async take(runner: string, slots: number): Promise<RunTask[]> {
    const queued = [...this.live.values()].filter((row) => row.state === 'queued').sort((a, b) => +new Date(a.createdAt) - +new Date(b.createdAt));
    const tasks: RunTask[] = [];
    for (const row of queued.slice(0, slots)) {
      row.state = 'assigned';
      row.runner = runner;
      this.knownAt.set(row.id, this.now());
      await this.save(row);
      const token = await this.tokens.rotate(row.id, 'user');
      await this.writeLog(row.id, `paddock: taken by runner host ${runner}\n`);
      const { id, job, ref, commit, script, parameters, timeLimitSeconds } = runView(row);
      // The runner host gets the repository as it was given, credentials included.
      const repositoryRules = this.options.repositories.rulesFor(row.owner);
      tasks.push({ id, job, repository: row.repository, repositoryRules, ref, commit, script, parameters, timeLimitSeconds, token });
    }
    return tasks;
  }

  /** The runner hosts heard from since the API started, with what they run. */
  runnerHosts(): RunnerView[] {
    const now = this.now();
    return [...this.runners]
      .map(([name, lastSeen]) => ({
        name,
        lastSeen: new Date(lastSeen).toISOString(),
        alive: now - lastSeen <= this.options.heartbeatTimeoutMs,
        runs: [...this.live.values()].filter((row) => row.runner === name).map((row) => row.id),
      }))
      .sort((a, b) => (a.name < b.name ? -1 : 1));
  }

  /** A runner host is alive and runs these; it is told which of them were cancelled. */
  heartbeat(runner: string, runs: string[]): { cancel: string[] } {
    const now = this.now();
    this.runners.set(runner, now);
    this.heartbeats.set(runner, now);
    for (const id of runs) if (this.live.get(id)?.runner === runner) this.knownAt.set(id, now);
    return { cancel: runs.filter((id) => this.live.get(id)?.cancelRequested && this.live.get(id)?.runner === runner) };
  }

  async started(runner: string, id: string): Promise<void> {
    const row = this.ownRun(runner, id);
    if (!row) return;
    if (row.state === 'assigned') {
      row.state = 'running';
      row.startedAt = new Date(this.now());
      await this.save(row);
    }
  }

  async appendLog(runner: string, id: string, chunk: Buffer): Promise<void> {
    if (!this.ownRun(runner, id)) throw new DomainError('run_ended', `run ${id} is not running on ${runner}`);
    await this.writeLog(id, chunk);
  }

  async finished(runner: string, id: string, finish: RunFinish): Promise<void> {
    const row = this.ownRun(runner, id);
    if (!row) return;
    const state: RunState = row.cancelRequested && finish.outcome !== 'passed' ? 'cancelled' : finish.outcome;
    await this.end(row, state, {
      ...(finish.exitCode !== undefined ? { exitCode: finish.exitCode } : {}),
      ...(finish.signal ? { signal: finish.signal } : {}),
      ...(finish.reason ? { reason: finish.reason } : {}),
      ...(finish.fault ? { fault: finish.fault } : {}),
      ...(finish.result !== undefined ? { result: finish.result } : {}),
    });
  }

  /** The live run if this runner host holds it. */
  private ownRun(runner: string, id: string): RunRow | undefined {
    this.runners.set(runner, this.now());
    const row = this.live.get(id);
    return row && row.runner === runner ? row : undefined;
  }

  // ---- ending ----------------------------------------------------------------------------------

  private async end(row: RunRow, state: RunState, details: { exitCode?: number; signal?: string; reason?: string; fault?: 'infrastructure' | 'request'; result?: unknown }): Promise<void> {
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
      const summary = [`paddock: run ${state}`, row.exitCode !== null ? `exit code ${row.exitCode}` : '', row.signal ? `signal ${row.signal}` : '', row.reason ?? ''].filter(Boolean).join('; ');
      await this.writeLog(row.id, `${summary}${released.length > 0 ? `; released ${released.join(', ')}` : ''}\n`);
      this.options.log(`${summary.replace('paddock: run', `run ${row.id}`)}`);
    } finally {
      this.closingLogs.delete(row.id);
    }
    this.changes.emit(`end:${row.id}`);
  }

  /** Fails the runs of runner hosts that went quiet, and runs stuck past their limit or their cancel. */
  private async watch(): Promise<void> {
    const now = this.now();
    for (const row of [...this.live.values()]) {
      if (row.state === 'queued' || !row.runner) continue;
      const lastSeen = this.runners.get(row.runner) ?? 0;
      if (now - lastSeen > this.options.heartbeatTimeoutMs) {
        await this.end(row, 'failed', { fault: 'infrastructure', reason: `runner host ${row.runner} stopped answering (no heartbeat for ${Math.round((now - lastSeen) / 1000)}s)` });
      } else if ((this.heartbeats.get(row.runner) ?? 0) - (this.knownAt.get(row.id) ?? now) > this.options.heartbeatTimeoutMs) {
        // The runner host's heartbeats have left the run out for that long: the answer that handed
        // it over was lost. (A runner host that stopped sending heartbeats is the case above.)
        await this.end(row, 'failed', { fault: 'infrastructure', reason: `runner host ${row.runner} does not run it (it never received the run, or lost it)` });
      } else if (row.cancelRequested && now - (this.cancelAt.get(row.id) ?? now) > cancelGraceMs) {
        await this.end(row, 'cancelled', { fault: 'infrastructure', reason: `runner host ${row.runner} did not stop the run within ${cancelGraceMs / 1000}s of the cancel` });
      } else if (row.startedAt && now - +new Date(row.startedAt) > row.timeLimit * 1000 + limitGraceMs) {
        await this.end(row, 'timed_out', { fault: 'infrastructure', reason: `runner host ${row.runner} did not stop the run at its time limit` });
      }
    }
  }

  private async save(row: RunRow): Promise<void> {
    await this.db.runs.upsert(row);
  }

  /** Appends to the run's log in order; past maxLogBytes, output is dropped with one note. */
  private writeLog(id: string, data: string | Buffer): Promise<void> {
    const previous = this.logWrites.get(id) ?? Promise.resolve();
    const next = previous.then(async () => {
      let size = this.logSizes.get(id);
      if (size === undefined) size = await stat(this.logFile(id)).then((info) => info.size, () => 0);
      const bytes = typeof data === 'string' ? Buffer.from(data) : data;
      const limit = this.options.maxLogBytes;
      if (size >= limit) return;
      const room = limit - size;
      const kept = bytes.length > room ? Buffer.concat([bytes.subarray(0, room), Buffer.from(`\npaddock: the log reached ${limit} bytes; further output is dropped\n`)]) : bytes;
      await appendFile(this.logFile(id), kept, { mode: 0o600 });
      this.logSizes.set(id, size + kept.length);
    });
    const settled = next.catch((error: unknown) => this.options.log(`cannot write the log of ${id}: ${(error as Error).message}`));
    this.logWrites.set(id, settled);
    void settled.finally(() => {
      if (this.logWrites.get(id) === settled) this.logWrites.delete(id);
    });
    return settled;
  }
}

export function jobView(row: JobRow): JobView {
  return {
    id: row.id,
    name: row.name,
    owner: row.owner,
    // A password in the URL is for the runner hosts, not for whoever lists jobs.
    repository: displayRepository(row.repository),
    ref: row.ref,
    script: row.script,
    parameters: JSON.parse(row.parameters) as Record<string, string>,
    timeLimitSeconds: row.timeLimit,
    createdAt: new Date(row.createdAt).toISOString(),
  };
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
