// The shared loop that drives provisioners for an agent: one queue per machine so a machine's
// release never overlaps its provisioning, a limit on tasks at once, a timeout on provisioning,
// bounded retries with backoff for releases, the mapping of errors to reports, and the persisted
// provisioning state (journal.ts): a record per machine and reservation, written when provisioning
// starts, on every stage and at readiness, removed once a release succeeds; a kind reads and saves
// its own part (`detail`) through the request's `state`. Kinds implement only the Provisioner
// interface; none of this is written per kind.
import { setTimeout as sleep } from 'node:timers/promises';
import type { AgentMachine, AgentReport, AgentTask, Stage } from '../protocol/agent.js';
import { ProvisionError, type Provisioner, type ProvisionRequest, type ProvisionState, type Readiness, type StageReporter } from '../provisioners/types.js';
import type { WarmPool } from './warm.js';
import { detailOf, OpenRecord, recordVersion, type ProvisioningJournal, type ProvisioningRecord } from './journal.js';
import { runCheck } from './qualify-check.js';
import type { Log } from '../protocol/log.js';

export interface LoopOptions {
  provisioner: (kind: string) => Provisioner;
  journal: ProvisioningJournal;
  report: (taskId: string, report: AgentReport) => Promise<void>;
  log: Log;
  concurrency: number;
  provisionTimeoutMs: number;
  releaseAttempts?: number;
  /** After a machine's release: its console log is sent to the API in full, then removed here. */
  consoleEnded?: (reservationId: string, machine: string) => Promise<void>;
  retryDelayMs?: (attempt: number) => number;
  /** The warm pool (warm.ts): a provisioning takes the machine's warm VM, or has it stopped first. */
  warm?: Pick<WarmPool, 'preempt' | 'take'>;
}

/** Exponential backoff capped at 30 s: 1 s, 2 s, 4 s, … */
export const defaultRetryDelay = (attempt: number) => Math.min(30_000, 1000 * 2 ** (attempt - 1));

export class TaskLoop {
  private readonly machineQueues = new Map<string, Promise<void>>();
  private readonly inFlight = new Map<string, AbortController>();
  /** Allocations made ready or adopted by this agent run: not adopted again. */
  private readonly readyHere = new Set<string>();
  private running = 0;
  private readonly slotWaiters: (() => void)[] = [];
  private stopped = false;

  constructor(private readonly options: LoopOptions) {}

  /** Queues a task behind earlier ones for the same machine. A release aborts a provisioning (or a power action, a re-deploy) in flight. */
  submit(task: AgentTask): Promise<void> {
    if (task.action === 'release') this.inFlight.get(task.id)?.abort(new Error('released while provisioning'));
    if (task.action === 'provision') this.options.warm?.preempt(task.machine.name, task.image);
    return this.enqueue(task.machine.name, () => this.run(task));
  }

  /** Runs work in the machine's queue, as a task would (the warm pool's boots and stops). */
  exclusive(machine: string, work: () => Promise<void>): Promise<void> {
    return this.enqueue(machine, work);
  }

  /**
   * Releases what an ended reservation left on a machine (the agent's leak sweep), in the machine's
   * queue, without a report; the record goes once the release succeeds. Resolves to whether it did.
   */
  cleanUp(machine: AgentMachine, reservationId: string, record?: ProvisioningRecord): Promise<boolean> {
    let done = false;
    return this.enqueue(machine.name, async () => {
      if (this.stopped) return;
      const allocationId = record?.allocationId ?? `${reservationId}.sweep`;
      const request = this.request({ id: allocationId, reservationId, machine, publicKey: '' }, this.recordState(machine, reservationId, allocationId));
      try {
        await this.releaseOnce(this.options.provisioner(machine.kind), request);
        done = true;
      } catch (error) {
        this.options.log.error({ reservation: reservationId, machine: machine.name, error: (error as Error).message }, 'could not clean up');
      }
    }).then(() => done);
  }

