// The scheduler's reservation side: from request to release (the agents' side is scheduler.ts). It owns the in-memory state (machines,
// live reservations, the queue, the agents' task list), applies every change through the lifecycle
// table, records an event for it and persists it through the store before the caller answers.
// Policy (matching, gang allocation, queue order) lives in pure functions next to this file.
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { Op } from 'sequelize';
import type { Caller, EventView, ReservationState } from '../../protocol/api.js';
import type { Config } from '../config.js';
import { plainRow, plainRows, type Database, type EventRow } from '../db/index.js';
import { DomainError, forbidden, notFound } from '../domain-error.js';
import { afterWhere, compareKeys, maxPageSize, rowsPage, slicePage, type Key, type Page } from '../pages.js';
import { generateKeyPairAsync } from '../../protocol/ssh.js';
import { canEverSatisfy, matchShape } from './allocate.js';
import { Inventory } from './inventory.js';
import { WaitingRequests } from './waiting.js';
import { assertTransition, isEnded, liveStates } from './lifecycle.js';
import { comesBefore, isStarving, queueOrder, schedulePass, scheduleQueue, type QueuedRequest } from './queue.js';
import { eventView, reservationFromRow, type Allocation, type MachineEntry, type Reservation } from './records.js';
import { parseMembers, type ParsedMember, type ReservationRequestInput } from './requests.js';
import { Store } from './store.js';

export type Task = { action: 'provision' | 'release'; reservation: Reservation; allocation: Allocation };

export class ReservationScheduler {
  readonly inventory = new Inventory();
  protected readonly live = new Map<string, Reservation>();
  protected readonly parsed = new Map<string, ParsedMember[]>();
  private queue: Reservation[] = [];
  protected readonly tasks = new Map<string, Task>();
  private readonly creating = new Map<string, Promise<{ reservation: Reservation; created: boolean }>>();
  protected readonly agentWaiters = new Set<() => void>();
  protected readonly changes = new EventEmitter();
  protected readonly store: Store;
  private reaper?: NodeJS.Timeout;
  /** The most machines of each provider pool (by `pool` label) reserved at once. */
  poolLimits = new Map<string, number>();
  /**
   * Called right before a new request becomes live (no await in between, so concurrent requests
   * see each other): throws to refuse it, e.g. over the caller's quota (api/quotas.ts).
   */
  admit?: (caller: Caller, members: Reservation['members'], live: Iterable<Reservation>) => void;
  /** Requests sent back to the queue because the cloud was full: not retried before this time. */
  private readonly heldUntil = new Map<string, number>();
  /** Which queued requests a pass must try (see schedule and waiting.ts). */
  private readonly waiting = new WaitingRequests();

  constructor(
    protected readonly db: Database,
    readonly config: Config,
    protected readonly now: () => number = Date.now,
  ) {
    this.store = new Store(db);
    this.changes.setMaxListeners(0);
  }

