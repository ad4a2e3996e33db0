// The lab-host agent: pulls tasks from the API over HTTP (long-poll, so it needs no inbound
// connection), runs them through the shared loop, and reports stages, readiness, failures and
// releases back. `paddock serve` runs one in-process over loopback HTTP, so the path a remote lab
// host uses is always the path exercised. Its sweeps read the loop's provisioning records
// (journal.ts, under DATA/agent/provisioning/): a reservation with a record on a machine left work
// there; with what kinds report of traces outside the records (Provisioner.owned: cloud servers,
// keys on static hosts), that is what is released once its reservation has ended, and a ready
// machine of a reservation that lives on is handed back to its kind (Provisioner.adopt). Beside the
// tasks it sends its machines' console logs to the API (console-shipper.ts) and opens the tunnels
// owners ask for (tunnels.ts), also by dialling out.
import { setTimeout as sleep } from 'node:timers/promises';
import path from 'node:path';
import { MachineChecks } from './checks.js';
import { ConsoleShipper } from './console-shipper.js';
import { ImageCache } from './image-cache.js';
import type { AgentHeartbeat, AgentMachine, AgentReport, AgentTask, WarmPlan } from '../protocol/agent.js';
import { version } from '../protocol/version.js';
import { describeFailure, PullWorker } from '../protocol/worker.js';
import { silentLog, type Log } from '../protocol/log.js';
import { createProvisioner, machineKinds } from '../provisioners/registry.js';
import { ProvisioningJournal, type JournalEntry } from './journal.js';
import { TaskLoop } from './loop.js';
import { TunnelEnd } from './tunnels.js';
import { WarmPool, warmPrefix } from './warm.js';
import { AgentMetrics } from './metrics.js';
import type { Registry } from 'prom-client';
import type { Provisioner } from '../provisioners/types.js';

export interface AgentOptions {
  url: string;
  token: string;
  name: string;
  dataDir: string;
  kinds?: string[];
  concurrency?: number;
  provisionTimeoutMs?: number;
  /** How often leftovers of ended reservations are looked for after the first sweep at start. */
  sweepIntervalMs?: number;
  /** An image download that moves no byte for this long fails (default 60 s); a slow one runs as long as it needs. */
  imageIdleTimeoutMs?: number;
  /** The most bytes one console log may hold (VM serial logs, board logs); 16 MiB by default. */
  consoleLogMax?: number;
  /** How often its machines are checked (checks.ts), 30 s by default; 0 checks none. */
  checkIntervalMs?: number;
  /** Where its lines go (component agent, with its name as `agent`); none when not given. */
  log?: Log;
  /** Where its metrics go (metrics.ts): the API's registry in `paddock serve`; a registry of its own when not given. */
  metrics?: Registry;
}

export class Agent {
  private readonly worker: PullWorker<AgentTask>;
  private readonly loop: TaskLoop;
  private readonly provisioners = new Map<string, Provisioner>();
  private readonly kinds: string[];
  private readonly images: ImageCache;
  private readonly journal: ProvisioningJournal;
  private readonly consoles: ConsoleShipper;
  private readonly tunnels: TunnelEnd;
  private readonly checks?: MachineChecks;
  private readonly warm: WarmPool;
  readonly metrics: AgentMetrics;
  /** Unreadable records and records of unknown machines already reported (reported once per agent run). */
  private readonly reported = new Set<string>();
  private readonly log: Log;
  private sweeper?: NodeJS.Timeout;
  private heartbeats?: NodeJS.Timeout;
  private beating = false;
  /** Leftovers seen by the last periodic sweep (machine + reservation): removed when seen again. */
  private suspects = new Set<string>();

