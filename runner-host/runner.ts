// `paddock runner`: a runner host. It pulls runs from the API (long-poll, so it needs no inbound
// connection and can sit behind NAT), runs up to `slots` of them at once, each checked out at its
// exact commit into a fresh work directory and run with the run's own token (execute.ts) as a user
// of its own (run-users.ts) unless the runner host is single-user, streams
// their output to the API as it comes, sends heartbeats (whose answers say which runs were
// cancelled), and reports how each run ended. The API releases whatever a run reserved.
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { execute } from './execute.js';
import type { RunFinish, RunTask } from '../protocol/runner.js';
import { describeFailure, PullWorker } from '../protocol/worker.js';
import type { HeldRunUser, RunUsers } from './run-users.js';
import { createLog, type Log } from '../protocol/log.js';
import { RunnerMetrics } from './metrics.js';

export interface RunnerOptions {
  url: string;
  /** A token of role runner. */
  token: string;
  name: string;
  /** Work directories are made under it, one per run, and removed after. */
  workRoot: string;
  /** Runs at once. */
  slots: number;
  /** Where each run's user comes from; undefined for a single-user runner host (no isolation). */
  users?: RunUsers;
  heartbeatMs?: number;
  /** Where its lines go (component runner, with its name as `runner`); stderr as JSON when not given. */
  log?: Log;
  /** Keep Prometheus metrics of its runs (metrics.ts); served by `paddock runner --metrics-listen`. */
  metrics?: boolean;
}

/**
 * Output and reports are retried this many times while the API is away (restarting, say): about five
 * minutes at the 5 s pause retries reach, so a run's output and outcome survive an API restart.
 */
const apiAwayAttempts = 64;

/** Output is sent in pieces at least this often, or sooner when this much has gathered. */
const flushMs = 250;
const flushBytes = 256 * 1024;

export class Runner {
  private readonly worker: PullWorker<RunTask>;
  private readonly active = new Map<string, AbortController>();
  private readonly log: Log;
  private heartbeat?: NodeJS.Timeout;
  private slotFreed?: () => void;
  private readonly finishing = new Set<Promise<void>>();
  readonly metrics?: RunnerMetrics;

  constructor(private readonly options: RunnerOptions) {
    this.log = (options.log ?? createLog({ component: 'runner' })).child({ component: 'runner', runner: options.name });
    if (options.metrics) this.metrics = new RunnerMetrics(options.slots, () => this.active.size);
    this.worker = new PullWorker<RunTask>({
      url: options.url,
      token: options.token,
      claimPath: 'v1/runner/claim',
      // `fresh` on the first claim: the API fails the runs this runner host held before it stopped.
      claimBody: (first) => ({ runner: options.name, slots: options.slots - this.active.size, fresh: first, wait: 20 }),
      tasksOf: (answer) => (answer as { runs: RunTask[] }).runs,
      onTask: (task) => this.begin(task),
      ready: () => this.freeSlot(),
      log: this.log,
    });
  }

  start(): void {
    this.heartbeat = setInterval(() => void this.beat(), this.options.heartbeatMs ?? 5000);
    this.worker.start(() => this.cleanUp());
  }

  /** Resolves once a slot is free (or the runner host stops). */
  private async freeSlot(): Promise<void> {
    while (this.worker.isRunning && this.active.size >= this.options.slots) await new Promise<void>((resolve) => (this.slotFreed = resolve));
  }

  /**
   * What a runner host that died left behind: scripts still running (found by the run id in their
   * environment; an isolated run dies with its runner host already, but a single-user one does
   * not) and work directories. Their runs were failed by the API when the heartbeats stopped, or
   * are failed by the first claim. Run users it held are cleared when next taken (run-users.ts).
   */
  private async cleanUp(): Promise<void> {
    const left = (await readdir(this.options.workRoot).catch(() => [] as string[])).filter((name) => /^run-[0-9a-f]{12}-/.test(name));
    if (left.length === 0) return;
    const ids = new Set(left.map((name) => name.slice(0, 16)));
    for (const pid of await readdir('/proc').catch(() => [] as string[])) {
      if (!/^\d+$/.test(pid)) continue;
      const environ = await readFile(`/proc/${pid}/environ`, 'utf8').catch(() => '');
      const id = /(?:^|\0)PADDOCK_RUN_ID=(run-[0-9a-f]{12})(?:\0|$)/.exec(environ)?.[1];
      if (!id || !ids.has(id)) continue;
      this.log.warn({ run: id, pid: Number(pid) }, 'stopping a process left running by an earlier start');
      try {
        process.kill(-Number(pid), 'SIGKILL');
      } catch {
        try {
          process.kill(Number(pid), 'SIGKILL');
        } catch {
          // gone meanwhile
        }
      }
    }
    await Promise.all(left.map((name) => rm(path.join(this.options.workRoot, name), { recursive: true, force: true })));
  }

  /** Stops taking runs; the runs under way are stopped and reported as failed by the runner host. */
  async stop(): Promise<void> {
    const stopped = this.worker.stop();
    this.slotFreed?.();
    for (const controller of this.active.values()) controller.abort(new Error('the runner host is stopping'));
    await stopped;
    await Promise.allSettled([...this.finishing]);
    clearInterval(this.heartbeat);
  }

