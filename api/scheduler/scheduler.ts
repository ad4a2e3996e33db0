// The agents' side of the scheduler: lab-host agents take provisioning and release tasks and report
// stages, readiness, failures and finished releases, which move reservations along. Kept apart
// from the reservation side (service.ts) it builds on.
import { consoleSecret } from './console-secret.js';
import type { AgentMachine, AgentReport, AgentTask } from '../../protocol/api.js';
import { DomainError, notFound } from '../domain-error.js';
import type { MachineEntry } from './records.js';
import { ReservationScheduler } from './service.js';

/** Failure codes that say the image did not boot: they count against the image. */
const imageFaults = new Set(['image_corrupt', 'image_unbootable', 'kernel_timeout', 'boot_timeout']);
/** Infrastructure failures that are not the machine's: they do not count toward its quarantine. */
const notTheMachine = new Set(['no_capacity', 'cloud_unreachable']);

export class Scheduler extends ReservationScheduler {
  /** Told when a machine failed because of its image (serve.ts counts it on the image). */
  onImageFailure?: (ref: string, reason: string) => void;

  /**
   * Hands an agent the tasks for machines of its kinds. `resume` (an agent's first claim after it
   * started) also hands back the tasks it had taken before a crash, which provisioners redo safely.
   */
  async claim(agent: string, kinds: string[], resume: boolean, waitMs: number): Promise<AgentTask[]> {
    if (resume) {
      for (const reservation of this.live.values()) {
        for (const allocation of reservation.allocations) {
          if (allocation.agent !== agent) continue;
          if (allocation.state === 'provisioning') this.tasks.set(allocation.id, { action: 'provision', reservation, allocation });
          if (allocation.state === 'releasing') this.tasks.set(allocation.id, { action: 'release', reservation, allocation });
        }
      }
    }
    let tasks = this.take(agent, kinds);
    if (tasks.length === 0 && waitMs > 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, waitMs);
        function done() {
          clearTimeout(timer);
          resolve();
        }
        this.agentWaiters.add(done);
      });
      tasks = this.take(agent, kinds);
    }
    await this.store.flush();
    return tasks;
  }

  private take(agent: string, kinds: string[]): AgentTask[] {
    const taken: AgentTask[] = [];
    for (const [id, task] of this.tasks) {
      const machine = this.inventory.get(task.allocation.machine);
      if (!machine || !kinds.includes(machine.kind)) continue;
      this.tasks.delete(id);
      const { reservation, allocation } = task;
      allocation.agent = agent;
      if (task.action === 'provision') {
        if (allocation.state === 'pending') this.setAllocation(reservation, allocation, 'provisioning');
        if (reservation.state === 'allocated') this.transition(reservation, 'provisioning', 'provision', `agent ${agent} took it`);
      }
      this.store.reservation(reservation);
      const member = reservation.members.find((candidate) => candidate.role === allocation.role);
      taken.push({
        id: allocation.id,
        action: task.action,
        reservationId: reservation.id,
        role: allocation.role,
        machine: { name: machine.name, kind: machine.kind, labels: machine.labels, capacities: machine.capacities, settings: machine.settings },
        publicKey: reservation.publicKey,
        privateKey: reservation.privateKey,
        consoleSecret: consoleSecret(reservation),
        ...(member?.image ? { image: member.image } : {}),
        ...(reservation.hardCapAt !== undefined ? { hardCapAt: new Date(reservation.hardCapAt).toISOString() } : {}),
      });
    }
    return taken;
  }

  /** Applies what an agent reports about one allocation. Reports for finished work are ignored. */
  async report(agent: string, allocationId: string, report: AgentReport): Promise<void> {
    const reservation = this.live.get(allocationId.slice(0, allocationId.lastIndexOf('.')));
    const allocation = reservation?.allocations.find((candidate) => candidate.id === allocationId);
    if (!reservation || !allocation) throw notFound(`allocation ${allocationId} of a live reservation`);
    // Only the agent that took the task may move it: another lab host's agent cannot declare a
    // machine ready (or released) that it does not run.
    if (allocation.agent !== agent) throw new DomainError('not_your_task', `allocation ${allocationId} is not held by agent ${agent}`);
    const machine = this.inventory.get(allocation.machine)!;
    const provisioning = allocation.state === 'provisioning';
    switch (report.kind) {
      case 'stage':
        if (provisioning) {
          allocation.stages[report.stage] = new Date(this.now()).toISOString();
          this.record(reservation, { type: 'stage', to: report.stage, machine: machine.name });
        }
        break;
      case 'ready':
        if (provisioning) {
          const { kind: _kind, ...access } = report;
          Object.assign(allocation, access);
          this.setAllocation(reservation, allocation, 'ready');
          machine.failures = 0;
          this.store.machine(machine);
          if (reservation.state === 'provisioning' && reservation.allocations.every((each) => each.state === 'ready')) {
            this.transition(reservation, 'ready', 'ready', 'every machine is ready');
            const now = this.now();
            reservation.expiresAt = Math.min(Math.max(reservation.expiresAt ?? 0, now + reservation.leaseSeconds * 1000), reservation.hardCapAt ?? Infinity);
          }
        }
        break;
      case 'failed':
        if (provisioning && report.code === 'no_capacity') {
          // The cloud is full (quota, no valid host): not the request's fault nor the machine's.
          // The request waits in the queue again.
          allocation.failure = { code: report.code, fault: report.fault, reason: report.reason, ...(report.stage ? { stage: report.stage } : {}) };
          this.requeue(reservation, `${allocation.role}[${allocation.index}] on ${machine.name}: ${report.reason}; waiting for room`);
        } else if (provisioning || allocation.state === 'ready') {
          // A ready machine can be lost too (its VM died): the reservation fails the same way.
          const where = `${allocation.role}[${allocation.index}] on ${machine.name}`;
          const code = report.code ?? (provisioning ? `${report.fault === 'request' ? 'request' : 'infrastructure'}_failed` : 'machine_lost');
          allocation.failure = { code, fault: report.fault, reason: report.reason, ...(report.stage ? { stage: report.stage } : {}) };
          this.setAllocation(reservation, allocation, 'failed', `${code}: ${report.reason}`);
          if (report.fault === 'infrastructure' && !notTheMachine.has(code)) this.countFailure(machine, report.reason);
          const image = reservation.members.find((member) => member.role === allocation.role)?.image;
          if (image && report.fault === 'request' && imageFaults.has(code)) this.onImageFailure?.(image, `${code} on ${machine.name}: ${report.reason}`);
          this.beginRelease(reservation, 'failed', `${where}${report.stage ? ` at ${report.stage}` : ''}: ${code}: ${report.reason}`);
        } else if (allocation.state === 'releasing' && report.code !== 'machine_lost') {
          // Teardown failed for good: the machine may still carry this reservation's traces, so it
          // leaves the pool until an admin looks at it. Not counted again: a failed provisioning
          // whose cleanup fails too is one fault of the machine, not two.
          machine.pendingState = 'quarantined';
          machine.reason = `release failed: ${report.reason}`;
          this.store.machine(machine);
          this.setAllocation(reservation, allocation, 'released', `release failed: ${report.reason}`);
          this.freeMachine(machine.name);
          this.finishIfReleased(reservation);
        }
        break;
      case 'released':
        if (allocation.state === 'releasing') {
          this.setAllocation(reservation, allocation, 'released');
          this.freeMachine(machine.name);
          this.finishIfReleased(reservation);
        }
        break;
    }
    await this.store.flush();
  }

  private countFailure(machine: MachineEntry, reason: string): void {
    machine.failures += 1;
    if (machine.failures >= this.config.health.quarantineAfter) {
      machine.pendingState = 'quarantined';
      machine.reason = `${machine.failures} infrastructure failures in a row; last: ${reason}`;
    }
    this.store.machine(machine);
  }

  /** The machines of the given kinds, with the reservations that may leave traces on each. */
  agentMachines(kinds: string[]): AgentMachine[] {
    const live = new Map<string, string[]>();
    for (const reservation of this.live.values()) {
      for (const allocation of reservation.allocations) {
        if (allocation.state !== 'released') live.set(allocation.machine, [...(live.get(allocation.machine) ?? []), reservation.id]);
      }
    }
    return [...this.inventory.machines.values()]
      .filter((machine) => kinds.includes(machine.kind) && machine.state !== 'retired')
      .map((machine) => ({
        name: machine.name, kind: machine.kind, labels: machine.labels, capacities: machine.capacities,
        settings: machine.settings, liveReservations: live.get(machine.name) ?? [],
      }));
  }
}
