// The worker half of the pull protocol, as lab-host agents and runner hosts speak it: they dial out
// to the API (so they can sit behind NAT), long-poll a claim for work, back off while the API is
// away, and post their reports with retries so that a blip loses none. The server half (waiters and
// the long-poll claim) is the API's.
//
// `url` may list several API servers (`http://a:7300,http://b:7300`, protocol/failover.ts): requests
// go to the one believed to lead; a follower's redirect is followed with the token and its leader
// becomes the base of later requests; a claim or a report that finds its server gone moves the base
// on to the next server, so the worker keeps claiming across a failover without a restart.
import { constants } from 'node:fs';
import { open } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import got, { type Got, type OptionsInit, type PlainResponse } from 'got';
import { defaultFailoverBudgetMs, failureKind, FailoverError, maxRedirects, Servers } from './failover.js';
import type { Log } from './log.js';

export interface PullWorkerOptions<Task> {
  /** The API, or several API servers of one Paddock, comma-separated. */
  url: string;
  /** How long a report keeps trying the servers of a list (default 60 s). */
  failoverBudgetMs?: number;
  /** The worker's token (role agent or runner). Sent as a bearer token, never logged. */
  token: string;
  /** The claim route, e.g. `v1/agent/claim`. */
  claimPath: string;
  /** The claim's body; `first` is true for the first claim after a start (the API then recovers what the worker held). */
  claimBody(first: boolean): unknown;
  /** The tasks of a claim's answer. */
  tasksOf(answer: unknown): Task[];
  /** Called with each task claimed; the worker does not wait for it. */
  onTask(task: Task): void;
  /** Resolves when the worker can take work again (a free slot); the claim waits for it. */
  ready?(): Promise<void>;
  log: Log;
}

/** The longest pause between two failed claims. */
const maxBackoffMs = 10_000;

export class PullWorker<Task> {
  /** got bound to the current server (its prefixUrl follows the leader) and the token. */
  readonly http: Got;
  readonly servers: Servers;
  private running = false;
  private claim?: { cancel(): void };
  private loop?: Promise<void>;

  constructor(private readonly options: PullWorkerOptions<Task>) {
    this.servers = new Servers(options.url, options.failoverBudgetMs ?? defaultFailoverBudgetMs);
    this.http = got.extend({
      prefixUrl: this.servers.current,
      headers: { authorization: `Bearer ${options.token}` },
      retry: { limit: 0 },
      timeout: { request: 90_000 },
      maxRedirects,
      // The base moves with the leader (rebase).
      mutableDefaults: true,
      hooks: { beforeRedirect: [(updated, response) => this.redirected(updated, response)] },
    });
  }

  /** The server requests go to now (user:password and all: not for messages). */
  get base(): string {
    return this.servers.current;
  }

  /**
   * A follower's redirect to the leader: got has dropped the token (another origin); it goes along
   * only to the leader the follower named in Paddock-Leader, an http(s) URL, and the leader becomes
   * the base. Any other redirect is got's, without the token.
   */
  private redirected(updated: { url?: unknown; headers: Record<string, unknown> }, response: PlainResponse): void {
    const leader = response.headers['paddock-leader'];
    if (response.statusCode !== 307 || leader === undefined) return;
    const base = this.servers.followLeader(leader);
    const location = updated.url instanceof URL ? updated.url : new URL(String(updated.url));
    if (location.origin !== new URL(base).origin) {
      throw new FailoverError(`a follower redirected to ${location.origin}, not to the leader it named (${new URL(base).origin})`, 'invalid_redirect');
    }
    updated.headers.authorization = `Bearer ${this.options.token}`;
    this.rebase();
  }

  /** A failed request to `base`: when the server is gone, away or leaderless, the next one becomes the base. */
  private moveOn(base: string, error: unknown): void {
    const status = statusOf(error);
    if (failureKind(error) !== undefined || status === 502 || status === 503 || status === 504) {
      this.servers.failed(base);
      this.rebase();
    }
  }

  private rebase(): void {
    if (this.http.defaults.options.prefixUrl !== `${this.servers.current}/`) this.http.defaults.options.prefixUrl = this.servers.current;
  }

  get isRunning(): boolean {
    return this.running;
  }

  /** Starts claiming after `before` (a clean-up, say) has run. */
  start(before: () => Promise<void> = async () => undefined): void {
    this.running = true;
    this.loop = before().then(() => this.pull());
  }

  /** Stops claiming: a claim under way is cancelled; resolves when the loop has ended. */
  async stop(): Promise<void> {
    this.running = false;
    this.claim?.cancel();
    await this.loop;
  }