  private begin(task: RunTask): void {
    const controller = new AbortController();
    this.active.set(task.id, controller);
    const done = this.run(task, controller)
      .catch((error: unknown) => this.log.error({ run: task.id, error: (error as Error).message }, 'run failed'))
      .finally(() => {
        this.active.delete(task.id);
        this.finishing.delete(done);
        this.slotFreed?.();
      });
    this.finishing.add(done);
  }

  private async run(task: RunTask, controller: AbortController): Promise<void> {
    this.log.info({ run: task.id, job: task.job, commit: task.commit.slice(0, 12), script: task.script }, 'run started');
    const workDir = path.join(this.options.workRoot, `${task.id}-${randomBytes(3).toString('hex')}`);
    const started = performance.now();
    await mkdir(this.options.workRoot, { recursive: true });
    const output = new OutputStream(
      (chunk, offset) => this.send(task.id, chunk, offset),
      () => controller.abort(new Error('the API no longer takes output for this run')),
    );
    await this.post(`v1/runner/runs/${task.id}/started`, { runner: this.options.name });
    let outcome: Omit<RunFinish, 'runner'>;
    let user: HeldRunUser | undefined;
    try {
      user = await this.options.users?.acquire();
      outcome = await execute({ task, url: this.options.url, workDir, user, onOutput: (chunk) => output.write(chunk), signal: controller.signal });
    } catch (error) {
      outcome = { outcome: 'failed', fault: 'infrastructure', reason: `the runner host could not run the script: ${(error as Error).message}` };
    } finally {
      await output.close();
      // The run's processes are gone (execute() waits for that); then its files, then its user.
      await rm(workDir, { recursive: true, force: true }).catch(() => undefined);
      await user
        ?.release()
        .catch((error: unknown) => this.log.error({ run: task.id, uid: user?.uid, error: (error as Error).message }, 'could not free its run user'));
    }
    if (!this.worker.isRunning && controller.signal.aborted && outcome.outcome === 'cancelled') {
      outcome = { ...outcome, outcome: 'failed', fault: 'infrastructure', reason: 'the runner host stopped' };
    }
    await this.post(`v1/runner/runs/${task.id}/finished`, { runner: this.options.name, ...outcome });
    this.log.info({ run: task.id, outcome: outcome.outcome, exitCode: outcome.exitCode }, 'run ended');
    this.metrics?.ran(outcome, (performance.now() - started) / 1000);
  }

  /** A chunk of output that starts at byte `offset` of what this host has sent for the run: sent again after a broken connection, it is stored once. */
  private send(id: string, chunk: Buffer, offset: number): Promise<'ok' | 'gone'> {
    return this.worker.post(`v1/runner/runs/${id}/log`, {
      searchParams: { runner: this.options.name, offset },
      body: chunk,
      headers: { 'content-type': 'text/plain; charset=utf-8' },
      gone: [404, 409],
      attempts: apiAwayAttempts,
      whileStopping: true,
    });
  }

  /** A JSON POST, retried while the API is away (a report must not be lost to a blip). */
  private async post(url: string, json: unknown): Promise<void> {
    await this.worker.post(url, { json, attempts: apiAwayAttempts, whileStopping: true });
  }

  private async beat(): Promise<void> {
    try {
      const { cancel } = await this.worker.http
        .post('v1/runner/heartbeat', { json: { runner: this.options.name, runs: [...this.active.keys()] }, timeout: { request: 10_000 } })
        .json<{ cancel: string[] }>();
      for (const id of cancel) {
        const controller = this.active.get(id);
        if (controller && !controller.signal.aborted) {
          this.log.info({ run: id }, 'run cancelled');
          controller.abort(new Error('cancelled'));
        }
      }
    } catch (error) {
      this.log.warn({ error: describeFailure(error) }, 'heartbeat failed');
    }
  }
}

/** Gathers output and sends it in order, one request at a time. */
class OutputStream {
  private pending: Buffer[] = [];
  private size = 0;
  private sending: Promise<void> = Promise.resolve();
  private timer?: NodeJS.Timeout;
  private gone = false;
  /** Bytes handed to `deliver` so far: the next chunk's offset. */
  private offset = 0;

  constructor(
    private readonly deliver: (chunk: Buffer, offset: number) => Promise<'ok' | 'gone'>,
    private readonly onGone: () => void,
  ) {}

  write(chunk: Buffer): void {
    if (this.gone) return;
    this.pending.push(chunk);
    this.size += chunk.length;
    if (this.size >= flushBytes) this.flush();
    else this.timer ??= setTimeout(() => this.flush(), flushMs);
  }

  private flush(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.pending.length === 0) return;
    const chunk = Buffer.concat(this.pending);
    this.pending = [];
    this.size = 0;
    const offset = this.offset;
    this.offset += chunk.length;
    this.sending = this.sending.then(async () => {
      if (this.gone) return;
      const answer = await this.deliver(chunk, offset).catch(() => 'ok' as const);
      if (answer === 'gone') {
        this.gone = true;
        this.onGone();
      }
    });
  }

  async close(): Promise<void> {
    this.flush();
    await this.sending;
  }
}
