// The scheduler's memory and the few changes every part makes to it. Machines, live reservations,
// the queue and the agents' task list live here, and so do the primitive changes (a reservation's
// state, an allocation's state, a machine freed, a task added) that record an event and mark the
// record for the store. The parts above (grants.ts, reservations.ts, machines.ts, agents.ts) share
// this one object and never each other's fields; none of them is imported from here.
import { EventEmitter } from 'node:events';
import type { EventView, ReservationState } from '../../protocol/api.js';
import type { Database } from '../db/index.js';
import { LongPoll } from '../pull.js';
import { Inventory } from './inventory.js';
import { assertTransition } from './lifecycle.js';
import type { QueuePolicy, QueuedRequest } from './queue.js';
import { ms, reservationFromRow, unreachableFromRow, type Allocation, type MachineEntry, type QualifyPolicy, type Reservation } from './records.js';
import { parseMembers, type ParsedMember } from './requests.js';
import { Store } from './store.js';
import { WaitingRequests } from './waiting.js';
import { silentLog, type Log } from '../../protocol/log.js';

/** What the scheduler needs to know of the configuration: durations in seconds. */
export interface SchedulerPolicy {
  lease: { default: number; max: number };
  queue: { timeout: number; aging: number; starvation: number };
  /**
   * Quarantine after `quarantineAfter` infrastructure failures in a row, or a health score (over the
   * last `window` provisionings) under `minScore` over at least `minSamples` of them (health.ts);
   * `retries`: moves to another machine per member after infrastructure failures while provisioning (retries.ts).
   */
  health: { quarantineAfter: number; retries: number; window?: number; minScore?: number; minSamples?: number };
  /** How often leases and queue timeouts are checked (and whether lab hosts went silent). */
  reaper: { interval: number };
  /** A lab host's agent not heard from for this long is silent: its machines go offline. */
  agents?: { heartbeatTimeout: number };
}

/** A machine as configured: what the inventory is loaded from. */
export interface MachineDefinition {
  name: string;
  kind: string;
  /** The lab host whose agent provisions it (`local` when not given: the embedded agent's default name). */
  labHost?: string;
  /** How owners reach it (`direct` when not given). */
  access?: 'direct' | 'paddock';
  labels: Record<string, string>;
  capacities: Record<string, number>;
  settings?: unknown;
  /** Qualification before service (config `qualify`; qualification.ts). */
  qualify?: QualifyPolicy;
  /** Images its pool keeps warm (idle in seconds), and the pool's name (warm.ts). */
  warm?: readonly { image: string; count: number; idle: number }[];
  warmPool?: string;
}

/** Work for an agent: provision an allocation's machine, release it, or power or re-deploy it during the lease (lease-actions.ts). */
export type Task = { action: 'provision' | 'release' | 'power' | 'boot'; reservation: Reservation; allocation: Allocation };

/** One owner's idempotency key, as one string (a NUL cannot be in a name). */
export function idempotencySlot(owner: string, key: string): string {
  return `${owner}\u0000${key}`;
}

export class SchedulerState {
  readonly inventory = new Inventory();
  readonly live = new Map<string, Reservation>();
  /** Live reservations made with an idempotency key, by owner and key (idempotencySlot): a request sent again finds its own without a pass over every live one. */
  private readonly liveByKey = new Map<string, Reservation>();
  /** Queued reservations, in no particular order (queue.ts's queueOrder gives the order when it is needed). */
  readonly queue = new Set<Reservation>();
  /** Tasks not yet taken by an agent, by allocation id. */
  readonly tasks = new Map<string, Task>();
  /** Agents waiting in a claim for a task. */
  readonly agentPull = new LongPoll();
  /**
   * `change:ID` on every change of a reservation, `event:ID` with each event row; `event` (row and
   * reservation) with every event row, and `provisioning` (row and machine) with every provisioning
   * recorded (health.ts), for metrics.
   */
  readonly changes = new EventEmitter();
  /** Requests sent back to the queue because the cloud was full: not retried before this time. */
  readonly heldUntil = new Map<string, number>();
  /** Which queued requests a pass must try (see grants.ts and waiting.ts). */
  readonly waiting = new WaitingRequests();
  readonly store: Store;
  /** The most machines of each provider pool (by `pool` label) reserved at once. */
  readonly poolLimits: ReadonlyMap<string, number>;
  private readonly parsed = new Map<string, ParsedMember[]>();
  /** Every event is logged too, with the reservation and machine as fields. */
  log: Log = silentLog();

