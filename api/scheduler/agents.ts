// The agents' side of the scheduler: lab-host agents take provisioning and release tasks (a
// long-poll, api/pull.ts) and report stages, readiness, failures and finished releases, which move
// reservations along. What a failure means is failure.ts's pure verdict; this file carries it out.
import type { AgentMachine, AgentReport, AgentTask } from '../../protocol/api.js';
import { DomainError, notFound } from '../domain-error.js';
import { consoleSecret } from './console-secret.js';
import { failureVerdict } from './failure.js';
import type { Grants } from './grants.js';
import type { Machines } from './machines.js';
import type { Allocation, MachineEntry, Reservation } from './records.js';
import type { SchedulerState } from './state.js';

type FailedReport = Extract<AgentReport, { kind: 'failed' }>;

export class AgentTasks {
  /** Told when a machine failed because of its image (serve.ts counts it on the image). */
  onImageFailure?: (ref: string, reason: string) => void;

  constructor(
    private readonly state: SchedulerState,
    private readonly grants: Grants,
    private readonly machines: Machines,
  ) {}

  /**
   * Hands an agent the tasks for machines of its kinds. `resume` (an agent's first claim after it
   * started) also hands back the tasks it had taken before a crash, which provisioners redo safely.
   */
  async claim(agent: string, kinds: string[], resume: boolean, waitMs: number): Promise<AgentTask[]> {
    const { state } = this;
    if (resume) {
      for (const reservation of state.live.values()) {
        for (const allocation of reservation.allocations) {
          if (allocation.agent !== agent) continue;
          if (allocation.state === 'provisioning') state.tasks.set(allocation.id, { action: 'provision', reservation, allocation });
          if (allocation.state === 'releasing') state.tasks.set(allocation.id, { action: 'release', reservation, allocation });
        }
      }
    }
    const tasks = await state.agentPull.claim(() => this.take(agent, kinds), waitMs);
    await state.store.flush();
    return tasks;
  }

  private take(agent: string, kinds: string[]): AgentTask[] {
    const { state } = this;
    const taken: AgentTask[] = [];
    for (const [id, task] of state.tasks) {
      const machine = state.inventory.get(task.allocation.machine);
      if (!machine || !kinds.includes(machine.kind)) continue;
      state.tasks.delete(id);
      const { reservation, allocation } = task;
      allocation.agent = agent;
      if (task.action === 'provision') {
        if (allocation.state === 'pending') state.setAllocation(reservation, allocation, 'provisioning');
        if (reservation.state === 'allocated') state.transition(reservation, 'provisioning', 'provision', `agent ${agent} took it`);
      }
      state.store.reservation(reservation);
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
    const { state } = this;
    const reservation = state.live.get(allocationId.slice(0, allocationId.lastIndexOf('.')));
    const allocation = reservation?.allocations.find((candidate) => candidate.id === allocationId);
    if (!reservation || !allocation) throw notFound(`allocation ${allocationId} of a live reservation`);
    // Only the agent that took the task may move it: another lab host's agent cannot declare a
    // machine ready (or released) that it does not run.
    if (allocation.agent !== agent) throw new DomainError('not_your_task', `allocation ${allocationId} is not held by agent ${agent}`);
    const machine = state.inventory.get(allocation.machine)!;
    const provisioning = allocation.state === 'provisioning';
    switch (report.kind) {
      case 'stage':
        if (provisioning) {
          allocation.stages[report.stage] = new Date(state.now()).toISOString();
          state.record(reservation, { type: 'stage', to: report.stage, machine: machine.name });
        }
        break;
      case 'ready':
        if (provisioning) {
          const { kind: _kind, ...access } = report;
          Object.assign(allocation, access);
          state.setAllocation(reservation, allocation, 'ready');
          this.machines.countSuccess(machine);
          if (reservation.state === 'provisioning' && reservation.allocations.every((each) => each.state === 'ready')) {
            state.transition(reservation, 'ready', 'ready', 'every machine is ready');
            const now = state.now();
            reservation.expiresAt = Math.min(Math.max(reservation.expiresAt ?? 0, now + reservation.leaseSeconds * 1000), reservation.hardCapAt ?? Infinity);
          }
        }
        break;
      case 'failed':
        this.failed(reservation, allocation, machine, report);
        break;
      case 'released':
        if (allocation.state === 'releasing') this.released(reservation, allocation, machine);
        break;
    }
    await state.store.flush();
  }

  private failed(reservation: Reservation, allocation: Allocation, machine: MachineEntry, report: FailedReport): void {
    const verdict = failureVerdict(allocation.state, report);
    const where = `${allocation.role}[${allocation.index}] on ${machine.name}`;
    const failure = (code: string) => ({ code, fault: report.fault, reason: report.reason, ...(report.stage ? { stage: report.stage } : {}) });
    switch (verdict.action) {
      case 'requeue':
        allocation.failure = failure(verdict.code);
        this.grants.requeue(reservation, `${where}: ${report.reason}; waiting for room`);
        break;
      case 'fail': {
        const { code } = verdict;
        allocation.failure = failure(code);
        this.state.setAllocation(reservation, allocation, 'failed', `${code}: ${report.reason}`);
        if (verdict.countAgainstMachine) this.machines.countFailure(machine, report.reason);
        const image = reservation.members.find((member) => member.role === allocation.role)?.image;
        if (image && verdict.blameImage) this.onImageFailure?.(image, `${code} on ${machine.name}: ${report.reason}`);
        this.grants.beginRelease(reservation, 'failed', `${where}${report.stage ? ` at ${report.stage}` : ''}: ${code}: ${report.reason}`);
        break;
      }
      case 'quarantine':
        this.machines.quarantineAfterRelease(machine, report.reason);
        this.released(reservation, allocation, machine, `release failed: ${report.reason}`);
        break;
      case 'ignore':
        break;
    }
  }

  private released(reservation: Reservation, allocation: Allocation, machine: MachineEntry, reason?: string): void {
    this.state.setAllocation(reservation, allocation, 'released', reason);
    this.state.freeMachine(machine.name);
    this.grants.finishIfReleased(reservation);
  }

  /** The machines of the given kinds, with the reservations that may leave traces on each. */
  agentMachines(kinds: string[]): AgentMachine[] {
    const live = new Map<string, string[]>();
    for (const reservation of this.state.live.values()) {
      for (const allocation of reservation.allocations) {
        if (allocation.state !== 'released') live.set(allocation.machine, [...(live.get(allocation.machine) ?? []), reservation.id]);
      }
    }
    return [...this.state.inventory.machines.values()]
      .filter((machine) => kinds.includes(machine.kind) && machine.state !== 'retired')
      .map((machine) => ({
        name: machine.name,
        kind: machine.kind,
        labels: machine.labels,
        capacities: machine.capacities,
        settings: machine.settings,
        liveReservations: live.get(machine.name) ?? [],
      }));
  }
}
