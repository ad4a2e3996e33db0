// Per-user quotas: what one user may hold, queue and store at once, so no user can crowd the others
// out. Limits come from the config (`quotas.default`, and `quotas.tokens.NAME` over it for one
// token). The checks are called from the places that create what they count (reservations, runs,
// image uploads) and throw `quota_exceeded` (429) with `{ quota, limit, current, requested }`.
//
// Whose use is counted: a caller's "account". A run token (named after its run) counts against the
// owner of the run's job, so a job cannot multiply its owner's quota by running many times. Admin
// tokens are exempt: they set the limits. A run token of an admin's job is not an admin token, so
// it gets the admin account's limits like any run (the script is untrusted code).
import type { Reservation } from './scheduler/records.js';
import type { Caller } from '../protocol/api.js';
import { DomainError } from './domain-error.js';
import { KeyedQueue } from '../images/keyed-queue.js';

export const quotaNames = ['reservations', 'queued', 'machines', 'imageBytes', 'uploads', 'runs'] as const;
export type QuotaName = (typeof quotaNames)[number];

/** A limit per quota; an absent one is unlimited. */
export type QuotaLimits = Partial<Record<QuotaName, number>>;

export interface QuotaConfig {
  default: QuotaLimits;
  /** Per token name: limits that replace the default ones they name. */
  tokens: Record<string, QuotaLimits>;
}

/** What each quota counts, for messages and the README. */
const meaning: Record<QuotaName, string> = {
  reservations: 'live reservations (queued or holding machines)',
  queued: 'queued reservation requests',
  machines: 'machines held or asked for by live reservations',
  imageBytes: 'bytes of stored images',
  uploads: 'image uploads at once',
  runs: 'queued job runs',
};

export class Quotas {
  /** The account a token name counts against: the job owner for a run token (set by the job service). */
  accountOf: (name: string) => string = (name) => name;
  /** Work admitted but not yet visible in what the callers count (a run being written), per account and quota. */
  private readonly inFlight = new Map<string, number>();
  private readonly serial = new KeyedQueue();

  constructor(private readonly config: QuotaConfig) {}

  /** The limits that apply to a caller, or undefined for an exempt caller (an admin token). */
  limitsOf(caller: Caller): QuotaLimits | undefined {
    if (caller.role === 'admin') return undefined;
    const account = this.accountOf(caller.name);
    return { ...this.config.default, ...this.config.tokens[account] };
  }

  /**
   * Throws `quota_exceeded` when `current` (what the caller's account holds, counted by the caller) plus what is
   * in flight plus `requested` is over the limit. Otherwise the requested amount stays in flight
   * until the returned function is called: callers whose new item becomes countable only after an
   * await hold it that way, so concurrent requests cannot all pass the same check.
   */
  admit(caller: Caller, quota: QuotaName, current: number, requested = 1): () => void {
    const limit = this.limitsOf(caller)?.[quota];
    if (limit === undefined) return () => undefined;
    const key = `${this.accountOf(caller.name)}\u0000${quota}`;
    const held = this.inFlight.get(key) ?? 0;
    if (current + held + requested > limit) {
      throw new DomainError('quota_exceeded', `over your quota of ${limit} ${meaning[quota]}: you have ${current + held}, this asks for ${requested} more`, {
        quota,
        limit,
        current: current + held,
        requested,
      });
    }
    this.inFlight.set(key, held + requested);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const left = (this.inFlight.get(key) ?? requested) - requested;
      if (left <= 0) this.inFlight.delete(key);
      else this.inFlight.set(key, left);
    };
  }

  /** Runs `work` after every earlier call for the same account has finished (count, check, write as one step). */
  serialize<T>(caller: Caller, work: () => Promise<T>): Promise<T> {
    return this.serial.run(this.accountOf(caller.name), work);
  }

  /**
   * A new run for the caller: checks queued runs against `live` (the job service's live runs). The
   * run is held in flight until the returned function is called (once the run is in `live`).
   */
  admitRun(caller: Caller, live: Iterable<{ owner: string; state: string }>): () => void {
    if (!this.limitsOf(caller)) return () => undefined;
    const account = this.accountOf(caller.name);
    let queued = 0;
    for (const run of live) if (run.state === 'queued' && this.accountOf(run.owner) === account) queued += 1;
    return this.admit(caller, 'runs', queued);
  }

  /**
   * A new reservation request of `members` for the caller: checks live reservations, queued
   * requests and machines against what the caller's account has among `live`. Called right before
   * the request becomes live, with no await in between, so the count cannot be stale.
   */
  admitReservation(caller: Caller, members: readonly { count: number }[], live: Iterable<Reservation>): void {
    const limits = this.limitsOf(caller);
    if (!limits) return;
    const account = this.accountOf(caller.name);
    // Many reservations, few owners: each owner's account is looked up once.
    const accounts = new Map<string, string>();
    const accountOf = (owner: string) => accounts.get(owner) ?? accounts.set(owner, this.accountOf(owner)).get(owner)!;
    let reservations = 0;
    let queued = 0;
    let machines = 0;
    for (const reservation of live) {
      if (accountOf(reservation.owner) !== account) continue;
      reservations += 1;
      if (reservation.state === 'queued') queued += 1;
      machines += reservation.members.reduce((sum, member) => sum + member.count, 0);
    }
    const asked = members.reduce((sum, member) => sum + member.count, 0);
    this.admit(caller, 'reservations', reservations)();
    this.admit(caller, 'queued', queued)();
    this.admit(caller, 'machines', machines, asked)();
  }
}
