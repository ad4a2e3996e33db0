// Resolving a job's ref on the API host, within the config's `repositories:` rules: the repository
// is checked before git sees it (protocol/repository.ts), at most `concurrency` ls-remote
// processes run at once and at most `perUser` for one user; beyond that a resolution waits its
// turn (up to `timeout`), and past `queuePerUser` waiting ones a user gets 429 at once, so one
// user's slow hosts hold up only that user. Each runs under a time and an output cap. The answers carry stable
// codes; git's own words go to the server log only, since they would tell a user whether an
// internal host:port is open.
import type { Config } from './config.js';
import { DomainError, type DomainCode } from './domain-error.js';
import type { Log } from '../protocol/log.js';
import { CheckoutError, displayRepository, type CheckoutErrorCode, resolveRef, rulesFor, type RepositoryRules } from '../protocol/repository.js';

export type RepositoryConfig = Config['repositories'];

/** The code a user is told for each refusal of a checkout; git's own words stay in the log. */
const refusalCodes: Partial<Record<CheckoutErrorCode, DomainCode>> = {
  repository_refused: 'repository_refused',
  repository_unreachable: 'repository_not_found',
  repository_listing_too_large: 'repository_listing_too_large',
  ref_not_found: 'ref_not_found',
};

interface Waiter {
  owner: string;
  start(): void;
}

const busy = (message: string, limit: number, scope: 'user' | 'server') => new DomainError('resolutions_busy', message, { limit, scope });

export class RepositoryResolver {
  private running = 0;
  private readonly runningFor = new Map<string, number>();
  private readonly waiters: Waiter[] = [];

  constructor(
    private readonly config: RepositoryConfig,
    private readonly log: Log,
  ) {}

  /** The rules for repositories `owner` names: local roots with `{user}` filled in. Runner hosts get them with each run. */
  rulesFor(owner: string): RepositoryRules {
    return rulesFor({ transports: this.config.transports, localRoots: this.config.localRoots }, owner);
  }

  /** The commit `ref` names in `repository`, resolved for `owner`; a DomainError with a stable code otherwise. */
  async resolve(owner: string, repository: string, ref: string): Promise<string> {
    await this.acquire(owner);
    try {
      return await resolveRef(repository, ref, { rules: this.rulesFor(owner), timeoutMs: this.config.timeout * 1000, maxOutputBytes: this.config.maxListing });
    } catch (error) {
      const code = error instanceof CheckoutError ? refusalCodes[error.code] : undefined;
      if (!(error instanceof CheckoutError) || !code) throw error;
      if (error.gitMessage) this.log.warn({ repository: displayRepository(repository), user: owner, error: error.gitMessage }, 'repository refused');
      throw new DomainError(code, error.message, { repository: displayRepository(repository), ref });
    } finally {
      this.release(owner);
    }
  }

  private canStart(owner: string): boolean {
    return this.running < this.config.concurrency && (this.runningFor.get(owner) ?? 0) < this.config.perUser;
  }

  private take(owner: string): void {
    this.running += 1;
    this.runningFor.set(owner, (this.runningFor.get(owner) ?? 0) + 1);
  }

  /** A slot for `owner`, at once or after waiting in order; `resolutions_busy` when the user's queue is full or no slot comes within the timeout. */
  private async acquire(owner: string): Promise<void> {
    if (this.canStart(owner) && !this.waiters.some((waiter) => waiter.owner === owner)) return this.take(owner);
    const queued = this.waiters.filter((waiter) => waiter.owner === owner).length;
    if (queued >= this.config.queuePerUser) {
      throw busy(`you have ${queued} repositories waiting to be read already; try again when they are done`, this.config.queuePerUser, 'user');
    }
    await new Promise<void>((resolve, reject) => {
      const waiter: Waiter = {
        owner,
        start: () => {
          clearTimeout(timer);
          this.take(owner);
          resolve();
        },
      };
      const timer = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(waiter), 1);
        const mine = this.runningFor.get(owner) ?? 0;
        reject(
          mine >= this.config.perUser
            ? busy(`your ${mine} repositories being read took all your turns`, this.config.perUser, 'user')
            : busy('the API host is reading as many repositories as it may; try again shortly', this.config.concurrency, 'server'),
        );
      }, this.config.timeout * 1000);
      this.waiters.push(waiter);
    });
  }

  /** Gives the slot back and starts the oldest waiters that may start now. */
  private release(owner: string): void {
    this.running -= 1;
    const left = (this.runningFor.get(owner) ?? 1) - 1;
    if (left > 0) this.runningFor.set(owner, left);
    else this.runningFor.delete(owner);
    for (let index = 0; index < this.waiters.length && this.running < this.config.concurrency;) {
      const waiter = this.waiters[index];
      if (this.canStart(waiter.owner)) {
        this.waiters.splice(index, 1);
        waiter.start();
      } else {
        index += 1;
      }
    }
  }
}
