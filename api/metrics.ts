// The API's Prometheus metrics (served by protocol/metrics.ts on `metrics.listen`). One Registry per
// server, never prom-client's global one, so several servers in one process keep theirs apart.
//
// What is counted where: gauges of what the scheduler holds (machines by state, kind, pool and lab
// host; the queue; live reservations; waiting members; warm machines; health scores) are read from
// its memory at scrape time, so they cannot drift from it; counters and histograms are fed as things
// happen, by the scheduler's `event` and `provisioning` notices, the store's commits, image uploads,
// runs' ends and a Koa middleware for requests.
//
// Labels stay bounded: machine names, kinds, pools and lab hosts come from the config; states,
// outcomes, stages and codes from the code (an agent's failure code is checked against a pattern of
// 48 characters at most); routes are the router's patterns (`/v1/reservations/:id`), never a path
// as asked. No reservation id, owner, token or image name is ever a label.
import type Koa from 'koa';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { Stage } from '../protocol/api.js';
import type { ProvisioningRow, RunRow } from './db/index.js';
import { DomainError } from './domain-error.js';
import { imageFormats, type ImageCatalog } from './images.js';
import type { JobService } from './jobs/service.js';
import { stageDurations } from './scheduler/health.js';
import { isEnded } from './scheduler/lifecycle.js';
import type { MachineEntry, Reservation } from './scheduler/records.js';
import type { Scheduler } from './scheduler/scheduler.js';

/** Seconds, from a tenth to an hour and more: boots, queue waits. */
const slowBuckets = [0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600];
/** Seconds, from a millisecond to a minute: requests, commits. */
const fastBuckets = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

export class ApiMetrics {
  readonly registry = new Registry();
  private readonly requests: Histogram<'method' | 'route' | 'status'>;
  private readonly commits: Histogram<'outcome'>;
  private readonly queueWait: Histogram<'outcome'>;
  private readonly ended: Counter<'outcome' | 'code'>;
  private readonly provisionings: Counter<'kind' | 'outcome' | 'code' | 'purpose'>;
  private readonly provisioningSeconds: Histogram<'kind' | 'outcome' | 'purpose'>;
  private readonly stageSeconds: Histogram<'kind' | 'stage'>;
  private readonly uploads: Counter<'format' | 'outcome' | 'code'>;
  private readonly uploadBytes: Counter<'format'>;
  private readonly uploadSeconds: Histogram<'format'>;
  private readonly uploadThroughput: Histogram<'format'>;
  private readonly runs: Counter<'state' | 'fault'>;
  private readonly leader: Gauge;