  constructor(private readonly options: AgentOptions) {
    this.kinds = options.kinds ?? Object.keys(machineKinds);
    this.log = (options.log ?? silentLog()).child({ component: 'agent', agent: options.name });
    this.metrics = new AgentMetrics(options.metrics);
    this.worker = new PullWorker<AgentTask>({
      url: options.url,
      token: options.token,
      claimPath: 'v1/agent/claim',
      // `resume` on the first claim: the API hands back what this agent held before it stopped. The
      // version and the clock let the API tell a lab host that lags behind (`paddock agents ls`).
      claimBody: (first) => ({ agent: options.name, kinds: this.kinds, resume: first, wait: 20, version, clock: new Date().toISOString() }),
      tasksOf: (answer) => (answer as { tasks: AgentTask[] }).tasks,
      onTask: (task) => void this.loop.submit(task),
      log: this.log,
    });
    this.images = new ImageCache(this.worker.http, path.join(options.dataDir, 'agent', 'images'), options.imageIdleTimeoutMs);
    this.journal = new ProvisioningJournal(path.join(options.dataDir, 'agent', 'provisioning'));
    this.tunnels = new TunnelEnd({
      url: options.url,
      token: options.token,
      name: options.name,
      journal: this.journal,
      log: this.log.child({ component: 'tunnel' }),
    });
    this.consoles = new ConsoleShipper({ http: this.worker.http, dir: path.join(options.dataDir, 'agent', 'consoles'), log: this.log });
    this.loop = new TaskLoop({
      provisioner: (kind) => this.provisioner(kind),
      journal: this.journal,
      report: (taskId, report) => this.report(taskId, report),
      log: this.log,
      concurrency: options.concurrency ?? 16,
      provisionTimeoutMs: options.provisionTimeoutMs ?? 600_000,
      consoleEnded: (reservationId, machine) => this.consoles.finish(reservationId, machine),
      warm: { preempt: (machine, image) => this.warm.preempt(machine, image), take: (request, report, signal) => this.warm.take(request, report, signal) },
    });
    this.warm = new WarmPool({
      dataDir: options.dataDir,
      consolesDir: this.consoles.dir,
      agent: options.name,
      journal: this.journal,
      provisioner: (kind) => this.provisioner(kind),
      exclusive: (machine, work) => this.loop.exclusive(machine, work),
      exchange: (report) => this.worker.http.post('v1/agent/warm', { json: report }).json<WarmPlan>(),
      log: this.log.child({ component: 'warm' }),
      provisionTimeoutMs: options.provisionTimeoutMs ?? 600_000,
    });
    const checkIntervalMs = options.checkIntervalMs ?? 30_000;
    if (checkIntervalMs > 0) {
      this.checks = new MachineChecks({
        machines: () => this.machines(),
        provisioner: (kind) => this.provisioner(kind),
        intervalMs: checkIntervalMs,
        // What changed goes to the API at once, not at the next heartbeat.
        changed: () => void this.beat(),
        log: this.log,
      });
    }
  }

  start(): void {
    this.beating = true;
    this.heartbeat();
    this.checks?.start();
    this.consoles.start();
    this.tunnels.start();
    this.worker.start(() => this.startSweeping());
    void this.warm.start().catch((error: unknown) => this.log.error({ error: (error as Error).message }, 'warm pools not kept'));
  }

  /**
   * Heartbeats beside the claims, so the API hears this agent while it sweeps at start or backs
   * off; the API answers how often it wants them.
   */
  private heartbeat(): void {
    void this.beat().then((delay) => {
      if (!this.beating) return;
      this.heartbeats = setTimeout(() => this.heartbeat(), delay);
      this.heartbeats.unref();
    });
  }

  /** One heartbeat, with what the last round of checks found; resolves with the delay until the next. */
  private beat(): Promise<number> {
    const problems = this.checks?.problems;
    const checked = problems ? { problems, kinds: this.kinds } : {};
    const heartbeat: AgentHeartbeat = { agent: this.options.name, version, clock: new Date().toISOString(), ...checked };
    return this.worker.http
      .post('v1/agent/heartbeat', { json: heartbeat })
      .json<{ intervalSeconds: number }>()
      .then(
        (answer) => Math.max(100, answer.intervalSeconds * 1000),
        (error: unknown) => {
          // Refused (not the API being away): said, so the lab host's operator sees why.
          const failure = describeFailure(error);
          if (/^HTTP 4/.test(failure))
            this.log.warn({ error: failure, answer: String((error as { response?: { body?: unknown } }).response?.body).slice(0, 500) }, 'heartbeat refused');
          return 5000;
        },
      );
  }

