// Several API servers on one database, one of them the leader: what a client, a lab-host agent or a
// runner host does with a list of their URLs (`PADDOCK_URL=http://a:7300,http://b:7300`).
//
// The servers' side of it:
// - a follower answers everything but /healthz and /healthz/leader with 307, `Location: <leader><path>`
//   and `Paddock-Leader: <leader base URL>`, body code `not_leader`;
// - while no leader is known (an election, up to ~10 s): 503, body code `no_leader`, `Retry-After: 1`;
// - /healthz answers `{ status: 'ok', role: 'leader' | 'follower' }`; a killed server answers nothing.
//
// The callers' side, here: the 307 is followed by the caller itself (got drops the Authorization
// header on a redirect to another origin), with the token, a few times in a row at most, and the
// leader is remembered for later requests; a server that does not answer, a 503 `no_leader` or a
// proxy's 502/504 sends the request to the next URL of the list, round robin, after a short growing
// pause, until a time budget runs out. What may be sent again is the caller's to say (`replayable`):
// a request that never reached a server always may. No got here: the client library loads it late.
import type { IncomingHttpHeaders } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';

/** How long a request keeps trying the servers of a list before it fails, by default. */
export const defaultFailoverBudgetMs = 60_000;
/** Redirects to the leader followed in a row; more means the followers point at each other. */
export const maxRedirects = 4;
/** With a single URL, a server that does not answer is tried this many times (a blip), as before lists. */
const singleServerAttempts = 3;

/** A list of servers that cannot be used, or a server's answer that cannot be followed; `code` is stable. */
export class FailoverError extends Error {
  override readonly name = 'FailoverError';
  constructor(
    message: string,
    /** `configuration` (a bad URL list), `invalid_redirect` (a leader that is no http(s) URL, a redirect loop), `connection_failed`. */
    readonly code: 'configuration' | 'invalid_redirect' | 'connection_failed',
    /** For `connection_failed`: the servers tried (as shown: no user:password), and the last reason. */
    readonly details?: { tried: string[]; reason: string },
  ) {
    super(message);
  }
}

/** A URL as it may appear in a message or a log line: no user:password, no trailing slash. */
export function shownUrl(url: string | URL): string {
  const parsed = new URL(url);
  parsed.username = '';
  parsed.password = '';
  return parsed.href.replace(/\/+$/, '');
}

/**
 * The servers of a comma-separated list (`http://a:7300,http://b:7300`), each checked: http or https,
 * a URL at all. A single URL is a list of one. Returned without trailing slashes, user:password kept
 * (a proxy in front may want it), never echoed in a message.
 */
export function parseServerUrls(list: string, what = 'PADDOCK_URL'): string[] {
  const urls = list
    .split(',')
    .map((each) => each.trim())
    .filter(Boolean);
  if (urls.length === 0)
    throw new FailoverError(`${what} names no server (it is like http://127.0.0.1:7300, or several: http://a:7300,http://b:7300)`, 'configuration');
  return urls.map((text) => {
    let url: URL;
    try {
      url = new URL(text);
    } catch {
      const shown = text.includes('@') ? '' : ` ${JSON.stringify(text)}`; // it may hold a password
      throw new FailoverError(`not a URL:${shown} (${what} is like http://127.0.0.1:7300, or several: http://a:7300,http://b:7300)`, 'configuration');
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      throw new FailoverError(`the Paddock URL must be http or https, not ${url.protocol}`, 'configuration');
    }
    return url.href.replace(/\/+$/, '');
  });
}

