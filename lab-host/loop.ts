// The shared loop that drives provisioners for an agent: one queue per machine so a machine's
// release never overlaps its provisioning, a limit on tasks at once, a timeout on provisioning,
// bounded retries with backoff for releases, and the mapping of errors to reports. Kinds implement
// only the Provisioner interface; none of this is written per kind.
import { setTimeout as sleep } from 'node:timers/promises';
import type { AgentReport, AgentTask, Stage } from '../protocol/agent.js';
import { ProvisionError, type Provisioner, type ProvisionRequest } from '../provisioners/types.js';

export interface LoopOptions {
  provisioner: (kind: string) => Provisioner;
  report: (taskId: string, report: AgentReport) => Promise<void>;
  log: (line: string) => void;
  concurrency: number;
  provisionTimeoutMs: number;
  releaseAttempts?: number;
  retryDelayMs?: (attempt: number) => number;
}

/** Exponential backoff capped at 30 s: 1 s, 2 s, 4 s, … */
export const defaultRetryDelay = (attempt: number) => Math.min(30_000, 1000 * 2 ** (attempt - 1));

export class TaskLoop {
  private readonly machineQueues = new Map<string, Promise<void>>();
  private readonly inFlight = new Map<string, AbortController>();
  private running = 0;
  private readonly slotWaiters: (() => void)[] = [];
  private stopped = false;

  constructor(private readonly options: LoopOptions) {}

  /** Queues a task behind earlier ones for the same machine. A release aborts a provisioning in flight. */
  submit(task: AgentTask): Promise<void> {
    if (task.action === 'release') this.inFlight.get(task.id)?.abort(new Error('released while provisioning'));
    const previous = this.machineQueues.get(task.machine.name) ?? Promise.resolve();
    const next = previous.then(() => this.withSlot(() => this.run(task)));
    this.machineQueues.set(task.machine.name, next);
    void next.finally(() => {
      if (this.machineQueues.get(task.machine.name) === next) this.machineQueues.delete(task.machine.name);
    });
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
    const request: ProvisionRequest = {
      reservationId: task.reservationId,
      allocationId: task.id,
      machine: task.machine,
      publicKey: task.publicKey,
      privateKey: task.privateKey,
      consoleSecret: task.consoleSecret,
      ...(task.image ? { image: task.image } : {}),
      ...(task.hardCapAt ? { hardCapAt: Date.parse(task.hardCapAt) } : {}),
    };
    const provisioner = this.options.provisioner(task.machine.kind);
    if (task.action === 'provision') await this.provision(task, provisioner, request);
    else await this.release(task, provisioner, request);
  }

  private async provision(task: AgentTask, provisioner: Provisioner, request: ProvisionRequest): Promise<void> {
    const controller = new AbortController();
    this.inFlight.set(task.id, controller);
    const signal = AbortSignal.any([controller.signal, AbortSignal.timeout(this.options.provisionTimeoutMs)]);
    let stage: Stage | undefined;
    const started = Date.now();
    try {
      const readiness = await provisioner.provision(
        request,
        {
          stage: async (next) => {
            stage = next;
            await this.options.report(task.id, { kind: 'stage', stage: next });
          },
        },
        signal,
      );
      if (controller.signal.aborted) return;
      await this.options.report(task.id, { kind: 'ready', ...readiness });
      this.options.log(`${task.id} ready on ${task.machine.name} in ${((Date.now() - started) / 1000).toFixed(1)}s`);
    } catch (error) {
      if (controller.signal.aborted) return; // a release or a stop took over
      const timedOut = signal.aborted;
      const failure = error instanceof ProvisionError ? error : undefined;
      const reason = timedOut
        ? `not ready within ${this.options.provisionTimeoutMs / 1000}s${stage ? ` (last stage reached: ${stage})` : ''}`
        : (error as Error).message;
      this.options.log(`${task.id} failed on ${task.machine.name}: ${reason}`);
      await this.options
        .report(task.id, {
          kind: 'failed',
          reason,
          fault: failure?.fault ?? 'infrastructure',
          code: timedOut ? 'provision_timeout' : (failure?.code ?? 'infrastructure_failed'),
          ...((failure?.stage ?? stage) ? { stage: failure?.stage ?? stage } : {}),
        })
        .catch((reportError) => this.options.log(`${task.id}: could not report the failure: ${(reportError as Error).message}`));
    } finally {
      this.inFlight.delete(task.id);
    }
  }

  private async release(task: AgentTask, provisioner: Provisioner, request: ProvisionRequest): Promise<void> {
    const attempts = this.options.releaseAttempts ?? 5;
    const delay = this.options.retryDelayMs ?? defaultRetryDelay;
    for (let attempt = 1; ; attempt++) {
      try {
        await provisioner.release(request);
        await this.options.report(task.id, { kind: 'released' });
        return;
      } catch (error) {
        const reason = (error as Error).message;
        if (attempt >= attempts || this.stopped) {
          this.options.log(`${task.id}: release on ${task.machine.name} failed ${attempt} times: ${reason}`);
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