  /** The machines of this lab host and of this agent's kinds, as the API lists them. */
  private async machines(): Promise<AgentMachine[]> {
    return (await this.worker.http
      .get('v1/agent/machines', { searchParams: { kinds: this.kinds.join(','), agent: this.options.name } })
      .json()) as AgentMachine[];
  }

  async stop(): Promise<void> {
    this.beating = false;
    clearTimeout(this.heartbeats);
    this.checks?.stop();
    clearInterval(this.sweeper);
    await Promise.all([this.worker.stop(), this.tunnels.stop()]);
    // Provisioning in flight is abandoned (the next start resumes it); a release under way is
    // given a few seconds to finish so the host is left clean. Warm VMs run on for the next start.
    this.warm.stop();
    this.loop.stop();
    await Promise.race([this.loop.idle(), sleep(10_000, undefined, { ref: false })]);
    await Promise.all([...this.provisioners.values()].map((provisioner) => provisioner.close?.()));
    // The last lines the machines printed go to the API before the agent ends.
    this.consoles.stop();
    await Promise.race([this.consoles.pass(), sleep(5_000, undefined, { ref: false })]);
  }

  private provisioner(kind: string): Provisioner {
    const cached = this.provisioners.get(kind);
    if (cached) return cached;
    const definition = Object.hasOwn(machineKinds, kind) ? machineKinds[kind] : undefined;
    if (!definition) throw new Error(`this agent has no provisioner for kind ${kind}`);
    const provisioner: Provisioner = createProvisioner(definition, {
      dataDir: this.options.dataDir,
      consolesDir: this.consoles.dir,
      ...(this.options.consoleLogMax === undefined ? {} : { consoleLogMax: this.options.consoleLogMax }),
      images: this.images,
      log: this.log.child({ component: 'provisioner', kind }),
      observePower: this.metrics.power,
      lost: (request, reason, fault) => {
        if (this.warm.lost(request.allocationId)) return;
        this.log.warn({ reservation: request.reservationId, allocation: request.allocationId, reason }, 'machine lost');
        this.report(request.allocationId, { kind: 'failed', reason, fault, code: 'machine_lost' }).catch((error: unknown) =>
          this.log.error({ allocation: request.allocationId, error: describeFailure(error) }, 'could not report the loss'),
        );
      },
    });
    this.provisioners.set(kind, provisioner);
    return provisioner;
  }

  private async startSweeping(): Promise<void> {
    // At start nothing is being provisioned yet, so whatever no live reservation explains is a
    // leftover. Later sweeps run beside provisioning: a server made for a reservation granted after
    // the list of live ones was read would look orphaned, so a leftover must be seen twice in a row.
    await this.sweepLeaks(false).catch((error) => this.log.error({ error: (error as Error).message }, 'leak sweep failed'));
    if (this.options.sweepIntervalMs !== undefined && this.options.sweepIntervalMs > 0) {
      let sweeping = false;
      this.sweeper = setInterval(() => {
        if (sweeping || !this.worker.isRunning) return;
        sweeping = true;
        void this.sweepLeaks(true)
          .catch((error) => this.log.error({ error: (error as Error).message }, 'leak sweep failed'))
          .finally(() => (sweeping = false));
      }, this.options.sweepIntervalMs);
      this.sweeper.unref();
    }
  }