  /**
   * Hands a ready machine of a live reservation, known from its record, back to its kind after an
   * agent restart (Provisioner.adopt), once per allocation and agent run.
   */
  adopt(machine: AgentMachine, record: ProvisioningRecord): Promise<void> {
    return this.enqueue(machine.name, async () => {
      const provisioner = this.options.provisioner(machine.kind);
      if (this.stopped || !record.ready || !provisioner.adopt || this.readyHere.has(record.allocationId)) return;
      this.readyHere.add(record.allocationId);
      const request = this.request(
        { id: record.allocationId, reservationId: record.reservationId, machine, publicKey: '' },
        this.recordState(machine, record.reservationId, record.allocationId),
      );
      await provisioner
        .adopt(request)
        .catch((error: unknown) =>
          this.options.log.error(
            { reservation: record.reservationId, machine: machine.name, allocation: record.allocationId, error: (error as Error).message },
            'could not take back',
          ),
        );
    });
  }

  private enqueue(machine: string, work: () => Promise<void>): Promise<void> {
    const previous = this.machineQueues.get(machine) ?? Promise.resolve();
    const next = previous.then(() => this.withSlot(work));
    this.machineQueues.set(machine, next);
    // The caller hears of a failure; this chain must not be left with it unhandled.
    const forget = () => {
      if (this.machineQueues.get(machine) === next) this.machineQueues.delete(machine);
    };
    next.then(forget, forget);
    return next;
  }

  /** Resolves when every submitted task has finished. */
  async idle(): Promise<void> {
    while (this.machineQueues.size > 0) await Promise.allSettled([...this.machineQueues.values()]);
  }

  stop(): void {
    this.stopped = true;
    for (const controller of this.inFlight.values()) controller.abort(new Error('agent stopping'));
  }

  private async withSlot(work: () => Promise<void>): Promise<void> {
    while (this.running >= this.options.concurrency) await new Promise<void>((resolve) => this.slotWaiters.push(resolve));
    this.running += 1;
    try {
      await work();
    } finally {
      this.running -= 1;
      this.slotWaiters.shift()?.();
    }
  }

  private async run(task: AgentTask): Promise<void> {
    if (this.stopped) return;
    const provisioner = this.options.provisioner(task.machine.kind);
    if (task.action === 'provision') await this.provision(task, provisioner);
    else if (task.action === 'release') await this.release(task, provisioner);
    else await this.act(task, provisioner);
  }

  private request(task: Pick<AgentTask, 'id' | 'reservationId' | 'machine' | 'publicKey'> & Partial<AgentTask>, state: ProvisionState): ProvisionRequest {
    return {
      reservationId: task.reservationId,
      allocationId: task.id,
      machine: task.machine,
      publicKey: task.publicKey,
      ...(task.privateKey !== undefined ? { privateKey: task.privateKey } : {}),
      ...(task.consoleSecret !== undefined ? { consoleSecret: task.consoleSecret } : {}),
      ...(task.image ? { image: task.image } : {}),
      ...(task.cmdline !== undefined ? { cmdline: task.cmdline } : {}),
      ...(task.hardCapAt ? { hardCapAt: Date.parse(task.hardCapAt) } : {}),
      state,
    };
  }

  /**
   * The record for a provisioning, written before the kind acts. A provisioning taken up again
   * (after an agent crash) keeps its record's start time and detail; a record of another allocation
   * (or one that cannot be read) is replaced.
   */
  private async openRecord(task: AgentTask): Promise<OpenRecord> {
    const { journal } = this.options;
    const found = await journal.read(task.machine.name, task.reservationId);
    if (found && 'problem' in found)
      this.options.log.warn(
        { reservation: task.reservationId, machine: task.machine.name, allocation: task.id, problem: found.problem },
        'replacing the unreadable provisioning record',
      );
    const earlier = found && 'record' in found && found.record.allocationId === task.id ? found.record : undefined;
    const now = new Date().toISOString();
    const record = new OpenRecord(journal, {
      version: recordVersion,
      kind: task.machine.kind,
      machine: task.machine.name,
      reservationId: task.reservationId,
      allocationId: task.id,
      ...(earlier?.stage ? { stage: earlier.stage } : {}),
      ready: false,
      startedAt: earlier?.startedAt ?? now,
      updatedAt: now,
      ...(earlier?.detail !== undefined ? { detail: earlier.detail } : {}),
    });
    await record.update({});
    return record;
  }

