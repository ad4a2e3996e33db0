// Runner hosts and the runs they hold. A runner host takes queued runs (a long-poll, api/pull.ts)
// and gets a token made for each run alone; it reports starts, output and ends, and sends
// heartbeats. A runner host that stops sending heartbeats has its runs failed as infrastructure
// errors, and so do runs it never received, runs it did not stop after a cancel, and runs it let go
// past their time limit (the watchdog).
import type { RunnerView } from '../../protocol/api.js';
import type { RunFinish, RunState, RunTask } from '../../protocol/runner.js';
import type { Tokens } from '../auth.js';
import type { RunRow } from '../db/index.js';
import { DomainError } from '../domain-error.js';
import type { RepositoryResolver } from '../repositories.js';
import type { RunLogs } from './logs.js';
import { runView, type Runs } from './runs.js';
import type { Log } from '../../protocol/log.js';

/** Reservations a run made still live this long after a cancel the runner host did not act on: the run is ended here. */
const cancelGraceMs = 30_000;
/** A running run this long past its time limit that its runner host has not ended is failed here. */
const limitGraceMs = 60_000;

export class Dispatch {
  /** Each runner host's last sign of life (claims, output, heartbeats). */
  private readonly runners = new Map<string, number>();
  /** Each runner host's last heartbeat (claims and output say it is alive, but not what it runs). */
  private readonly heartbeats = new Map<string, number>();
  private watchdog?: NodeJS.Timeout;

  constructor(
    private readonly runs: Runs,
    private readonly logs: RunLogs,
    private readonly tokens: Tokens,
    private readonly repositories: RepositoryResolver,
    private readonly options: {
      /** A runner host not heard from for this long is taken for dead; its runs fail. */
      heartbeatTimeoutMs: number;
      log: Log;
      now: () => number;
    },
  ) {}

  /** Starts the watchdog over the runs loaded at start, whose runner hosts get a heartbeat's time to show up again. */
  start(loaded: readonly RunRow[]): void {
    const now = this.options.now();
    for (const row of loaded) {
      if (row.runner && !this.runners.has(row.runner)) this.runners.set(row.runner, now);
      this.runs.knownAt.set(row.id, now);
    }
    this.watchdog = setInterval(
      () => void this.watch().catch((error: unknown) => this.options.log.error({ error: (error as Error).message }, 'run watchdog failed')),
      1000,
    );
    this.watchdog.unref();
  }

  stop(): void {
    clearInterval(this.watchdog);
    this.runs.queued.stop();
  }

  /**
   * Hands a runner host up to `slots` queued runs, oldest first, each with a token made for it.
   * `fresh` (its first claim after it started) fails the runs it had taken before: they died with it.
   */
  async claim(runner: string, slots: number, fresh: boolean, waitMs: number, gone: () => boolean = () => false): Promise<RunTask[]> {
    this.runners.set(runner, this.options.now());
    if (fresh) {
      for (const row of [...this.runs.live.values()]) {
        if (row.runner === runner)
          await this.runs.end(row, 'failed', { fault: 'infrastructure', reason: `runner host ${runner} restarted while the run was ${row.state}` });
      }
    }
    if (slots <= 0) return [];
    return this.runs.queued.claim(
      () => this.take(runner, slots),
      waitMs,
      () => {
        // A runner host that went away while it waited (killed, say) must not be handed runs.
        if (gone()) return false;
        this.runners.set(runner, this.options.now());
        return true;
      },
    );
  }

  private async take(runner: string, slots: number): Promise<RunTask[]> {
    const queued = [...this.runs.live.values()].filter((row) => row.state === 'queued').sort((a, b) => +new Date(a.createdAt) - +new Date(b.createdAt));
    const tasks: RunTask[] = [];
    for (const row of queued.slice(0, slots)) {
      row.state = 'assigned';
      row.runner = runner;
      this.runs.knownAt.set(row.id, this.options.now());
      await this.runs.save(row);
      const token = await this.tokens.rotate(row.id, 'user');
      await this.logs.write(row.id, `paddock: taken by runner host ${runner}\n`);
      const { id, job, ref, commit, script, parameters, timeLimitSeconds } = runView(row);
      // The runner host gets the repository as it was given, credentials included.
      const repositoryRules = this.repositories.rulesFor(row.owner);
      tasks.push({ id, job, repository: row.repository, repositoryRules, ref, commit, script, parameters, timeLimitSeconds, token });
    }
    return tasks;
  }

