// Machines handed to queued requests and taken back: the scheduling pass that grants what fits,
// and the release that returns machines (to the pool, or to the queue when the cloud was full).
// Every change goes through the state's primitives, so it is recorded and stored. Policy (matching,
// gang allocation, queue order) is in the pure functions of allocate.ts and queue.ts.
import type { ReservationState } from '../../protocol/api.js';
import { matchShape } from './allocate.js';
import { isEnded } from './lifecycle.js';
import { comesBefore, isStarving, schedulePass, scheduleQueue, type QueuePolicy, type QueuedRequest } from './queue.js';
import type { Allocation, Reservation } from './records.js';
import type { ParsedMember } from './requests.js';
import type { SchedulerState } from './state.js';

export class Grants {
  /** Told when a reservation has ended (qualification.ts counts its boots). */
  onEnded?: (reservation: Reservation) => void;
  /** Runs first in every scheduling pass: members moving to another machine are served before the queue (retries.ts). */
  beforePass?: () => void;
  /** Swaps granted machines for others of the same shape (warm.ts: a warm machine of the member's image). */
  pick?: (reservation: Reservation, machines: string[][]) => string[][];

  constructor(private readonly state: SchedulerState) {}

  /** Puts a reservation loaded from the database back in the queue or the agents' task list. */
  resume(reservation: Reservation): void {
    const { inventory } = this.state;
    if (reservation.state === 'queued') {
      this.state.enqueue(reservation);
      return;
    }
    const missing = reservation.allocations.filter(
      (allocation) =>
        allocation.state !== 'waiting' &&
        allocation.replacedBy === undefined &&
        (!inventory.get(allocation.machine) || inventory.get(allocation.machine)!.state === 'retired'),
    );
    if (missing.length > 0 && reservation.state !== 'releasing') {
      this.beginRelease(reservation, 'failed', `machine ${missing[0].machine} left the inventory`);
      return;
    }
    this.state.addOpenTasks(reservation);
  }

  /** Whether the members could ever be granted at once within the pools' limits (with every machine free). */
  fitsPoolLimits(members: ParsedMember[]): boolean {
    const { poolLimits } = this.state;
    if (poolLimits.size === 0) return true;
    const probe = { id: 'probe', priority: 0, createdAtMs: 0, members };
    return schedulePass([probe], this.state.inventory.allShapes(), this.state.now(), this.state.queuePolicy(), poolLimits).grants.length > 0;
  }

  /**
   * Grants every queued request the free machines allow, in queue order. A request found not to
   * fit waits on the shapes it matches (waiting.ts) and is left out of passes until one of them
   * gains a free machine. A starving one among them still holds machines back from later requests
   * (queue.ts), so the pass walks the few that can hold anything (starvingHolders), without running
   * their gang allocation again. A pass over a long queue of requests that cannot fit, starving or
   * not, costs about as much as the new and woken ones.
   */
  schedule(): void {
    const { state } = this;
    const { waiting, inventory } = state;
    this.beforePass?.();
    if (state.queue.size === 0) return;
    waiting.wake(inventory.drainGrown());
    if (inventory.drainNewShapes()) waiting.wakeAll();
    const now = state.now();
    const policy = state.queuePolicy();
    const candidates = new Set<Reservation>();
    for (const id of waiting.untried) {
      const reservation = state.live.get(id);
      if (reservation?.state !== 'queued') continue;
      // Held back after a full cloud: not tried before its time, unless it is starving.
      if ((state.heldUntil.get(id) ?? 0) <= now || isStarving(state.queueEntry(reservation), now, policy)) candidates.add(reservation);
    }
    if (candidates.size === 0) return;
    const known = new Set<string>();
    for (const reservation of this.starvingHolders(now, policy)) {
      candidates.add(reservation);
      known.add(reservation.id);
    }
    const { grants, unfit } = scheduleQueue(state.queueInput(candidates), inventory.freeShapes(), now, policy, { room: this.poolRoom(), unfit: known });
    for (const grant of grants) this.grant(state.live.get(grant.id)!, grant.machines);
    // Grants only take machines: what did not fit before them does not fit after them.
    const shapes = inventory.allShapes();
    for (const id of unfit) {
      if (waiting.isUnfit(id)) continue;
      const members = state.membersOf(state.live.get(id)!);
      waiting.unfit(
        id,
        shapes.filter((shape) => members.some((member) => matchShape(member.spec, shape).ok)).map((shape) => shape.key),
      );
    }
  }

  /**
   * The starving requests known not to fit that can hold machines back in a pass: per shape with
   * free machines, the first in queue order of the starving ones waiting on it (the shapes a
   * request waits on are the ones it matches). The others would hold nothing: a shape one of them
   * matches is either held by that first one when the pass reaches them, or was not offered to it
   * and so is not offered later either (a pass only takes free machines, pool room and held shapes
   * away); a shape without free machines is never offered.
   */
  private starvingHolders(now: number, policy: QueuePolicy): Set<Reservation> {
    const { state } = this;
    const holders = new Set<Reservation>();
    for (const shape of state.inventory.freeShapes()) {
      if (shape.machines.length === 0) continue;
      let first: QueuedRequest | undefined;
      for (const id of state.waiting.waitingOn(shape.key)) {
        const reservation = state.live.get(id);
        if (reservation?.state !== 'queued') continue;
        const entry = state.queueEntry(reservation);
        if (isStarving(entry, now, policy) && (!first || comesBefore(entry, first, now, policy))) first = entry;
      }
      if (first) holders.add(state.live.get(first.id)!);
    }
    return holders;
  }