  constructor(
    readonly db: Database,
    readonly policy: SchedulerPolicy,
    readonly now: () => number,
    poolLimits: ReadonlyMap<string, number> = new Map(),
  ) {
    this.store = new Store(db);
    this.poolLimits = poolLimits;
    this.changes.setMaxListeners(0);
  }

  queuePolicy(): QueuePolicy {
    return { agingSeconds: this.policy.queue.aging, starvationSeconds: this.policy.queue.starvation };
  }

  membersOf(reservation: Reservation): ParsedMember[] {
    let members = this.parsed.get(reservation.id);
    if (!members) {
      members = parseMembers(reservation.members);
      this.parsed.set(reservation.id, members);
    }
    return members;
  }

  /** A new reservation goes live with the members its request was parsed into. */
  addLive(reservation: Reservation, members: ParsedMember[]): void {
    this.setLive(reservation);
    this.parsed.set(reservation.id, members);
  }

  /** A reservation in memory as live: new, loaded at start, or put back after a failed commit. */
  setLive(reservation: Reservation): void {
    this.live.set(reservation.id, reservation);
    if (reservation.idempotencyKey !== undefined) this.liveByKey.set(idempotencySlot(reservation.owner, reservation.idempotencyKey), reservation);
  }

  /** The live reservation `owner` made with idempotency key `key`, if there is one. */
  liveWithKey(owner: string, key: string): Reservation | undefined {
    const reservation = this.liveByKey.get(idempotencySlot(owner, key));
    return reservation !== undefined && this.live.get(reservation.id) === reservation ? reservation : undefined;
  }

  /** A reservation out of memory (ended, or never committed). */
  private dropLive(id: string): void {
    const reservation = this.live.get(id);
    this.live.delete(id);
    if (reservation?.idempotencyKey === undefined) return;
    const slot = idempotencySlot(reservation.owner, reservation.idempotencyKey);
    if (this.liveByKey.get(slot) === reservation) this.liveByKey.delete(slot);
  }

  /** An ended reservation leaves memory. */
  forget(reservation: Reservation): void {
    this.heldUntil.delete(reservation.id);
    this.waiting.delete(reservation.id);
    this.dropLive(reservation.id);
    this.parsed.delete(reservation.id);
  }

  queueEntry(reservation: Reservation): QueuedRequest {
    return { id: reservation.id, priority: reservation.priority, createdAtMs: reservation.createdAt, members: this.membersOf(reservation) };
  }

  queueInput(queue: Iterable<Reservation> = this.queue): QueuedRequest[] {
    return Array.from(queue, (reservation) => this.queueEntry(reservation));
  }

  /** Puts a reservation in the queue (its place in the order is its creation time's); the next pass tries it. */
  enqueue(reservation: Reservation): void {
    this.queue.add(reservation);
    this.waiting.add(reservation.id);
  }

  addTask(action: Task['action'], reservation: Reservation, allocation: Allocation): void {
    this.tasks.set(allocation.id, { action, reservation, allocation });
    // Only the claims of the machine's lab host can take it.
    this.agentPull.wake(this.inventory.get(allocation.machine)?.labHost);
  }

  /** A machine no reservation holds any more: available, or the state an admin set meanwhile. */
  freeMachine(name: string): void {
    const machine = this.inventory.get(name);
    if (!machine) return;
    machine.reservationId = undefined;
    // Retired while a reservation still held it (gone from the configuration across a restart): it
    // stays retired, whatever its release left pending (a failed release would quarantine it).
    if (machine.state === 'retired') {
      machine.pendingState = undefined;
      this.store.machine(machine);
      return;
    }
    const next = machine.pendingState ?? 'available';
    machine.pendingState = undefined;
    // An offline machine stays offline: what it returns to when its lab host is back changes.
    if (machine.state === 'offline') this.inventory.setState(machine, 'offline', next);
    else this.inventory.setState(machine, next);
    this.store.machine(machine);
  }