  /** The runner hosts heard from since the API started, with what they run. */
  runnerHosts(): RunnerView[] {
    const now = this.options.now();
    return [...this.runners]
      .map(([name, lastSeen]) => ({
        name,
        lastSeen: new Date(lastSeen).toISOString(),
        alive: now - lastSeen <= this.options.heartbeatTimeoutMs,
        runs: [...this.runs.live.values()].filter((row) => row.runner === name).map((row) => row.id),
      }))
      .sort((a, b) => (a.name < b.name ? -1 : 1));
  }

  /** A runner host is alive and runs these; it is told which of them were cancelled. */
  heartbeat(runner: string, runs: string[]): { cancel: string[] } {
    const now = this.options.now();
    const { live, knownAt } = this.runs;
    this.runners.set(runner, now);
    this.heartbeats.set(runner, now);
    for (const id of runs) if (live.get(id)?.runner === runner) knownAt.set(id, now);
    return { cancel: runs.filter((id) => live.get(id)?.cancelRequested && live.get(id)?.runner === runner) };
  }

  async started(runner: string, id: string): Promise<void> {
    const row = this.ownRun(runner, id);
    if (!row) return;
    if (row.state === 'assigned') {
      row.state = 'running';
      row.startedAt = new Date(this.options.now());
      await this.runs.save(row);
    }
  }

  /** A chunk of a run's output; with `offset` (where it starts in what the runner host sent), one sent again is stored once. */
  async appendLog(runner: string, id: string, chunk: Buffer, offset?: number): Promise<void> {
    if (!this.ownRun(runner, id)) throw new DomainError('run_ended', `run ${id} is not running on ${runner}`);
    await (offset === undefined ? this.logs.write(id, chunk) : this.logs.output(id, offset, chunk));
  }

  async finished(runner: string, id: string, finish: RunFinish): Promise<void> {
    const row = this.ownRun(runner, id);
    if (!row) return;
    const state: RunState = row.cancelRequested && finish.outcome !== 'passed' ? 'cancelled' : finish.outcome;
    await this.runs.end(row, state, {
      ...(finish.exitCode !== undefined ? { exitCode: finish.exitCode } : {}),
      ...(finish.signal ? { signal: finish.signal } : {}),
      ...(finish.reason ? { reason: finish.reason } : {}),
      ...(finish.fault ? { fault: finish.fault } : {}),
      ...(finish.result !== undefined ? { result: finish.result } : {}),
    });
  }

  /** The live run if this runner host holds it. */
  private ownRun(runner: string, id: string): RunRow | undefined {
    this.runners.set(runner, this.options.now());
    const row = this.runs.live.get(id);
    return row && row.runner === runner ? row : undefined;
  }

  /** Fails the runs of runner hosts that went quiet, and runs stuck past their limit or their cancel. */
  private async watch(): Promise<void> {
    const now = this.options.now();
    const { heartbeatTimeoutMs } = this.options;
    const { runs } = this;
    for (const row of [...runs.live.values()]) {
      if (row.state === 'queued' || !row.runner) continue;
      const lastSeen = this.runners.get(row.runner) ?? 0;
      if (now - lastSeen > heartbeatTimeoutMs) {
        await runs.end(row, 'failed', {
          fault: 'infrastructure',
          reason: `runner host ${row.runner} stopped answering (no heartbeat for ${Math.round((now - lastSeen) / 1000)}s)`,
        });
      } else if ((this.heartbeats.get(row.runner) ?? 0) - (runs.knownAt.get(row.id) ?? now) > heartbeatTimeoutMs) {
        // The runner host's heartbeats have left the run out for that long: the answer that handed
        // it over was lost. (A runner host that stopped sending heartbeats is the case above.)
        await runs.end(row, 'failed', { fault: 'infrastructure', reason: `runner host ${row.runner} does not run it (it never received the run, or lost it)` });
      } else if (row.cancelRequested && now - (runs.cancelAt.get(row.id) ?? now) > cancelGraceMs) {
        await runs.end(row, 'cancelled', {
          fault: 'infrastructure',
          reason: `runner host ${row.runner} did not stop the run within ${cancelGraceMs / 1000}s of the cancel`,
        });
      } else if (row.startedAt && now - +new Date(row.startedAt) > row.timeLimit * 1000 + limitGraceMs) {
        await runs.end(row, 'timed_out', { fault: 'infrastructure', reason: `runner host ${row.runner} did not stop the run at its time limit` });
      }
    }
  }
}