/** A network failure where the request surely never reached a server: it may always be sent again. */
const neverSentCodes = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'EADDRNOTAVAIL']);
/** A network failure that may have cut a request the server had already taken. */
const brokenCodes = new Set(['ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'ECONNABORTED', 'ERR_STREAM_PREMATURE_CLOSE', 'ERR_HTTP2_STREAM_ERROR']);

/** How a failed try ended, for the decision to try another server. */
export function failureKind(error: unknown): 'never-sent' | 'broken' | undefined {
  const { code, event } = error as { code?: string; event?: string };
  // got's timeouts name the phase: one before the connection was made never sent anything.
  if (code === 'ETIMEDOUT' && (event === 'lookup' || event === 'connect' || event === 'secureConnect')) return 'never-sent';
  if (code !== undefined && neverSentCodes.has(code)) return 'never-sent';
  if (code !== undefined && brokenCodes.has(code)) return 'broken';
  return undefined;
}

/** The pause before the n-th (1-based) try of another server in a row: 200 ms growing to 2 s. */
export function failoverPause(failures: number): number {
  return Math.min(2000, 200 * 2 ** Math.max(0, failures - 1));
}

/** What a try gives back: enough of an HTTP answer to decide (the body read when it is small). */
export interface Answer {
  statusCode: number;
  headers: IncomingHttpHeaders;
  /** The body as text, when the caller read it; a 503 without it is taken for `no_leader`. */
  body?: string;
}

export interface FailoverOptions {
  /** Whether a request the server may have taken (a connection broken after sending, a proxy's 502/504) may be sent again. */
  replayable: boolean;
  /** Stops trying; the last failure is thrown. */
  signal?: AbortSignal;
}

/**
 * The API servers of one client, agent or runner host, and which one is believed to be the leader.
 * One instance per process part is enough: every request starts at the current server.
 */
export class Servers {
  readonly urls: readonly string[];
  /** The leader a follower named when it is not one of `urls` (another address of the same server). */
  private leader?: string;
  private index = 0;

  constructor(
    list: string | readonly string[],
    readonly budgetMs = defaultFailoverBudgetMs,
  ) {
    this.urls = typeof list === 'string' ? parseServerUrls(list) : list.flatMap((each) => parseServerUrls(each));
  }

  /** Where the next request goes: the leader as last known, else the current URL of the list. */
  get current(): string {
    return this.leader ?? this.urls[this.index]!;
  }

  /** The list as it may appear in a message: no user:password. */
  get shown(): string {
    return this.urls.map(shownUrl).join(', ');
  }

  /**
   * Remembers the leader a follower named in `Paddock-Leader`. Refused (`invalid_redirect`) unless it
   * is an http(s) URL. One of our own URLs is taken as written in the list (user:password and all).
   */
  followLeader(header: string | string[] | undefined): string {
    const value = Array.isArray(header) ? header[0] : header;
    let url: URL | undefined;
    try {
      url = value ? new URL(value) : undefined;
    } catch {
      url = undefined;
    }
    if (!url || (url.protocol !== 'http:' && url.protocol !== 'https:')) {
      const shown = value === undefined ? 'no Paddock-Leader header' : value.includes('@') ? 'a leader that is not a URL' : JSON.stringify(value.slice(0, 200));
      throw new FailoverError(`a follower of ${shownUrl(this.current)} named a leader that is not an http(s) URL: ${shown}`, 'invalid_redirect');
    }
    const own = this.urls.findIndex((each) => new URL(each).origin === url.origin);
    if (own >= 0) {
      this.index = own;
      this.leader = undefined;
    } else this.leader = url.href.replace(/\/+$/, '');
    return this.current;
  }

  /** The current server failed: the next one of the list is tried (a leader learnt elsewhere is forgotten). */
  failed(base: string): void {
    if (base !== this.current) return; // another request moved on already
    if (this.leader !== undefined) this.leader = undefined;
    else this.index = (this.index + 1) % this.urls.length;
  }

  /**
   * Sends a request with `send(base)` to the current server, following a follower's redirect and
   * moving on to the next server while they do not answer, until `budgetMs`. `send` resolves with
   * the answer whatever its status (an error status is the caller's to judge) and rejects on a
   * network failure. Throws FailoverError `connection_failed` naming the servers tried, or the last
   * failure when it may not be sent again.
   */
  async send<A extends Answer>(send: (base: string) => Promise<A>, options: FailoverOptions): Promise<A> {
    const deadline = Date.now() + this.budgetMs;
    const tried = new Set<string>();
    let redirects = 0;
    let failures = 0;
    let attempts = 0;
    for (;;) {
      const base = this.current;
      tried.add(shownUrl(base));
      attempts += 1;
      let reason: string;
      try {
        const answer = await send(base);
        if (answer.statusCode === 307 && answer.headers['paddock-leader'] !== undefined) {
          if (++redirects > maxRedirects) {
            throw new FailoverError(
              `the Paddock servers redirected ${maxRedirects} times in a row (${[...tried].join(' → ')}): a redirect loop`,
              'invalid_redirect',
            );
          }
          this.followLeader(answer.headers['paddock-leader']);
          continue; // the follower did nothing: straight on to the leader
        }
        const gateway = answer.statusCode === 502 || answer.statusCode === 504;
        if (!(answer.statusCode === 503 && noLeader(answer)) && !(gateway && options.replayable)) return answer;
        reason = answer.statusCode === 503 ? 'no leader elected (HTTP 503)' : `HTTP ${answer.statusCode}`;
      } catch (error) {
        const kind = failureKind(error);
        if (kind === undefined || (kind === 'broken' && !options.replayable)) throw error;
        // One server: a read is tried again a few times on a blip, as a client of one server always did.
        if (this.urls.length === 1 && this.leader === undefined && (!options.replayable || attempts >= singleServerAttempts)) throw error;
        reason = (error as { code?: string }).code ?? 'request failed';
      }
      redirects = 0;
      this.failed(base);
      const pause = failoverPause(++failures);
      if (options.signal?.aborted || Date.now() + pause > deadline) {
        throw new FailoverError(`cannot reach Paddock at ${[...tried].join(', ')}: ${reason}`, 'connection_failed', { tried: [...tried], reason });
      }
      await sleep(pause, undefined, options.signal ? { signal: options.signal } : {}).catch(() => undefined);
    }
  }

  /**
   * The leader, asked of each server in turn (`GET /healthz`, role leader), for a request that
   * cannot be sent twice (a stream upload): it goes straight there. `probe(base)` answers the
   * role, or rejects when the server does not answer. Falls back to the current server when no
   * server says it leads (a server from before leaders answers no role).
   */
  async findLeader(probe: (base: string) => Promise<string | undefined>): Promise<string> {
    if (this.urls.length === 1) return this.current;
    const deadline = Date.now() + this.budgetMs;
    for (let round = 1; ; round++) {
      const candidates = [this.current, ...this.urls.filter((each) => each !== this.current)];
      let answered = false;
      let reason = 'request failed';
      for (const base of candidates) {
        try {
          const role = await probe(base);
          answered = true;
          if (role === 'leader' || role === undefined) {
            if (role === 'leader') this.adopt(base);
            return base;
          }
        } catch (error) {
          reason = (error as { code?: string }).code ?? reason;
        }
      }
      const pause = failoverPause(round);
      if (Date.now() + pause > deadline) {
        throw new FailoverError(`cannot reach the Paddock leader at ${this.shown}: ${answered ? 'no server leads' : reason}`, 'connection_failed', {
          tried: this.urls.map(shownUrl),
          reason,
        });
      }
      await sleep(pause);
    }
  }

  private adopt(base: string): void {
    const own = this.urls.indexOf(base);
    if (own >= 0) {
      this.index = own;
      this.leader = undefined;
    }
  }
}

/** A 503 that says no leader is elected yet (or a 503 whose body was not read). */
function noLeader(answer: Answer): boolean {
  if (answer.body === undefined) return true;
  try {
    return (JSON.parse(answer.body) as { code?: unknown }).code === 'no_leader';
  } catch {
    return false;
  }
}