  constructor() {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    this.requests = new Histogram({
      name: 'paddock_http_request_duration_seconds',
      help: 'API requests until the answer starts, by route pattern, method and status',
      labelNames: ['method', 'route', 'status'],
      buckets: fastBuckets,
      registers,
    });
    this.commits = new Histogram({
      name: 'paddock_store_commit_duration_seconds',
      help: "The store's commits (one transaction for every change marked since the last), by outcome",
      labelNames: ['outcome'],
      buckets: fastBuckets,
      registers,
    });
    this.queueWait = new Histogram({
      name: 'paddock_queue_wait_seconds',
      help: 'Time a request waited in the queue, from its creation to its first grant (outcome granted) or to its end while queued',
      labelNames: ['outcome'],
      buckets: slowBuckets,
      registers,
    });
    this.ended = new Counter({
      name: 'paddock_reservations_ended_total',
      help: "Reservations that ended, by end state and the failure's code (none when nothing failed)",
      labelNames: ['outcome', 'code'],
      registers,
    });
    this.provisionings = new Counter({
      name: 'paddock_provisionings_total',
      help: 'Provisionings that ended, by machine kind, outcome (ready or failed), failure code and purpose (reservation or qualification)',
      labelNames: ['kind', 'outcome', 'code', 'purpose'],
      registers,
    });
    this.provisioningSeconds = new Histogram({
      name: 'paddock_provisioning_duration_seconds',
      help: 'Time from the start of a provisioning to ready (or to its failure), by machine kind',
      labelNames: ['kind', 'outcome', 'purpose'],
      buckets: slowBuckets,
      registers,
    });
    this.stageSeconds = new Histogram({
      name: 'paddock_provisioning_stage_duration_seconds',
      help: 'Time to reach each readiness stage from the one before (powerConfirmed, bootSeen, addressKnown, sshReady, probed), by machine kind',
      labelNames: ['kind', 'stage'],
      buckets: slowBuckets,
      registers,
    });
    this.uploads = new Counter({
      name: 'paddock_image_uploads_total',
      help: 'Image uploads that ended, by format, outcome (stored or refused) and the refusal code',
      labelNames: ['format', 'outcome', 'code'],
      registers,
    });
    this.uploadBytes = new Counter({
      name: 'paddock_image_upload_bytes_total',
      help: 'Bytes of the images stored by uploads',
      labelNames: ['format'],
      registers,
    });
    this.uploadSeconds = new Histogram({
      name: 'paddock_image_upload_duration_seconds',
      help: 'Time an upload that was stored took, from its request to its record',
      labelNames: ['format'],
      buckets: slowBuckets,
      registers,
    });
    this.uploadThroughput = new Histogram({
      name: 'paddock_image_upload_throughput_bytes_per_second',
      help: 'Bytes per second of each upload that was stored',
      labelNames: ['format'],
      buckets: [1e5, 1e6, 1e7, 2.5e7, 5e7, 1e8, 2.5e8, 5e8, 1e9, 2.5e9],
      registers,
    });
    this.runs = new Counter({
      name: 'paddock_runs_ended_total',
      help: 'Job runs that ended, by end state (passed, failed, timed_out, cancelled) and fault (infrastructure when the runner host was at fault, else none)',
      labelNames: ['state', 'fault'],
      registers,
    });
    this.leader = new Gauge({
      name: 'paddock_api_leader',
      help: 'Whether this API server leads (1: it serves the API and runs the scheduler) or follows another on the same PostgreSQL database (0); one server on SQLite always leads',
      registers,
    });
  }

  /** This server leads from now on (it followed until then). */
  leading(): void {
    this.leader.set(1);
  }

  /** Measures every request by the route it matched; register it before the error middleware, so the status is the one sent. */
  middleware(): Koa.Middleware {
    return async (ctx, next) => {
      const started = performance.now();
      try {
        await next();
      } finally {
        const route = (ctx as { _matchedRoute?: string | RegExp })._matchedRoute;
        this.requests.observe(
          { method: ctx.method, route: typeof route === 'string' ? route : 'unmatched', status: String(ctx.status) },
          (performance.now() - started) / 1000,
        );
      }
    };
  }

