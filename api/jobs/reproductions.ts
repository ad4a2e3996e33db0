// `paddock jobs reproduce`: a run run again elsewhere (the caller's machine). The script gets a
// token made for the reproduction alone, like a run's token, never the caller's: an admin who
// reproduces a user's run must not hand that user's script an admin token. Reproducing another
// user's run is refused unless asked for explicitly. The token has the user role whatever the
// caller's; when the caller ends the reproduction, or at its expiry (the run's time limit and a
// margin, for a caller that died), every reservation made with it is released and it is revoked.
// Reproductions live in memory: a restart of the API ends those it left (their tokens are revoked).
import { randomBytes } from 'node:crypto';
import type { Tokens } from '../auth.js';
import type { ReproductionView, RunView } from '../../protocol/api.js';
import { DomainError, forbidden, notFound } from '../domain-error.js';
import type { Log } from '../../protocol/log.js';
import type { RepositoryResolver } from '../repositories.js';
import type { Caller } from '../../protocol/api.js';

/** Past the run's time limit, a reproduction has this much longer before it is ended here. */
const expiryMarginMs = 5 * 60_000;
const tokenPrefix = 'repro-';

interface Reproduction {
  id: string;
  caller: string;
  expiresAt: number;
}

export class Reproductions {
  private readonly live = new Map<string, Reproduction>();
  private timer?: NodeJS.Timeout;

  constructor(
    private readonly tokens: Tokens,
    private readonly releaseAllOf: (owner: string, reason: string) => Promise<string[]>,
    private readonly getRun: (caller: Caller, id: string) => Promise<RunView>,
    private readonly repositories: RepositoryResolver,
    private readonly options: { log: Log; now: () => number },
  ) {}

  /** Ends what an earlier start of the API left, then watches expiries. */
  async start(): Promise<void> {
    for (const token of await this.tokens.list()) {
      if (token.name.startsWith(tokenPrefix)) await this.finish(token.name, 'the API restarted during the reproduction');
    }
    this.timer = setInterval(
      () => void this.expire().catch((error: unknown) => this.options.log.error({ error: (error as Error).message }, 'reproduction watchdog failed')),
      1000,
    );
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** A reproduction of run `runId` for `caller`; another user's run only with `allowOtherUser`. */
  async create(caller: Caller, runId: string, allowOtherUser: boolean): Promise<ReproductionView> {
    const run = await this.getRun(caller, runId);
    if (run.owner !== caller.name && !allowOtherUser) {
      throw new DomainError(
        'other_users_run',
        `run ${run.id} belongs to ${run.owner}: reproducing it runs their script on your machine; ask for it explicitly (allowOtherUser, paddock jobs reproduce --allow-other-user)`,
        { owner: run.owner },
      );
    }
    const id = `${tokenPrefix}${randomBytes(6).toString('hex')}`;
    const { token } = await this.tokens.create(id, 'user');
    const expiresAt = this.options.now() + run.timeLimitSeconds * 1000 + expiryMarginMs;
    this.live.set(id, { id, caller: caller.name, expiresAt });
    this.options.log.info({ reproduction: id, run: run.id, owner: run.owner, user: caller.name }, 'reproduction started');
    const { job, repository, ref, commit, script, parameters, timeLimitSeconds } = run;
    return {
      id,
      run: run.id,
      token,
      expiresAt: new Date(expiresAt).toISOString(),
      // The repository as users see it: credentials in its URL stay with the runner hosts.
      task: { id: run.id, job, repository, repositoryRules: this.repositories.rulesFor(caller.name), ref, commit, script, parameters, timeLimitSeconds, token },
    };
  }

  /** Ends a reproduction: its reservations are released and its token revoked. Idempotent. */
  async end(caller: Caller, id: string): Promise<string[]> {
    const reproduction = this.live.get(id);
    if (!reproduction) throw notFound(`reproduction ${id}`);
    if (reproduction.caller !== caller.name && caller.role !== 'admin') throw forbidden(`reproduction ${id} belongs to another user`);
    return this.finish(id, `reproduction ${id} ended by ${caller.name}`);
  }

  private async finish(id: string, reason: string): Promise<string[]> {
    this.live.delete(id);
    // The token goes first, so nothing new is reserved with it while the rest is released.
    await this.tokens.revoke(id).catch(() => undefined);
    const released = await this.releaseAllOf(id, reason);
    this.options.log.info({ reproduction: id, released }, reason);
    return released;
  }

  private async expire(): Promise<void> {
    const now = this.options.now();
    for (const reproduction of [...this.live.values()]) {
      if (now > reproduction.expiresAt) await this.finish(reproduction.id, `reproduction ${reproduction.id} expired`);
    }
  }
}
