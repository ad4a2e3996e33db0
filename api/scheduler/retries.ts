// Retry on another machine. A machine that fails while one member of a reservation is being
// provisioned (an infrastructure failure, with retries left: failure.ts's `retry` verdict) costs
// that member its machine, not the reservation: the failed allocation is torn down on its machine
// while a new allocation of the same member goes to another free machine matching its spec (never
// one it already failed on). The gang's other members keep their machines and their progress, and
// the reservation stays `provisioning`, so a script waiting for it sees events and a delay.
//
// With no such machine free, the member is `waiting`: it holds no machine (no hold-and-wait), and
// every scheduling pass offers it the free machines first, before any queued request (its
// reservation was granted already). It waits for at most the request's queue timeout, counted from
// the failure; then the reservation fails with the failure's code.
//
// Contracts:
// - A member moves at most `health.retries` times (`retries` on its allocation counts them).
// - Ids: the successor of `R.0` is `R.0-r1`, then `R.0-r2`; the prefix before the last dot stays
//   the reservation id (agents.ts finds reservations by it), and late reports about the failed
//   allocation never touch its successor.
// - The successor takes the failed allocation's place in the list and the failed one goes to the
//   end, marked `replacedBy`: whoever looks a member up by role and index finds the current one first.
// - Everything lives in the reservation's allocations (stored with it), so a restart resumes a
//   waiting member as waiting (`reindex`).
import type { AllocationFailure } from '../../protocol/api.js';
import { matchShape } from './allocate.js';
import type { Grants } from './grants.js';
import type { Machines } from './machines.js';
import type { Allocation, MachineEntry, Reservation } from './records.js';
import { qualificationOwner } from './qualification.js';
import type { SchedulerState } from './state.js';

/** Whether the allocation is its member's current one (not one that failed and was replaced). */
export const isCurrent = (allocation: Allocation): boolean => allocation.replacedBy === undefined;

export class Retries {
  /** Ids of reservations with a waiting member, in the order their members began to wait. */
  private readonly waiting = new Set<string>();
  /** Set while `serve` runs: releases it starts run scheduling passes of their own. */
  private serving = false;

  constructor(
    private readonly state: SchedulerState,
    private readonly grants: Grants,
    private readonly machines: Machines,
  ) {}

  /**
   * How many more times the allocation's member may move to another machine: none when no machine
   * in service (busy or not) matches its spec but those it failed on and those its own reservation
   * holds, since waiting could never end well.
   */
  retriesLeft(reservation: Reservation, allocation: Allocation): number {
    const left = Math.max(0, this.state.policy.health.retries - (allocation.retries ?? 0));
    // A qualification boot is the machine's own test: it is never moved to another machine.
    if (left === 0 || reservation.owner === qualificationOwner) return 0;
    const member = this.state.membersOf(reservation).find((candidate) => candidate.role === allocation.role);
    const tried = new Set([...(allocation.failedOn ?? []), ...reservation.allocations.map((each) => each.machine)]);
    const other = this.state.inventory
      .allShapes()
      .some((shape) => member !== undefined && shape.machines.some((name) => !tried.has(name)) && matchShape(member.spec, shape).ok);
    return other ? left : 0;
  }

  /**
   * Carries out a `retry` verdict: the allocation fails (counted against its machine when the
   * verdict says so) and is torn down; its successor is placed on another free machine, or waits.
   */
  retry(reservation: Reservation, allocation: Allocation, machine: MachineEntry, failure: AllocationFailure, countAgainstMachine: boolean): void {
    const { state } = this;
    allocation.failure = failure;
    state.setAllocation(reservation, allocation, 'failed', `${failure.code}: ${failure.reason}`);
    if (countAgainstMachine) this.machines.countFailure(machine, failure.reason);
    const retries = (allocation.retries ?? 0) + 1;
    const successor: Allocation = {
      id: `${allocation.id.replace(/-r\d+$/, '')}-r${retries}`,
      role: allocation.role,
      index: allocation.index,
      machine: '',
      state: 'waiting',
      stages: {},
      retries,
      failedOn: [...(allocation.failedOn ?? []), machine.name],
      failure,
    };
    allocation.replacedBy = successor.id;
    reservation.allocations.splice(reservation.allocations.indexOf(allocation), 1, successor);
    reservation.allocations.push(allocation);
    if (!this.place(reservation, successor, false)) {
      const queueTimeoutMs = reservation.queueDeadline !== undefined ? reservation.queueDeadline - reservation.createdAt : state.policy.queue.timeout * 1000;
      successor.waitingUntil = new Date(state.now() + queueTimeoutMs).toISOString();
      successor.reason = `no other machine matching ${this.spec(reservation, successor)} is free after ${failure.code} on ${machine.name}`;
      state.record(reservation, {
        type: 'allocation',
        to: 'waiting',
        reason: `${where(successor)}: ${successor.reason}; waiting until ${successor.waitingUntil}`,
      });
      this.waiting.add(reservation.id);
    }
    // The failed machine is torn down meanwhile; its release does not end the reservation.
    allocation.agent = undefined;
    state.setAllocation(reservation, allocation, 'releasing', `replaced by ${successor.id}`);
    state.addTask('release', reservation, allocation);
  }