  /** The state handle outside provisioning (releases, adoption): the record as it is on disk, of whichever allocation. */
  private recordState(machine: AgentTask['machine'], reservationId: string, allocationId: string): ProvisionState {
    const { journal } = this.options;
    const current = async () => {
      const found = await journal.read(machine.name, reservationId);
      if (found && 'problem' in found)
        this.options.log.warn({ reservation: reservationId, machine: machine.name, problem: found.problem }, 'the provisioning record is unreadable');
      return found && 'record' in found ? found.record : undefined;
    };
    return {
      read: async () => (await current())?.detail,
      save: async (detail) => {
        const now = new Date().toISOString();
        const record = await current();
        await journal.write({
          ...(record ?? { version: recordVersion, kind: machine.kind, machine: machine.name, reservationId, allocationId, ready: false, startedAt: now }),
          updatedAt: now,
          detail,
        });
      },
    };
  }

  private provision(task: AgentTask, provisioner: Provisioner): Promise<void> {
    return this.bringUp(
      task,
      async (request, report, signal) => (await this.options.warm?.take(request, report, signal)) ?? provisioner.provision(request, report, signal),
    );
  }

  /**
   * A power action or a re-deploy during the lease, done like a provisioning (its record, the
   * timeout, the reports, a release aborting it): the machine's readiness is tracked again from
   * powerConfirmed. A re-deploy releases what runs (keeping the console log and the record) and
   * provisions the machine again with the task's image; `power off` reports `off`.
   */
  private act(task: AgentTask, provisioner: Provisioner): Promise<void> {
    if (task.action === 'boot') {
      return this.bringUp(task, async (request, report, signal) => {
        await provisioner.release(request);
        signal.throwIfAborted();
        return provisioner.provision(request, report, signal);
      });
    }
    const action = task.power;
    if (!action || !provisioner.power) {
      return this.bringUp(task, () => {
        throw new ProvisionError(`${task.machine.name}: a ${task.machine.kind} machine cannot be powered during a lease`, 'request', undefined, {
          code: 'power_not_supported',
        });
      });
    }
    return this.bringUp(task, (request, report, signal) => provisioner.power!(request, action, report, signal));
  }