  /** Room left in each limited pool: its limit less its reserved machines. */
  private poolRoom(): Map<string, number> | undefined {
    const { poolLimits, inventory } = this.state;
    if (poolLimits.size === 0) return undefined;
    return new Map([...poolLimits].map(([pool, limit]) => [pool, limit - inventory.reservedIn(pool)]));
  }

  /**
   * Hands the machines (per member) to a reservation, swapped for warm ones where warm.ts picks;
   * qualification.ts pins a boot to its machine with `pinned` (no swap).
   */
  grant(reservation: Reservation, chosen: string[][], pinned = false): void {
    const { state } = this;
    const machines = (pinned ? undefined : this.pick?.(reservation, chosen)) ?? chosen;
    const now = state.now();
    state.queue.delete(reservation);
    state.waiting.delete(reservation.id);
    state.transition(reservation, 'allocated', 'grant', 'all members matched free machines');
    reservation.grantedAt = now;
    reservation.expiresAt = now + reservation.leaseSeconds * 1000;
    reservation.hardCapAt = now + state.policy.lease.max * 1000;
    let number = 0;
    // Each round after a requeue gets allocation ids of its own, so late reports of an earlier round cannot touch it.
    const round = reservation.requeues ? `${reservation.requeues}-` : '';
    reservation.members.forEach((member, memberIndex) => {
      machines[memberIndex].forEach((name, index) => {
        const machine = state.inventory.get(name)!;
        state.inventory.setState(machine, 'reserved');
        machine.reservationId = reservation.id;
        state.store.machine(machine);
        const allocation: Allocation = { id: `${reservation.id}.${round}${number++}`, role: member.role, index, machine: name, state: 'pending', stages: {} };
        reservation.allocations.push(allocation);
        state.record(reservation, { type: 'allocation', to: 'pending', machine: name, reason: `${member.role}[${index}]` });
        state.addTask('provision', reservation, allocation);
      });
    });
  }

  /**
   * Starts releasing a live reservation toward `outcome`. Idempotent: a reservation already
   * releasing or ended is left as it is.
   */
  beginRelease(reservation: Reservation, outcome: ReservationState, reason: string): void {
    const { state } = this;
    if (isEnded(reservation.state) || reservation.state === 'releasing') return;
    if (reservation.state === 'queued') {
      state.queue.delete(reservation);
      state.transition(reservation, outcome === 'released' ? 'cancelled' : outcome, 'release', reason);
      state.forget(reservation);
      return;
    }
    state.transition(reservation, 'releasing', 'release', reason);
    reservation.outcome = outcome;
    for (const allocation of reservation.allocations) this.releaseAllocation(reservation, allocation);
    this.finishIfReleased(reservation);
  }

  private releaseAllocation(reservation: Reservation, allocation: Allocation): void {
    const { state } = this;
    if (allocation.state === 'released' || allocation.state === 'releasing') return;
    if (allocation.state === 'waiting') {
      // Waiting for another machine (retries.ts): it holds none.
      state.setAllocation(reservation, allocation, 'released', 'was waiting for a machine');
      return;
    }
    if (allocation.state === 'pending') {
      // Never handed to an agent: nothing to undo on the machine.
      state.tasks.delete(allocation.id);
      state.setAllocation(reservation, allocation, 'released', 'never provisioned');
      state.freeMachine(allocation.machine);
      return;
    }
    allocation.agent = undefined;
    // A power action or re-deploy under way ends here: the release replaces its task.
    delete allocation.action;
    state.setAllocation(reservation, allocation, 'releasing');
    state.addTask('release', reservation, allocation);
  }

  /**
   * The cloud was full: the machines are given back and the request waits in the queue again,
   * keeping its place (its creation time) and its queue deadline. It is not tried again for
   * `holdMs`, or until another reservation gives machines back.
   */
  requeue(reservation: Reservation, reason: string, holdMs = 15_000): void {
    const { state } = this;
    if (reservation.state !== 'allocated' && reservation.state !== 'provisioning') return;
    state.transition(reservation, 'releasing', 'requeue', reason);
    reservation.outcome = 'queued';
    state.heldUntil.set(reservation.id, state.now() + holdMs);
    for (const allocation of reservation.allocations) this.releaseAllocation(reservation, allocation);
    this.finishIfReleased(reservation);
  }

  /** Ends a releasing reservation once its last allocation is released (or puts it back in the queue). */
  finishIfReleased(reservation: Reservation): void {
    const { state } = this;
    if (reservation.state !== 'releasing') return;
    if (!reservation.allocations.every((allocation) => allocation.state === 'released')) return;
    if (reservation.outcome === 'queued') {
      state.transition(reservation, 'queued', 'requeue', reservation.reason ?? 'the cloud was full');
      reservation.outcome = undefined;
      reservation.allocations = [];
      reservation.requeues = (reservation.requeues ?? 0) + 1;
      reservation.grantedAt = reservation.expiresAt = reservation.hardCapAt = undefined;
      state.store.reservation(reservation);
      state.enqueue(reservation);
      return;
    }
    // Machines come back: requests held after a full cloud may find room now.
    state.heldUntil.clear();
    state.transition(reservation, reservation.outcome ?? 'released', 'finish release', reservation.reason ?? 'released');
    state.forget(reservation);
    this.onEnded?.(reservation);
    this.schedule();
  }
}