  /**
   * Gives waiting members the free machines that match them, oldest wait first, and fails the
   * reservations whose waiting member ran out of time. Runs first in every scheduling pass
   * (grants.ts), so a machine freed goes to a waiting member before any queued request.
   */
  serve(): void {
    if (this.serving || this.waiting.size === 0) return;
    this.serving = true;
    try {
      const now = this.state.now();
      for (const id of [...this.waiting]) {
        const reservation = this.state.live.get(id);
        const live = reservation?.state === 'provisioning' || reservation?.state === 'allocated';
        for (const allocation of live ? reservation.allocations.filter((each) => each.state === 'waiting') : []) {
          if (this.place(reservation!, allocation, true)) continue;
          if (Date.parse(allocation.waitingUntil ?? '') <= now) {
            this.giveUp(reservation!, allocation);
            break;
          }
        }
        if (!live || !reservation.allocations.some((each) => each.state === 'waiting')) this.waiting.delete(id);
      }
    } finally {
      this.serving = false;
    }
  }

  /** Finds the waiting members among the live reservations again (at start, and after a rollback). */
  reindex(): void {
    this.waiting.clear();
    for (const reservation of this.state.live.values()) {
      if (reservation.allocations.some((allocation) => allocation.state === 'waiting')) this.waiting.add(reservation.id);
    }
  }

  /** Puts the allocation on a free machine that matches its member, if there is one; the task goes to that machine's agent. */
  private place(reservation: Reservation, allocation: Allocation, waited: boolean): boolean {
    const { state } = this;
    const machine = this.freeMachineFor(reservation, allocation);
    if (!machine) return false;
    state.inventory.setState(machine, 'reserved');
    machine.reservationId = reservation.id;
    state.store.machine(machine);
    const failedOn = allocation.failedOn?.at(-1) ?? '?';
    const reason = `${where(allocation)}: retrying on ${machine.name} after ${allocation.failure?.code ?? 'a failure'} on ${failedOn}`;
    allocation.machine = machine.name;
    delete allocation.failure;
    delete allocation.waitingUntil;
    allocation.reason = reason;
    allocation.state = 'pending';
    state.record(reservation, { type: 'allocation', ...(waited ? { from: 'waiting' } : {}), to: 'pending', machine: machine.name, reason });
    state.addTask('provision', reservation, allocation);
    return true;
  }

  /** A free machine matching the member's spec that it has not failed on, within its pool's limit. */
  private freeMachineFor(reservation: Reservation, allocation: Allocation): MachineEntry | undefined {
    const { state } = this;
    const member = state.membersOf(reservation).find((candidate) => candidate.role === allocation.role);
    if (!member) return undefined;
    for (const shape of state.inventory.freeShapes()) {
      if (shape.machines.length === 0 || !matchShape(member.spec, shape).ok) continue;
      const pool = shape.labels.pool;
      const limit = pool === undefined ? undefined : state.poolLimits.get(pool);
      if (limit !== undefined && state.inventory.reservedIn(pool) >= limit) continue;
      const name = shape.machines.find((candidate) => !allocation.failedOn?.includes(candidate));
      if (name !== undefined) return state.inventory.get(name);
    }
    return undefined;
  }

  /** The member waited its queue timeout out: the reservation fails with the failure's code. */
  private giveUp(reservation: Reservation, allocation: Allocation): void {
    const code = allocation.failure?.code ?? 'infrastructure_failed';
    const failedOn = allocation.failedOn?.at(-1) ?? '?';
    this.grants.beginRelease(
      reservation,
      'failed',
      `${where(allocation)}: ${code} on ${failedOn}, and no other machine matching ${this.spec(reservation, allocation)} was free within the queue timeout`,
    );
  }

  private spec(reservation: Reservation, allocation: Allocation): string {
    return reservation.members.find((member) => member.role === allocation.role)?.spec ?? allocation.role;
  }
}

const where = (allocation: Allocation) => `${allocation.role}[${allocation.index}]`;