  private async pull(): Promise<void> {
    let first = true;
    let failures = 0;
    while (this.running) {
      await this.options.ready?.();
      if (!this.running) break;
      const base = this.base;
      try {
        const request = this.http.post(this.options.claimPath, { json: this.options.claimBody(first), responseType: 'json' });
        this.claim = request;
        const tasks = this.options.tasksOf(await request.json());
        first = false;
        failures = 0;
        for (const task of tasks) this.options.onTask(task);
      } catch (error) {
        if (!this.running) break;
        failures += 1;
        this.moveOn(base, error);
        this.options.log.warn({ error: describeFailure(error) }, 'claim failed; retrying');
        await sleep(Math.min(maxBackoffMs, 250 * 2 ** failures));
      }
    }
  }

  /**
   * A POST retried while the API is away (5xx or no answer), up to `attempts` tries (with several
   * servers, for the failover budget at least, moving on to the next server): a report must not be
   * lost to a blip. What is posted so is the caller's to keep safe to send twice (a stage or state
   * report restates where a task is; a run's log chunk carries its offset, so the API stores it
   * once). A 4xx is
   * the API's refusal and is not retried; the statuses in `gone` resolve with 'gone' (the task ended
   * meanwhile), any other 4xx rejects. Once the worker stops, a failed try is the last unless
   * `whileStopping` (the report of how a run ended, say).
   */
  async post(path: string, options: OptionsInit & { attempts?: number; gone?: number[]; whileStopping?: boolean } = {}): Promise<'ok' | 'gone'> {
    const { attempts = 5, gone = [], whileStopping = false, ...request } = options;
    const failoverUntil = this.servers.urls.length > 1 ? Date.now() + this.servers.budgetMs : 0;
    for (let attempt = 1; ; attempt++) {
      const base = this.base;
      try {
        await this.http.post(path, request as OptionsInit);
        return 'ok';
      } catch (error) {
        const status = statusOf(error);
        if (status !== undefined && gone.includes(status)) return 'gone';
        const exhausted = attempt >= attempts && Date.now() >= failoverUntil;
        if ((status !== undefined && status < 500) || exhausted || (!this.running && !whileStopping)) throw error;
        this.moveOn(base, error);
        await sleep(Math.min(5000, 200 * 2 ** attempt));
      }
    }
  }
}

function statusOf(error: unknown): number | undefined {
  return (error as { response?: { statusCode?: number } }).response?.statusCode;
}

/** An HTTP failure in a few words for a log line: the status or the network error's code. */
export function describeFailure(error: unknown): string {
  const status = statusOf(error);
  const code = (error as { code?: string }).code;
  // A redirect refused (a follower naming a bad leader) says why after its status.
  if (status !== undefined && status < 400 && code !== undefined) return `HTTP ${status} (${code})`;
  return status ? `HTTP ${status}` : (code ?? (error as Error).message);
}

/** A worker's token cannot be read; the message says what to change. */
export class TokenError extends Error {
  override readonly name = 'TokenError';
}

/** A token is a line of text; a "token file" much bigger than that is a mistake. */
const tokenFileLimit = 4096;

/**
 * A worker's token (a runner host's, a lab-host agent's): from `tokenFile` (a regular file owned by this user, mode 0600 or
 * stricter), else from PADDOCK_TOKEN. Either way PADDOCK_TOKEN leaves this process's environment.
 */
export async function workerToken(tokenFile: string | undefined): Promise<string> {
  const fromEnvironment = process.env.PADDOCK_TOKEN;
  delete process.env.PADDOCK_TOKEN;
  if (tokenFile === undefined) {
    if (!fromEnvironment) throw new TokenError('no token: give --token-file FILE (mode 0600), or set PADDOCK_TOKEN');
    return fromEnvironment;
  }
  let handle;
  try {
    handle = await open(tokenFile, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch (error) {
    throw new TokenError(`cannot read the token file ${tokenFile}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
  }
  try {
    const info = await handle.stat();
    if (!info.isFile()) throw new TokenError(`the token file ${tokenFile} is not a regular file`);
    if (info.uid !== process.getuid?.() || (info.mode & 0o077) !== 0) {
      throw new TokenError(
        `the token file ${tokenFile} must be owned by this user (uid ${process.getuid?.()}) and readable by it alone: chown ${process.getuid?.()} ${tokenFile} && chmod 600 ${tokenFile}`,
      );
    }
    const buffer = Buffer.alloc(tokenFileLimit);
    const { bytesRead } = await handle.read(buffer, 0, tokenFileLimit, 0);
    const token = buffer.subarray(0, bytesRead).toString('utf8').trim();
    if (!token || /\s/.test(token) || bytesRead === tokenFileLimit) throw new TokenError(`the token file ${tokenFile} must hold the token alone, on one line`);
    return token;
  } finally {
    await handle.close();
  }
}