  /** Loads machines and live reservations, and repairs what a crash left half done. */
  async start(): Promise<void> {
    await this.store.init();
    const rows = new Map(plainRows(await this.db.machines.findAll({ raw: true })).map((row) => [row.name, row]));
    const liveRows = plainRows(await this.db.reservations.findAll({ where: { state: [...liveStates] }, raw: true }));
    const held = new Map<string, string>();
    for (const row of liveRows) {
      const reservation = reservationFromRow(row);
      for (const allocation of reservation.allocations) if (allocation.state !== 'released') held.set(allocation.machine, reservation.id);
      this.live.set(reservation.id, reservation);
    }
    for (const machine of this.config.machines) {
      const row = rows.get(machine.name);
      rows.delete(machine.name);
      const stored = row?.state as MachineEntry['state'] | undefined;
      const reservationId = held.get(machine.name);
      // A machine is busy only if a live reservation holds it: a crash can leave no machine stuck.
      const state = reservationId ? 'reserved' : stored === 'maintenance' || stored === 'quarantined' ? stored : 'available';
      const entry = this.inventory.add({
        name: machine.name,
        kind: machine.kind,
        state,
        labels: machine.labels,
        capacities: machine.capacities,
        settings: machine.settings,
        failures: row?.failures ?? 0,
        reservationId,
        reason: state === stored ? (row?.reason ?? undefined) : undefined,
      });
      if (!row || row.state !== entry.state || row.labels !== JSON.stringify(entry.labels)) this.store.machine(entry);
    }
    for (const row of rows.values()) {
      if (row.state === 'retired') continue;
      const retired = this.inventory.add({
        name: row.name, kind: row.kind, state: 'retired', labels: JSON.parse(row.labels), capacities: JSON.parse(row.capacities),
        settings: {}, failures: row.failures, reason: 'no longer in the configuration',
      });
      this.store.machine(retired);
    }
    this.store.adopt(this.live.values(), this.inventory.machines.values());
    this.store.onRollback = () => this.rollback();
    for (const reservation of this.live.values()) this.resume(reservation);
    this.schedule();
    await this.store.flush();
    const interval = Math.max(50, this.config.reaper.interval * 1000);
    this.reaper = setInterval(() => void this.reap().catch(() => undefined), interval);
    this.reaper.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.reaper);
    for (const wake of this.agentWaiters) wake();
    try {
      await this.store.flush();
    } finally {
      await this.store.close();
    }
  }

  /**
   * After a failed commit: every record goes back to its last committed image, in place (waiters
   * hold these objects), and the queue and the agents' tasks are rebuilt from them, so no change
   * of any code path can stay in memory without being in the database.
   */
  private rollback(): void {
    for (const machine of this.inventory.machines.values()) {
      const image = this.store.committedMachines.get(machine.name);
      if (!image) continue;
      this.inventory.setState(machine, image.row.state as MachineEntry['state']);
      machine.reservationId = image.row.reservationId ?? undefined;
      machine.reason = image.row.reason ?? undefined;
      machine.failures = image.row.failures;
      machine.pendingState = image.pendingState;
    }
    for (const id of this.live.keys()) if (!this.store.committedReservations.has(id)) this.live.delete(id);
    for (const row of this.store.committedReservations.values()) {
      const restored = reservationFromRow(row);
      const reservation = this.live.get(row.id);
      if (!reservation) this.live.set(row.id, restored);
      else {
        for (const key of Object.keys(reservation)) delete (reservation as unknown as Record<string, unknown>)[key];
        Object.assign(reservation, restored);
      }
    }
    this.parsed.clear();
    this.tasks.clear();
    this.queue = [...this.live.values()].filter((reservation) => reservation.state === 'queued').sort((a, b) => a.createdAt - b.createdAt);
    for (const reservation of this.live.values()) {
      for (const allocation of reservation.allocations) {
        if (allocation.state === 'pending') this.addTask('provision', reservation, allocation);
        if (allocation.state === 'releasing' && !allocation.agent) this.addTask('release', reservation, allocation);
      }
      this.changes.emit(`change:${reservation.id}`);
    }
  }

  /** Null while commits succeed; else the last commit's error. */
  storeFailure(): Error | null {
    return this.store.failing;
  }

  /** Puts a reservation loaded from the database back in the queue or the agents' task list. */
  private resume(reservation: Reservation): void {
    const missing = reservation.allocations.filter((allocation) => !this.inventory.get(allocation.machine) || this.inventory.get(allocation.machine)!.state === 'retired');
    if (reservation.state === 'queued') {
      this.queue.push(reservation);
      this.queue.sort((a, b) => a.createdAt - b.createdAt);
      this.waiting.add(reservation.id);
      return;
    }
    if (missing.length > 0 && reservation.state !== 'releasing') {
      this.beginRelease(reservation, 'failed', `machine ${missing[0].machine} left the inventory`);
      return;
    }
    for (const allocation of reservation.allocations) {
      if (allocation.state === 'pending') this.addTask('provision', reservation, allocation);
      if (allocation.state === 'releasing' && !allocation.agent) this.addTask('release', reservation, allocation);
    }
  }

  // ---- reservations -------------------------------------------------------------------------

  async create(caller: Caller, request: ReservationRequestInput): Promise<{ reservation: Reservation; created: boolean }> {
    const members = request.members.map((member) => ({ ...member, count: member.count ?? 1 }));
    const parsed = parseMembers(members);
    const leaseSeconds = request.lease ?? this.config.lease.default;
    if (leaseSeconds > this.config.lease.max) {
      throw new DomainError('invalid_request', `lease ${leaseSeconds}s is longer than the maximum of ${this.config.lease.max}s`, {
        max: this.config.lease.max,
      });
    }
    if (request.idempotencyKey === undefined) return this.createNew(caller, request, members, parsed, leaseSeconds);
    // Two retries of one request may arrive together: the second waits for the first.
    const slot = `${caller.name}\u0000${request.idempotencyKey}`;
    const pending = this.creating.get(slot);
    if (pending) return { reservation: (await pending).reservation, created: false };
    const creating = (async () => {
      const existing = await this.findByIdempotencyKey(caller.name, request.idempotencyKey!);
      if (existing) return { reservation: existing, created: false };
      return this.createNew(caller, request, members, parsed, leaseSeconds);
    })();
    this.creating.set(slot, creating);
    try {
      return await creating;
    } finally {
      this.creating.delete(slot);
    }
  }

  private async createNew(
    caller: Caller,
    request: ReservationRequestInput,
    members: Reservation['members'],
    parsed: ParsedMember[],
    leaseSeconds: number,
  ): Promise<{ reservation: Reservation; created: boolean }> {
    const verdict = canEverSatisfy(parsed, this.inventory.allShapes());
    if (!verdict.ok) {
      const summary = verdict.reasons.map((reason) => `${reason.role}: ${reason.reason}`).join('; ');
      throw new DomainError('unsatisfiable', `no machine in the inventory could ever satisfy this request: ${summary}`, {
        members: verdict.reasons,
      });
    }
    if (this.poolLimits.size > 0) {
      const probe = { id: 'probe', priority: 0, createdAtMs: 0, members: parsed };
      if (schedulePass([probe], this.inventory.allShapes(), this.now(), this.policy(), this.poolLimits).grants.length === 0) {
        const limits = [...this.poolLimits].map(([pool, limit]) => `${pool} runs at most ${limit}`).join(', ');
        throw new DomainError('unsatisfiable', `this request needs more machines of one pool at once than the pool allows (${limits})`, {
          pools: Object.fromEntries(this.poolLimits),
        });
      }
    }
    this.admit?.(caller, members, this.live.values()); // again below, after the await: this one spares a key pair
    const id = `r-${randomBytes(6).toString('hex')}`;
    const keys = await generateKeyPairAsync(`paddock:${id}`);
    const now = this.now();
    const reservation: Reservation = {
      id,
      owner: caller.name,
      state: 'queued',
      priority: request.priority,
      leaseSeconds,
      members,
      allocations: [],
      publicKey: keys.publicKey,
      privateKey: keys.privateKey,
      idempotencyKey: request.idempotencyKey,
      createdAt: now,
      updatedAt: now,
      queueDeadline: now + (request.queueTimeout ?? this.config.queue.timeout) * 1000,
    };
    this.admit?.(caller, members, this.live.values());
    this.live.set(id, reservation);
    this.parsed.set(id, parsed);
    this.record(reservation, { type: 'state', to: 'queued', reason: `requested by ${caller.name}` });
    this.queue.push(reservation);
    this.waiting.add(id);
    this.schedule();
    await this.store.flush();
    return { reservation, created: true };
  }

  private async findByIdempotencyKey(owner: string, key: string): Promise<Reservation | undefined> {
    for (const reservation of this.live.values()) {
      if (reservation.owner === owner && reservation.idempotencyKey === key) return reservation;
    }
    const row = plainRow(await this.db.reservations.findOne({ where: { owner, idempotencyKey: key }, raw: true }));
    return row ? reservationFromRow(row) : undefined;
  }

  /** A reservation the caller may see: their own, or any for an admin. */
  /** Whether the reservation is still live (not ended). */
  isLive(id: string): boolean {
    return this.live.has(id);
  }

  async get(caller: Caller, id: string): Promise<Reservation> {
    const reservation = this.live.get(id) ?? (await this.load(id));
    if (!reservation) throw notFound(`reservation ${id}`);
    if (caller.role !== 'admin' && reservation.owner !== caller.name) {
      throw forbidden(`reservation ${id} belongs to another user`);
    }
    return reservation;
  }

  private async load(id: string): Promise<Reservation | undefined> {
    if (!/^r-[0-9a-f]{12}$/.test(id)) return undefined;
    await this.store.flush();
    const row = plainRow(await this.db.reservations.findByPk(id, { raw: true }));
    return row ? reservationFromRow(row) : undefined;
  }

  /**
   * One page of the caller's reservations (admins with `all`: everyone's). Live ones oldest first;
   * with `includeEnded`, every stored one newest first. Keys: [createdAt ms, id].
   */
  async list(caller: Caller, options: { all?: boolean; includeEnded?: boolean }, page: Page = { limit: maxPageSize }): Promise<{ items: Reservation[]; next?: Key }> {
    const everyone = options.all && caller.role === 'admin';
    const key = (reservation: Reservation): Key => [reservation.createdAt, reservation.id];
    if (!options.includeEnded) {
      const mine = [...this.live.values()].filter((reservation) => everyone || reservation.owner === caller.name);
      return slicePage(mine.sort((a, b) => compareKeys(key(a), key(b))), key, page);
    }
    await this.store.flush();
    const where = { ...(everyone ? {} : { owner: caller.name }), ...afterWhere(['createdAt', 'id'], page, true) };
    const rows = plainRows(await this.db.reservations.findAll({ where, order: [['createdAt', 'DESC'], ['id', 'DESC']], limit: page.limit + 1, raw: true }));
    const { items, next } = rowsPage(rows, (row) => [new Date(row.createdAt).getTime(), row.id], page);
    return { items: items.map((row) => this.live.get(row.id) ?? reservationFromRow(row)), ...(next ? { next } : {}) };
  }

  /** The queue position of a queued reservation: O(queue), no sort (see queuePositions for many). */
  queuePosition(reservation: Reservation): number | undefined {
    if (reservation.state !== 'queued' || !this.queue.includes(reservation)) return undefined;
    const now = this.now();
    const policy = this.policy();
    const target = this.queueEntry(reservation);
    let ahead = 0;
    for (const queued of this.queue) if (queued !== reservation && comesBefore(this.queueEntry(queued), target, now, policy)) ahead += 1;
    return ahead + 1;
  }

  /** Every queued reservation's position, from one sort of the queue: for a list, computed once. */
  queuePositions(): Map<string, number> {
    const order = queueOrder(this.queueInput(), this.now(), this.policy());
    return new Map(order.map((entry, index) => [entry.id, index + 1]));
  }

  async release(caller: Caller, id: string): Promise<Reservation> {
    const reservation = await this.get(caller, id);
    if (this.live.has(reservation.id)) {
      this.beginRelease(reservation, 'released', `released by ${caller.name}`);
      await this.store.flush();
    }
    return reservation;
  }

  /** Releases every live reservation of an owner (a job run that ended); returns their ids. */
  async releaseAllOf(owner: string, reason: string): Promise<string[]> {
    const mine = [...this.live.values()].filter((reservation) => reservation.owner === owner);
    for (const reservation of mine) this.beginRelease(reservation, 'released', reason);
    await this.store.flush();
    return mine.map((reservation) => reservation.id);
  }

  async renew(caller: Caller, id: string): Promise<Reservation> {
    const reservation = await this.get(caller, id);
    if (isEnded(reservation.state) || reservation.state === 'releasing') {
      throw new DomainError('lease_expired', `reservation ${id} is ${reservation.state}; its lease cannot be renewed`, {
        state: reservation.state,
      });
    }
    if (reservation.state !== 'queued') {
      const now = this.now();
      reservation.expiresAt = Math.min(now + reservation.leaseSeconds * 1000, reservation.hardCapAt ?? Infinity);
      reservation.updatedAt = now;
      this.store.reservation(reservation);
      await this.store.flush();
    }
    return reservation;
  }

  /** The reservation's events after `afterId`, oldest first; at most `limit` of them when given. */
  async events(caller: Caller, id: string, afterId = 0, limit?: number): Promise<EventView[]> {
    await this.get(caller, id);
    await this.store.flush();
    const where = { reservationId: id, id: { [Op.gt]: afterId } };
    const rows = plainRows(await this.db.events.findAll({ where, order: [['id', 'ASC']], ...(limit === undefined ? {} : { limit }), raw: true }));
    return rows.map(eventView);
  }

  /** Calls back on every event of the reservation until the returned function is called. */
  subscribe(id: string, listener: (event: EventView) => void): () => void {
    const channel = `event:${id}`;
    const handler = (row: EventRow) => listener(eventView(row));
    this.changes.on(channel, handler);
    return () => this.changes.off(channel, handler);
  }

  /** Resolves when the reservation reaches one of the states, ends, or the timeout passes. */
  async waitFor(reservation: Reservation, states: ReservationState[], timeoutMs: number): Promise<Reservation> {
    const done = () => states.includes(reservation.state) || isEnded(reservation.state);
    if (done() || !this.live.has(reservation.id)) return reservation;
    return new Promise((resolve) => {
      const channel = `change:${reservation.id}`;
      const finish = () => {
        clearTimeout(timer);
        this.changes.off(channel, check);
        resolve(reservation);
      };
      const check = () => done() && finish();
      const timer = setTimeout(finish, timeoutMs);
      this.changes.on(channel, check);
    });
  }

  private queueInput(queue: readonly Reservation[] = this.queue): QueuedRequest[] {
    return queue.map((reservation) => this.queueEntry(reservation));
  }

  private queueEntry(reservation: Reservation): QueuedRequest {
    return { id: reservation.id, priority: reservation.priority, createdAtMs: reservation.createdAt, members: this.membersOf(reservation) };
  }

  private membersOf(reservation: Reservation): ParsedMember[] {
    let members = this.parsed.get(reservation.id);
    if (!members) {
      members = parseMembers(reservation.members);
      this.parsed.set(reservation.id, members);
    }
    return members;
  }

  private policy() {
    return { agingSeconds: this.config.queue.aging, starvationSeconds: this.config.queue.starvation };
  }

  /**
   * Grants every queued request the free machines allow, in queue order. A request found not to
   * fit waits on the shapes it matches (waiting.ts) and is left out of passes until one of them
   * gains a free machine, unless it is starving (then it holds machines back from later requests,
   * so it stays in the pass, but its gang allocation is not run again). A pass over a long queue
   * of requests that cannot fit costs about as much as the new and woken ones.
   */
  private schedule(): void {
    if (this.queue.length === 0) return;
    this.waiting.wake(this.inventory.drainGrown());
    const now = this.now();
    const policy = this.policy();
    const candidates = new Set<Reservation>();
    const known = new Set<string>();
    // The queue is kept in creation order, so the starving requests are a prefix of it.
    for (const reservation of this.queue) {
      if (!isStarving(this.queueEntry(reservation), now, policy)) break;
      candidates.add(reservation);
      if (this.waiting.isUnfit(reservation.id)) known.add(reservation.id);
    }
    for (const id of this.waiting.untried) {
      const reservation = this.live.get(id);
      if (reservation?.state === 'queued' && (this.heldUntil.get(id) ?? 0) <= now) candidates.add(reservation);
    }
    if (candidates.size === 0) return;
    const { grants, unfit } = scheduleQueue(this.queueInput([...candidates]), this.inventory.freeShapes(), now, policy, { room: this.poolRoom(), unfit: known });
    const granted = new Set(grants.map((grant) => grant.id));
    for (const grant of grants) this.grant(this.live.get(grant.id)!, grant.machines);
    if (grants.length > 0) this.queue = this.queue.filter((reservation) => !granted.has(reservation.id));
    // Grants only take machines: what did not fit before them does not fit after them.
    const shapes = this.inventory.allShapes();
    for (const id of unfit) {
      if (this.waiting.isUnfit(id)) continue;
      const members = this.membersOf(this.live.get(id)!);
      this.waiting.unfit(id, shapes.filter((shape) => members.some((member) => matchShape(member.spec, shape).ok)).map((shape) => shape.key));
    }
  }

  /** Room left in each limited pool: its limit less its reserved machines. */
  private poolRoom(): Map<string, number> | undefined {
    if (this.poolLimits.size === 0) return undefined;
    return new Map([...this.poolLimits].map(([pool, limit]) => [pool, limit - this.inventory.reservedIn(pool)]));
  }

  private grant(reservation: Reservation, machines: string[][]): void {
    const now = this.now();
    this.waiting.delete(reservation.id);
    this.transition(reservation, 'allocated', 'grant', 'all members matched free machines');
    reservation.grantedAt = now;
    reservation.expiresAt = now + reservation.leaseSeconds * 1000;
    reservation.hardCapAt = now + this.config.lease.max * 1000;
    let number = 0;
    // Each round after a requeue gets allocation ids of its own, so late reports of an earlier round cannot touch it.
    const round = reservation.requeues ? `${reservation.requeues}-` : '';
    reservation.members.forEach((member, memberIndex) => {
      machines[memberIndex].forEach((name, index) => {
        const machine = this.inventory.get(name)!;
        this.inventory.setState(machine, 'reserved');
        machine.reservationId = reservation.id;
        this.store.machine(machine);
        const allocation: Allocation = { id: `${reservation.id}.${round}${number++}`, role: member.role, index, machine: name, state: 'pending', stages: {} };
        reservation.allocations.push(allocation);
        this.record(reservation, { type: 'allocation', to: 'pending', machine: name, reason: `${member.role}[${index}]` });
        this.addTask('provision', reservation, allocation);
      });
    });
  }

  /**
   * Starts releasing a live reservation toward `outcome`. Idempotent: a reservation already
   * releasing or ended is left as it is.
   */
  protected beginRelease(reservation: Reservation, outcome: ReservationState, reason: string): void {
    if (isEnded(reservation.state) || reservation.state === 'releasing') return;
    if (reservation.state === 'queued') {
      this.queue = this.queue.filter((queued) => queued !== reservation);
      this.transition(reservation, outcome === 'released' ? 'cancelled' : outcome, 'release', reason);
      this.forget(reservation);
      return;
    }
    this.transition(reservation, 'releasing', 'release', reason);
    reservation.outcome = outcome;
    for (const allocation of reservation.allocations) this.releaseAllocation(reservation, allocation);
    this.finishIfReleased(reservation);
  }

  private releaseAllocation(reservation: Reservation, allocation: Allocation): void {
    if (allocation.state === 'released' || allocation.state === 'releasing') return;
    if (allocation.state === 'pending') {
      // Never handed to an agent: nothing to undo on the machine.
      this.tasks.delete(allocation.id);
      this.setAllocation(reservation, allocation, 'released', 'never provisioned');
      this.freeMachine(allocation.machine);
      return;
    }
    allocation.agent = undefined;
    this.setAllocation(reservation, allocation, 'releasing');
    this.addTask('release', reservation, allocation);
  }

  /**
   * The cloud was full: the machines are given back and the request waits in the queue again,
   * keeping its place (its creation time) and its queue deadline. It is not tried again for
   * `holdMs`, or until another reservation gives machines back.
   */
  protected requeue(reservation: Reservation, reason: string, holdMs = 15_000): void {
    if (reservation.state !== 'allocated' && reservation.state !== 'provisioning') return;
    this.transition(reservation, 'releasing', 'requeue', reason);
    reservation.outcome = 'queued';
    this.heldUntil.set(reservation.id, this.now() + holdMs);
    for (const allocation of reservation.allocations) this.releaseAllocation(reservation, allocation);
    this.finishIfReleased(reservation);
  }

  protected finishIfReleased(reservation: Reservation): void {
    if (reservation.state !== 'releasing') return;
    if (!reservation.allocations.every((allocation) => allocation.state === 'released')) return;
    if (reservation.outcome === 'queued') {
      this.transition(reservation, 'queued', 'requeue', reservation.reason ?? 'the cloud was full');
      reservation.outcome = undefined;
      reservation.allocations = [];
      reservation.requeues = (reservation.requeues ?? 0) + 1;
      reservation.grantedAt = reservation.expiresAt = reservation.hardCapAt = undefined;
      this.store.reservation(reservation);
      this.queue.push(reservation);
      this.queue.sort((a, b) => a.createdAt - b.createdAt);
      this.waiting.add(reservation.id);
      return;
    }
    // Machines come back: requests held after a full cloud may find room now.
    this.heldUntil.clear();
    this.transition(reservation, reservation.outcome ?? 'released', 'finish release', reservation.reason ?? 'released');
    this.forget(reservation);
    this.schedule();
  }

  private forget(reservation: Reservation): void {
    this.heldUntil.delete(reservation.id);
    this.waiting.delete(reservation.id);
    this.live.delete(reservation.id);
    this.parsed.delete(reservation.id);
  }

  protected freeMachine(name: string): void {
    const machine = this.inventory.get(name);
    if (!machine) return;
    machine.reservationId = undefined;
    const next = machine.pendingState ?? 'available';
    machine.pendingState = undefined;
    this.inventory.setState(machine, next);
    this.store.machine(machine);
  }

  protected transition(reservation: Reservation, to: ReservationState, action: string, reason: string): void {
    assertTransition(action, reservation.state, to);
    const from = reservation.state;
    reservation.state = to;
    reservation.reason = reason;
    reservation.updatedAt = this.now();
    this.record(reservation, { type: 'state', from, to, reason });
  }

  protected setAllocation(reservation: Reservation, allocation: Allocation, to: Allocation['state'], reason?: string): void {
    const from = allocation.state;
    allocation.state = to;
    if (reason !== undefined) allocation.reason = reason;
    this.record(reservation, { type: 'allocation', from, to, machine: allocation.machine, reason });
  }

  /** Stores an event, marks the reservation dirty and tells whoever waits on it. */
  protected record(reservation: Reservation, event: { type: EventView['type']; from?: string; to: string; machine?: string; reason?: string }): void {
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
    this.changes.emit(`event:${reservation.id}`, row);
    this.changes.emit(`change:${reservation.id}`);
  }

  /** Releases expired leases, drops requests whose queue timeout passed, and re-runs the queue (aging). */
  async reap(): Promise<void> {
    const now = this.now();
    for (const reservation of [...this.live.values()]) {
      if (reservation.state === 'queued' && reservation.queueDeadline !== undefined && reservation.queueDeadline <= now) {
        this.beginRelease(reservation, 'expired', 'queue timeout: no machines became free in time');
      } else if (['allocated', 'provisioning', 'ready'].includes(reservation.state) && reservation.expiresAt !== undefined && reservation.expiresAt <= now) {
        this.beginRelease(reservation, 'expired', 'lease expired');
      }
    }
    this.schedule();
    await this.store.flush();
  }

  /** Whether a live reservation names the image (`name` means `name:latest`). */
  imageInUse(ref: string): boolean {
    const full = (image: string) => (image.includes(':') ? image : `${image}:latest`);
    for (const reservation of this.live.values()) {
      if (reservation.members.some((member) => member.image !== undefined && full(member.image) === ref)) return true;
    }
    return false;
  }

  // ---- machines -------------------------------------------------------------------------------

  async setMaintenance(name: string, reason: string | undefined): Promise<MachineEntry> {
    const machine = this.machine(name);
    if (machine.state === 'retired') throw new DomainError('illegal_transition', `machine ${name} is retired`);
    machine.reason = reason ?? 'maintenance';
    if (machine.state === 'reserved') machine.pendingState = 'maintenance';
    else this.inventory.setState(machine, 'maintenance');
    this.store.machine(machine);
    await this.store.flush();
    return machine;
  }

  async activate(name: string): Promise<MachineEntry> {
    const machine = this.machine(name);
    if (machine.state === 'retired') throw new DomainError('illegal_transition', `machine ${name} is retired`);
    machine.pendingState = undefined;
    machine.reason = undefined;
    machine.failures = 0;
    if (machine.state !== 'reserved') this.inventory.setState(machine, 'available');
    this.store.machine(machine);
    this.schedule();
    await this.store.flush();
    return machine;
  }

  machine(name: string): MachineEntry {
    const machine = this.inventory.get(name);
    if (!machine) throw notFound(`machine ${name}`);
    return machine;
  }

  // ---- agents ---------------------------------------------------------------------------------

  protected addTask(action: Task['action'], reservation: Reservation, allocation: Allocation): void {
    this.tasks.set(allocation.id, { action, reservation, allocation });
    for (const wake of this.agentWaiters) wake();
    this.agentWaiters.clear();
  }

}
