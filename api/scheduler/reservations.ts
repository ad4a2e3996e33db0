// Reservations as their owners see them: request (with idempotency keys), show, list, wait, renew,
// release, and the reaper that ends expired leases and queue timeouts. Granting and releasing
// machines is grants.ts's; this file decides what a caller may do and when.
import { randomBytes } from 'node:crypto';
import { Op } from 'sequelize';
import type { Caller, EventView, ReservationState } from '../../protocol/api.js';
import { generateKeyPair } from '../../protocol/ssh-keys.js';
import { plainRow, plainRows, type EventRow } from '../db/index.js';
import { DomainError, forbidden, notFound } from '../domain-error.js';
import { compareKeys, maxPageSize, newestFirst, slicePage, type Key, type Page } from '../pages.js';
import { canEverSatisfy } from './allocate.js';
import type { Grants } from './grants.js';
import { isEnded, liveStates } from './lifecycle.js';
import { comesBefore, queueOrder } from './queue.js';
import { eventView, reservationFromRow, type Reservation } from './records.js';
import { parseMembers, type ParsedMember, type ReservationRequestInput } from './requests.js';
import { idempotencySlot, type SchedulerState } from './state.js';

type Created = { reservation: Reservation; created: boolean };

export class Reservations {
  /**
   * Called right before a new request becomes live (no await in between, so concurrent requests
   * see each other): throws to refuse it, e.g. over the caller's quota (api/quotas.ts).
   */
  admit?: (caller: Caller, members: Reservation['members'], live: Iterable<Reservation>) => void;
  private readonly creating = new Map<string, Promise<Created>>();

  constructor(
    private readonly state: SchedulerState,
    private readonly grants: Grants,
  ) {}

  /** The live reservations stored, put in memory (at start; the machines are loaded after them). */
  async loadLive(): Promise<Reservation[]> {
    const rows = plainRows(await this.state.db.reservations.findAll({ where: { state: [...liveStates] }, raw: true }));
    for (const row of rows) this.state.setLive(reservationFromRow(row));
    return [...this.state.live.values()];
  }