  transition(reservation: Reservation, to: ReservationState, action: string, reason: string): void {
    assertTransition(action, reservation.state, to);
    const from = reservation.state;
    reservation.state = to;
    reservation.reason = reason;
    reservation.updatedAt = this.now();
    this.record(reservation, { type: 'state', from, to, reason });
  }

  setAllocation(reservation: Reservation, allocation: Allocation, to: Allocation['state'], reason?: string): void {
    const from = allocation.state;
    allocation.state = to;
    if (reason !== undefined) allocation.reason = reason;
    this.record(reservation, { type: 'allocation', from, to, machine: allocation.machine, reason });
  }

  /** Stores an event, marks the reservation dirty and tells whoever waits on it. */
  record(reservation: Reservation, event: { type: EventView['type']; from?: string; to: string; machine?: string; reason?: string }): void {
    const row = this.store.event({
      reservationId: reservation.id,
      at: new Date(this.now()),
      type: event.type,
      from: event.from ?? null,
      to: event.to,
      machine: event.machine ?? null,
      reason: event.reason ?? null,
    });
    this.store.reservation(reservation);
    this.log.info(
      { reservation: reservation.id, machine: event.machine, from: event.from, to: event.to, reason: event.reason },
      `${event.type === 'state' ? 'reservation' : 'allocation'} ${event.to}`,
    );
    this.changes.emit(`event:${reservation.id}`, row);
    this.changes.emit(`change:${reservation.id}`);
    this.changes.emit('event', row, reservation);
  }

  /**
   * After a failed commit: every record goes back to its last committed image, in place (waiters
   * hold these objects), and the queue (every request in it to be tried again) and the agents'
   * tasks are rebuilt from them, so no change of any code path can stay in memory without being in
   * the database.
   */
  rollback(): void {
    for (const machine of this.inventory.machines.values()) {
      const image = this.store.committedMachines.get(machine.name);
      if (!image) continue;
      this.inventory.setState(machine, image.row.state as MachineEntry['state'], (image.row.onlineState ?? undefined) as MachineEntry['state'] | undefined);
      machine.offlineSince = ms(image.row.offlineSince);
      this.inventory.setUnreachable(machine, unreachableFromRow(image.row));
      machine.reservationId = image.row.reservationId ?? undefined;
      machine.reason = image.row.reason ?? undefined;
      machine.failures = image.row.failures;
      machine.pendingState = image.pendingState;
      machine.qualification = image.row.qualification ? JSON.parse(image.row.qualification) : undefined;
    }
    for (const id of [...this.live.keys()]) if (!this.store.committedReservations.has(id)) this.dropLive(id);
    for (const row of this.store.committedReservations.values()) {
      const restored = reservationFromRow(row);
      const reservation = this.live.get(row.id);
      if (!reservation) this.setLive(restored);
      else {
        for (const key of Object.keys(reservation)) delete (reservation as unknown as Record<string, unknown>)[key];
        Object.assign(reservation, restored);
      }
    }
    this.parsed.clear();
    this.tasks.clear();
    // Every queued request is tried again: one the undone batch granted, say, left the waiting lists.
    this.queue.clear();
    this.waiting.clear();
    for (const reservation of this.live.values()) if (reservation.state === 'queued') this.enqueue(reservation);
    for (const reservation of this.live.values()) {
      this.addOpenTasks(reservation);
      this.changes.emit(`change:${reservation.id}`);
    }
  }

  /** The tasks a reservation's allocations wait for: provisioning not yet taken, releases and lease actions no agent holds. */
  addOpenTasks(reservation: Reservation): void {
    for (const allocation of reservation.allocations) {
      if (allocation.state === 'pending') this.addTask('provision', reservation, allocation);
      if (allocation.state === 'provisioning' && allocation.action && !allocation.agent) this.addTask(allocation.action.type, reservation, allocation);
      if (allocation.state === 'releasing' && !allocation.agent) this.addTask('release', reservation, allocation);
    }
  }
}