  /**
   * Removes what ended reservations left on this agent's machines (after a crash, say), and takes
   * back the ready machines of reservations that live on. With `twice`, only what the previous
   * sweep saw orphaned too is removed.
   */
  private async sweepLeaks(twice: boolean): Promise<void> {
    const seen = new Set<string>();
    // One line per reason, not one per machine: a cloud that is down would otherwise fill the log.
    const unlisted = new Map<string, string[]>();
    const machines = await this.machines();
    // The first sweep runs before any task is taken: temporary files of interrupted writes can go.
    const records = this.recordsByMachine(await this.journal.list({ clean: !twice }), machines);
    await Promise.all(
      machines.map(async (machine) => {
        const provisioner = this.provisioner(machine.kind);
        const left = new Map<string, JournalEntry | undefined>();
        for (const entry of records.get(machine.name) ?? []) {
          const live = machine.liveReservations.includes(entry.reservationId);
          if ('problem' in entry) this.reportOnce(`${machine.name}/${entry.reservationId}`, this.unreadable(entry, live));
          else if (entry.record.kind !== machine.kind) {
            this.reportOnce(
              `${machine.name}/${entry.reservationId}`,
              `the provisioning record of ${entry.reservationId} on ${machine.name} is of kind ${entry.record.kind}, the machine now of kind ${machine.kind}: left alone`,
            );
            continue;
          } else if (live) await this.loop.adopt(machine, entry.record);
          left.set(entry.reservationId, entry);
        }
        if (provisioner.owned) {
          try {
            for (const reservationId of await provisioner.owned(machine)) if (!left.has(reservationId)) left.set(reservationId, undefined);
          } catch (error) {
            const reason = (error as Error).message;
            unlisted.set(reason, [...(unlisted.get(reason) ?? []), machine.name]);
          }
        }
        for (const [reservationId, entry] of left) {
          if (machine.liveReservations.includes(reservationId)) continue;
          const key = `${machine.name}\u0000${reservationId}`;
          seen.add(key);
          if (twice && !this.suspects.has(key)) continue;
          this.log.info({ reservation: reservationId, machine: machine.name }, `removing traces of ended reservation ${reservationId} from ${machine.name}`);
          await this.loop.cleanUp(machine, reservationId, entry && 'record' in entry ? entry.record : undefined);
        }
      }),
    );
    if (twice) {
      const byKind = new Map<string, AgentMachine[]>();
      for (const machine of machines) byKind.set(machine.kind, [...(byKind.get(machine.kind) ?? []), machine]);
      for (const [kind, ofKind] of byKind) {
        await this.provisioner(kind)
          .sweep?.(ofKind)
          .catch((error: unknown) => this.log.error({ kind, error: (error as Error).message }, 'sweep failed'));
      }
    }
    for (const [reason, names] of unlisted) {
      this.log.warn(
        `cannot list what ${names.length === 1 ? names[0] : `${names.length} machines (${names[0]}, …)`} hold${names.length === 1 ? 's' : ''}: ${reason}`,
      );
    }
    this.suspects = seen;
  }

  /** The records by machine; records of machines this agent is not given (gone from the config, retired) are reported and kept. */
  private recordsByMachine(entries: JournalEntry[], machines: AgentMachine[]): Map<string, JournalEntry[]> {
    const known = new Set(machines.map((machine) => machine.name));
    const byMachine = new Map<string, JournalEntry[]>();
    for (const entry of entries) {
      // Warm VMs are no reservation's: the warm pool keeps and stops them (warm.ts).
      if (entry.reservationId.startsWith(warmPrefix)) continue;
      if (!known.has(entry.machine)) {
        this.reportOnce(
          `${entry.machine}/${entry.reservationId}`,
          `a provisioning record of ${entry.reservationId} is on ${entry.machine}, a machine this agent does not serve now: left alone`,
        );
        continue;
      }
      byMachine.set(entry.machine, [...(byMachine.get(entry.machine) ?? []), entry]);
    }
    return byMachine;
  }

  private unreadable(entry: Extract<JournalEntry, { problem: string }>, live: boolean): string {
    const what = `the provisioning record of ${entry.reservationId} on ${entry.machine} is unreadable (${entry.problem})`;
    return live ? `${what}: its reservation lives on, its next task replaces the record` : `${what}: released as a leftover`;
  }

  private reportOnce(key: string, line: string): void {
    if (this.reported.has(key)) return;
    this.reported.add(key);
    this.log.warn(line);
  }

  /** A 4xx (the reservation ended meanwhile) is not retried: retrying cannot help. */
  private async report(taskId: string, report: AgentReport): Promise<void> {
    await this.worker.post(`v1/agent/tasks/${encodeURIComponent(taskId)}/report`, { json: { agent: this.options.name, report } });
    this.metrics.reported(report);
  }
}
