// Several API servers on one PostgreSQL database: one leads, the others follow.
//
// Leadership is a PostgreSQL session-level advisory lock taken on the session the store commits
// through (api/db/session.ts): it ends when that session dies (the leader killed, its host gone
// silent past TCP keepalive), and a server that lost it can no longer commit. Followers try to take
// it every second; the one that does loads the state from the database (as a restart after a crash
// does: agents' and runner hosts' work is taken up where the database left it), serves, and then
// writes its URL into the `leader` row.
//
// A follower serves no API of its own: it answers every request with a 307 redirect to the leader
// (its URL in `Location` and `Paddock-Leader`), or, while no leader serves yet, with 503 no_leader.
// Redirect rather than proxy or local reads: the scheduler's state (queues, grants, consoles,
// tunnels) lives in the leader's memory and the database is behind it by a group commit, so a
// follower's read could be stale and its proxying would carry every image upload and console
// stream twice; the client library, the CLI, agents and runner hosts follow the redirect themselves
// (with their token, which a generic HTTP client drops on a redirect to another host).
// `/healthz` says which role a server has; `/healthz/leader` answers 200 only on the leader, for a
// load balancer that checks status codes only.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { version } from '../protocol/version.js';
import type { PostgresSession } from './db/session.js';
import type { Log } from '../protocol/log.js';

/** The advisory lock's number (migrations take another: api/db/index.ts). */
const leaderLock = 7300_0002;

/** A request target as it may be put after the leader's URL: a path of visible ASCII. */
const plainTarget = /^\/[\x21-\x7e]*$/;

/** How often a follower tries to lead, and reads who leads. */
export const followerPollMs = 1000;

export class Follower {
  /** The leader's URL while another server leads and serves; null while nobody does (an election). */
  leader: string | null = null;

  constructor(
    private readonly session: PostgresSession,
    private readonly log: Log,
  ) {}

  /**
   * Resolves once this server holds leadership (at once when nobody else holds it). The session is
   * then held: its loss ends leadership for good (`session.lost`).
   */
  async lead(): Promise<void> {
    let announced: string | null | undefined;
    for (;;) {
      try {
        const client = await this.session.connection();
        const { rows } = await client.query({ text: 'SELECT pg_try_advisory_lock($1) AS led', values: [leaderLock] });
        if (rows[0]?.led === true) {
          this.session.hold();
          this.leader = null;
          // Until this server serves, followers answer no_leader rather than send clients to the last one.
          await client.query('DELETE FROM "leader"');
          return;
        }
        const current = await client.query('SELECT "url" FROM "leader" WHERE "id" = 1');
        this.leader = (current.rows[0]?.url as string | undefined) ?? null;
      } catch (error) {
        this.leader = null;
        this.log.warn({ error: (error as Error).message }, 'cannot reach PostgreSQL to find the leader; trying again');
      }
      if (this.leader !== announced) {
        this.log.info({ leader: this.leader }, this.leader === null ? 'no leader serves; waiting to lead' : 'following the leader');
        announced = this.leader;
      }
      await sleep(followerPollMs);
    }
  }

  /** The HTTP answer of a follower. */
  handle = (req: IncomingMessage, res: ServerResponse): void => {
    // Only a plain target goes into a Location header: anything else (bytes a header cannot carry)
    // is refused here rather than thrown by setHeader.
    if (!plainTarget.test(req.url ?? '')) return json(res, 400, { code: 'bad_request', message: 'the request target is not a plain path' });
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/healthz') return json(res, 200, { ok: true, version, database: 'postgres', role: 'follower', leader: this.leader });
    if (path === '/healthz/leader') return json(res, 503, { code: 'not_leader', message: 'this server follows; it does not lead' });
    if (this.leader === null) {
      res.setHeader('retry-after', '1');
      return json(res, 503, { code: 'no_leader', message: 'no API server leads right now (one takes over within seconds); try again' });
    }
    const location = this.leader + (req.url ?? '/');
    res.setHeader('location', location);
    res.setHeader('paddock-leader', this.leader);
    json(res, 307, { code: 'not_leader', message: `this server follows; the leader is ${this.leader}`, details: { leader: this.leader } });
  };

  /** A WebSocket upgrade asked of a follower: the same redirect, as a plain HTTP answer. */
  upgrade = (req: IncomingMessage, socket: Duplex): void => {
    const head = !plainTarget.test(req.url ?? '')
      ? 'HTTP/1.1 400 Bad Request\r\n'
      : this.leader === null
        ? 'HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n'
        : `HTTP/1.1 307 Temporary Redirect\r\nLocation: ${this.leader}${req.url ?? '/'}\r\nPaddock-Leader: ${this.leader}\r\n`;
    socket.end(`${head}Connection: close\r\nContent-Length: 0\r\n\r\n`);
  };
}

/** Writes the leader's URL for followers to send clients to: done once the leader serves. */
export async function announceLeader(session: PostgresSession, url: string): Promise<void> {
  const client = await session.connection();
  await client.query({
    text: 'INSERT INTO "leader" ("id", "url", "since") VALUES (1, $1, now()) ON CONFLICT ("id") DO UPDATE SET "url" = excluded."url", "since" = excluded."since"',
    values: [url],
  });
}

function json(res: ServerResponse, status: number, body: unknown): void {
  res.statusCode = status;
  res.setHeader('content-type', 'application/json; charset=utf-8');
  res.end(JSON.stringify(body));
}