  /** Runs `work` toward readiness (or, when it resolves to nothing, a machine switched off) and reports how it went. */
  private async bringUp(
    task: AgentTask,
    work: (request: ProvisionRequest, report: StageReporter, signal: AbortSignal) => Promise<Readiness | undefined>,
  ): Promise<void> {
    const controller = new AbortController();
    this.inFlight.set(task.id, controller);
    this.readyHere.delete(task.id);
    const signal = AbortSignal.any([controller.signal, AbortSignal.timeout(this.options.provisionTimeoutMs)]);
    let stage: Stage | undefined;
    const started = Date.now();
    // A report the API refused (4xx): the allocation is no longer this work's (its reservation was
    // released meanwhile, and the release task may be this agent's already). A failure reported now
    // would be taken for the release's, and quarantine a healthy machine: the work just stops.
    let refused = false;
    const send = async (report: AgentReport) => {
      try {
        await this.options.report(task.id, report);
      } catch (error) {
        const status = (error as { response?: { statusCode?: number } }).response?.statusCode;
        if (status !== undefined && status >= 400 && status < 500) refused = true;
        throw error;
      }
    };
    try {
      const record = await this.openRecord(task);
      const reporter: StageReporter = {
        stage: async (next) => {
          stage = next;
          await record.update({ stage: next });
          await send({ kind: 'stage', stage: next });
        },
      };
      const readiness = await work(this.request(task, detailOf(record)), reporter, signal);
      if (controller.signal.aborted) return;
      // A qualification boot is ready only once its check passed on the machine.
      if (readiness && task.check !== undefined) {
        await runCheck(task.check, readiness, task.privateKey, signal);
        await reporter.stage('probed');
      }
      if (!readiness) {
        await send({ kind: 'off' });
        this.options.log.info({ reservation: task.reservationId, machine: task.machine.name, allocation: task.id }, 'off');
        return;
      }
      await record.update({ ready: true, readiness, readyAt: new Date().toISOString() });
      this.readyHere.add(task.id);
      await send({ kind: 'ready', ...readiness });
      this.options.log.info(
        { reservation: task.reservationId, machine: task.machine.name, allocation: task.id, seconds: (Date.now() - started) / 1000 },
        'ready',
      );
    } catch (error) {
      if (controller.signal.aborted) return; // a release or a stop took over
      if (refused) {
        this.options.log.info(
          { reservation: task.reservationId, machine: task.machine.name, allocation: task.id, error: (error as Error).message },
          'the API refused a report: the allocation moved on, the work stops',
        );
        return;
      }
      const timedOut = signal.aborted;
      const failure = error instanceof ProvisionError ? error : undefined;
      const reason = timedOut
        ? `not ready within ${this.options.provisionTimeoutMs / 1000}s${stage ? ` (last stage reached: ${stage})` : ''}`
        : (error as Error).message;
      this.options.log.warn({ reservation: task.reservationId, machine: task.machine.name, allocation: task.id, reason }, 'provisioning failed');
      await this.options
        .report(task.id, {
          kind: 'failed',
          reason,
          fault: failure?.fault ?? 'infrastructure',
          code: timedOut ? 'provision_timeout' : (failure?.code ?? 'infrastructure_failed'),
          ...((failure?.stage ?? stage) ? { stage: failure?.stage ?? stage } : {}),
        })
        .catch((reportError) =>
          this.options.log.error(
            { reservation: task.reservationId, machine: task.machine.name, allocation: task.id, error: (reportError as Error).message },
            'could not report the failure',
          ),
        );
    } finally {
      this.inFlight.delete(task.id);
    }
  }

  /** Releases, then removes the record: a release that fails leaves the record for the next try or sweep. */
  private async releaseOnce(provisioner: Provisioner, request: ProvisionRequest): Promise<void> {
    await provisioner.release(request);
    this.readyHere.delete(request.allocationId);
    await this.options.consoleEnded?.(request.reservationId, request.machine.name);
    await this.options.journal.remove(request.machine.name, request.reservationId);
  }

  private async release(task: AgentTask, provisioner: Provisioner): Promise<void> {
    const attempts = this.options.releaseAttempts ?? 5;
    const delay = this.options.retryDelayMs ?? defaultRetryDelay;
    const request = this.request(task, this.recordState(task.machine, task.reservationId, task.id));
    for (let attempt = 1; ; attempt++) {
      try {
        await this.releaseOnce(provisioner, request);
        await this.options.report(task.id, { kind: 'released' });
        return;
      } catch (error) {
        const reason = (error as Error).message;
        if (attempt >= attempts || this.stopped) {
          this.options.log.error(
            { reservation: task.reservationId, machine: task.machine.name, allocation: task.id, attempts: attempt, reason },
            'release failed',
          );
          if (!this.stopped) {
            await this.options.report(task.id, { kind: 'failed', reason, fault: 'infrastructure' }).catch(() => undefined);
          }
          return;
        }
        await sleep(delay(attempt));
      }
    }
  }
}