  /** The scheduler's gauges (read at scrape time) and its notices. */
  watch(scheduler: Scheduler): void {
    const registers = [this.registry];
    const { observed } = scheduler;
    const isSystem = (reservation: Reservation) => scheduler.health.isQualification(reservation);
    new Gauge({
      name: 'paddock_machines',
      help: 'Machines by state, kind, pool (the pool label; empty for none) and lab host',
      labelNames: ['state', 'kind', 'pool', 'lab_host'],
      registers,
      collect() {
        this.reset();
        for (const machine of scheduler.inventory.machines.values())
          this.inc({ state: machine.state, kind: machine.kind, pool: machine.labels.pool ?? '', lab_host: machine.labHost });
      },
    });
    new Gauge({
      name: 'paddock_machines_unreachable',
      help: 'Machines their lab host reports it cannot reach now (a missing serial device, a PDU that does not answer), by kind and lab host',
      labelNames: ['kind', 'lab_host'],
      registers,
      collect() {
        this.reset();
        for (const machine of scheduler.inventory.machines.values())
          if (machine.unreachable !== undefined) this.inc({ kind: machine.kind, lab_host: machine.labHost });
      },
    });
    new Gauge({
      name: 'paddock_queue_depth',
      help: 'Requests waiting in the queue (qualification boots left out)',
      registers,
      collect() {
        this.set([...observed.queue].filter((reservation) => !isSystem(reservation)).length);
      },
    });
    new Gauge({
      name: 'paddock_reservations',
      help: 'Live reservations by state (qualification boots left out)',
      labelNames: ['state'],
      registers,
      collect() {
        this.reset();
        for (const reservation of observed.live.values()) if (!isSystem(reservation)) this.inc({ state: reservation.state });
      },
    });
    new Gauge({
      name: 'paddock_waiting_members',
      help: 'Members whose machine failed while being provisioned, waiting for another machine (retry on another machine)',
      registers,
      collect() {
        let waiting = 0;
        for (const reservation of observed.live.values()) waiting += reservation.allocations.filter((allocation) => allocation.state === 'waiting').length;
        this.set(waiting);
      },
    });
    new Gauge({
      name: 'paddock_warm_machines',
      help: 'Machines booted ahead of demand and ready to hand out, by kind and lab host',
      labelNames: ['kind', 'lab_host'],
      registers,
      collect() {
        this.reset();
        for (const name of scheduler.warm.warmNow.keys()) {
          const machine = scheduler.inventory.get(name);
          if (machine) this.inc({ kind: machine.kind, lab_host: machine.labHost });
        }
      },
    });
    new Gauge({
      name: 'paddock_machine_health_score',
      help: "Each machine's share of its last provisionings (the health window) that came up, 1 with none",
      labelNames: ['machine'],
      registers,
      collect() {
        this.reset();
        for (const [machine, score] of scheduler.health.scores()) this.set({ machine }, score.score);
      },
    });
    new Gauge({
      name: 'paddock_machine_health_samples',
      help: 'How many provisionings the health score of each machine is taken over',
      labelNames: ['machine'],
      registers,
      collect() {
        this.reset();
        for (const [machine, score] of scheduler.health.scores()) this.set({ machine }, score.samples);
      },
    });
    observed.changes.on('event', (row: { type: string; from: string | null; to: string; at: Date }, reservation: Reservation) => {
      if (row.type !== 'state' || isSystem(reservation)) return;
      const to = row.to as Reservation['state'];
      // One sample per request: one sent back to the queue (a full cloud) was counted at its first grant.
      if (row.from === 'queued' && !reservation.requeues)
        this.queueWait.observe({ outcome: to === 'allocated' ? 'granted' : to }, Math.max(0, row.at.getTime() - reservation.createdAt) / 1000);
      if (isEnded(to)) this.ended.inc({ outcome: to, code: to === 'released' ? 'none' : failureCode(reservation) });
    });
    observed.changes.on('provisioning', (row: ProvisioningRow, machine: MachineEntry) => this.provisioned(row, machine));
    observed.store.onCommit = (seconds, failed) => this.commits.observe({ outcome: failed ? 'failed' : 'committed' }, seconds);
  }

  /** Uploads as they end. */
  watchImages(images: ImageCatalog): void {
    images.onUpload = ({ format, seconds, bytes, error }) => {
      const known = imageFormats.includes(format as never) ? format : 'other';
      if (error !== undefined) return this.uploads.inc({ format: known, outcome: 'refused', code: error instanceof DomainError ? error.code : 'internal' });
      this.uploads.inc({ format: known, outcome: 'stored', code: 'none' });
      this.uploadBytes.inc({ format: known }, bytes ?? 0);
      this.uploadSeconds.observe({ format: known }, seconds);
      if (bytes !== undefined && seconds > 0) this.uploadThroughput.observe({ format: known }, bytes / seconds);
    };
  }

  /** Runs as they end. */
  watchRuns(jobs: JobService): void {
    jobs.runs.onEnded = (run: RunRow) => this.runs.inc({ state: run.state, fault: run.fault ?? 'none' });
  }

  private provisioned(row: ProvisioningRow, machine: Pick<MachineEntry, 'kind'>): void {
    const kind = machine.kind;
    const purpose = row.qualification ? 'qualification' : 'reservation';
    const startedAt = row.startedAt.getTime();
    this.provisionings.inc({ kind, outcome: row.outcome, code: row.code ?? 'none', purpose });
    this.provisioningSeconds.observe({ kind, outcome: row.outcome, purpose }, Math.max(0, row.endedAt.getTime() - startedAt) / 1000);
    for (const { stage, seconds } of stageDurations(JSON.parse(row.stages) as Partial<Record<Stage, string>>, startedAt))
      this.stageSeconds.observe({ kind, stage }, seconds);
  }
}

/** The code of the failure that ended a reservation: its current members' first, else any; `none`. */
function failureCode(reservation: Reservation): string {
  const failed = reservation.allocations.filter((allocation) => allocation.failure !== undefined);
  const current = failed.find((allocation) => allocation.replacedBy === undefined) ?? failed[0];
  return current?.failure?.code ?? 'none';
}