  async create(caller: Caller, request: ReservationRequestInput): Promise<Created> {
    const { lease } = this.state.policy;
    const members = request.members.map((member) => ({ ...member, count: member.count ?? 1 }));
    const parsed = parseMembers(members);
    const leaseSeconds = request.lease ?? lease.default;
    if (leaseSeconds > lease.max) {
      throw new DomainError('invalid_request', `lease ${leaseSeconds}s is longer than the maximum of ${lease.max}s`, { max: lease.max });
    }
    if (request.idempotencyKey === undefined) return this.createNew(caller, request, members, parsed, leaseSeconds);
    // Two retries of one request may arrive together: the second waits for the first.
    const slot = idempotencySlot(caller.name, request.idempotencyKey);
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
  ): Promise<Created> {
    const { state } = this;
    const verdict = canEverSatisfy(parsed, state.inventory.allShapes());
    if (!verdict.ok) {
      const summary = verdict.reasons.map((reason) => `${reason.role}: ${reason.reason}`).join('; ');
      throw new DomainError('unsatisfiable', `no machine in the inventory could ever satisfy this request: ${summary}`, { members: verdict.reasons });
    }
    if (!this.grants.fitsPoolLimits(parsed)) {
      const limits = [...state.poolLimits].map(([pool, limit]) => `${pool} runs at most ${limit}`).join(', ');
      throw new DomainError('unsatisfiable', `this request needs more machines of one pool at once than the pool allows (${limits})`, {
        pools: Object.fromEntries(state.poolLimits),
      });
    }
    // From here to addLive nothing awaits, so what admit counted is still what is live.
    this.admit?.(caller, members, state.live.values());
    const id = `r-${randomBytes(6).toString('hex')}`;
    const keys = generateKeyPair(`paddock:${id}`);
    const now = state.now();
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
      queueDeadline: now + (request.queueTimeout ?? state.policy.queue.timeout) * 1000,
    };
    state.addLive(reservation, parsed);
    state.record(reservation, { type: 'state', to: 'queued', reason: `requested by ${caller.name}` });
    state.enqueue(reservation);
    this.grants.schedule();
    await state.store.flush();
    return { reservation, created: true };
  }

  private async findByIdempotencyKey(owner: string, key: string): Promise<Reservation | undefined> {
    const live = this.state.liveWithKey(owner, key);
    if (live) return live;
    const row = plainRow(await this.state.db.reservations.findOne({ where: { owner, idempotencyKey: key }, raw: true }));
    return row ? reservationFromRow(row) : undefined;
  }

  /** Whether the reservation is still live (not ended). */
  isLive(id: string): boolean {
    return this.state.live.has(id);
  }

  /** A reservation the caller may see: their own, or any for an admin. */
  async get(caller: Caller, id: string): Promise<Reservation> {
    const reservation = this.state.live.get(id) ?? (await this.load(id));
    if (!reservation) throw notFound(`reservation ${id}`);
    if (caller.role !== 'admin' && reservation.owner !== caller.name) {
      throw forbidden(`reservation ${id} belongs to another user`);
    }
    return reservation;
  }

  /**
   * The reservation whose console log a lab host's agent sends: `machine` must be one of its
   * allocations and on that agent's lab host (`agent` undefined: an admin, any). Ended ones too: the
   * last lines arrive after the release.
   */
  async consoleOf(agent: string | undefined, id: string, machine: string): Promise<Reservation> {
    const reservation = this.state.live.get(id) ?? (await this.load(id));
    if (!reservation) throw notFound(`reservation ${id}`);
    if (!reservation.allocations.some((allocation) => allocation.machine === machine)) {
      throw notFound(`machine ${machine} in reservation ${id}`);
    }
    const labHost = this.state.inventory.get(machine)?.labHost;
    if (agent !== undefined && labHost !== agent) {
      throw new DomainError('not_your_task', `${machine} is not a machine of lab host ${agent}`, { agent });
    }
    return reservation;
  }

  private async load(id: string): Promise<Reservation | undefined> {
    if (!/^r-[0-9a-f]{12}$/.test(id)) return undefined;
    await this.state.store.flush();
    const row = plainRow(await this.state.db.reservations.findByPk(id, { raw: true }));
    return row ? reservationFromRow(row) : undefined;
  }

  /**
   * One page of the caller's reservations (admins with `all`: everyone's). Live ones oldest first;
   * with `includeEnded`, every stored one newest first. Keys: [createdAt ms, id].
   */
  async list(
    caller: Caller,
    options: { all?: boolean; includeEnded?: boolean },
    page: Page = { limit: maxPageSize },
  ): Promise<{ items: Reservation[]; next?: Key }> {
    const { live, store, db } = this.state;
    const everyone = options.all && caller.role === 'admin';
    const key = (reservation: Reservation): Key => [reservation.createdAt, reservation.id];
    if (!options.includeEnded) {
      const mine = [...live.values()].filter((reservation) => everyone || reservation.owner === caller.name);
      return slicePage(
        mine.sort((a, b) => compareKeys(key(a), key(b))),
        key,
        page,
      );
    }
    await store.flush();
    const { items, next } = await newestFirst(db.reservations, everyone ? {} : { owner: caller.name }, page);
    return { items: items.map((row) => live.get(row.id) ?? reservationFromRow(row)), ...(next ? { next } : {}) };
  }

  /** The queue position of a queued reservation: O(queue), no sort (see queuePositions for many). */
  queuePosition(reservation: Reservation): number | undefined {
    const { state } = this;
    if (reservation.state !== 'queued' || !state.queue.has(reservation)) return undefined;
    const now = state.now();
    const policy = state.queuePolicy();
    const target = state.queueEntry(reservation);
    let ahead = 0;
    for (const queued of state.queue) if (queued !== reservation && comesBefore(state.queueEntry(queued), target, now, policy)) ahead += 1;
    return ahead + 1;
  }

  /** Every queued reservation's position, from one sort of the queue: for a list, computed once. */
  queuePositions(): Map<string, number> {
    const order = queueOrder(this.state.queueInput(), this.state.now(), this.state.queuePolicy());
    return new Map(order.map((entry, index) => [entry.id, index + 1]));
  }

  async release(caller: Caller, id: string): Promise<Reservation> {
    const reservation = await this.get(caller, id);
    if (this.state.live.has(reservation.id)) {
      this.grants.beginRelease(reservation, 'released', `released by ${caller.name}`);
      await this.state.store.flush();
    }
    return reservation;
  }

  /** Releases every live reservation of an owner (a job run that ended); returns their ids. */
  async releaseAllOf(owner: string, reason: string): Promise<string[]> {
    const mine = [...this.state.live.values()].filter((reservation) => reservation.owner === owner);
    for (const reservation of mine) this.grants.beginRelease(reservation, 'released', reason);
    await this.state.store.flush();
    return mine.map((reservation) => reservation.id);
  }

  async renew(caller: Caller, id: string): Promise<Reservation> {
    const reservation = await this.get(caller, id);
    if (isEnded(reservation.state) || reservation.state === 'releasing') {
      throw new DomainError('lease_expired', `reservation ${id} is ${reservation.state}; its lease cannot be renewed`, { state: reservation.state });
    }
    if (reservation.state !== 'queued') {
      const now = this.state.now();
      reservation.expiresAt = Math.min(now + reservation.leaseSeconds * 1000, reservation.hardCapAt ?? Infinity);
      reservation.updatedAt = now;
      this.state.store.reservation(reservation);
      await this.state.store.flush();
    }
    return reservation;
  }

  /** The reservation's events after `afterId`, oldest first; at most `limit` of them when given. */
  async events(caller: Caller, id: string, afterId = 0, limit?: number): Promise<EventView[]> {
    await this.get(caller, id);
    await this.state.store.flush();
    const where = { reservationId: id, id: { [Op.gt]: afterId } };
    const rows = plainRows(await this.state.db.events.findAll({ where, order: [['id', 'ASC']], ...(limit === undefined ? {} : { limit }), raw: true }));
    return rows.map(eventView);
  }

  /** Calls back on every event of the reservation until the returned function is called. */
  subscribe(id: string, listener: (event: EventView) => void): () => void {
    const { changes } = this.state;
    const channel = `event:${id}`;
    const handler = (row: EventRow) => listener(eventView(row));
    changes.on(channel, handler);
    return () => changes.off(channel, handler);
  }

  /**
   * Resolves when the reservation reaches one of the states, ends, or the timeout passes. Waiting
   * for `ready` also waits out the power actions and re-deploys under way on its members.
   */
  async waitFor(reservation: Reservation, states: ReservationState[], timeoutMs: number): Promise<Reservation> {
    const { changes } = this.state;
    const busy = () => states.includes('ready') && reservation.allocations.some((allocation) => allocation.state === 'provisioning');
    const done = () => (states.includes(reservation.state) && !busy()) || isEnded(reservation.state);
    if (done() || !this.state.live.has(reservation.id)) return reservation;
    return new Promise((resolve) => {
      const channel = `change:${reservation.id}`;
      const finish = () => {
        clearTimeout(timer);
        changes.off(channel, check);
        resolve(reservation);
      };
      const check = () => done() && finish();
      const timer = setTimeout(finish, timeoutMs);
      changes.on(channel, check);
    });
  }

  /** Releases expired leases, drops requests whose queue timeout passed, and re-runs the queue (aging). */
  async reap(): Promise<void> {
    const now = this.state.now();
    for (const reservation of [...this.state.live.values()]) {
      if (reservation.state === 'queued' && reservation.queueDeadline !== undefined && reservation.queueDeadline <= now) {
        this.grants.beginRelease(reservation, 'expired', 'queue timeout: no machines became free in time');
      } else if (['allocated', 'provisioning', 'ready'].includes(reservation.state) && reservation.expiresAt !== undefined && reservation.expiresAt <= now) {
        this.grants.beginRelease(reservation, 'expired', 'lease expired');
      }
    }
    this.grants.schedule();
    await this.state.store.flush();
  }

  /** Whether a live reservation names the image (`name` means `name:latest`), for a member or in a re-deploy. */
  imageInUse(ref: string): boolean {
    const full = (image: string) => (image.includes(':') ? image : `${image}:latest`);
    for (const reservation of this.state.live.values()) {
      if (reservation.members.some((member) => member.image !== undefined && full(member.image) === ref)) return true;
      if (reservation.allocations.some((allocation) => allocation.image !== undefined && full(allocation.image) === ref)) return true;
    }
    return false;
  }
}
