// The one PostgreSQL connection that matters on a server that leads: the store commits through it
// (api/scheduler/store.ts) and it holds the leadership lock (api/leader.ts), so the server that
// writes is the server whose session holds the lock. Opened once and never again once it has led:
// if it is lost, another server may lead already, and `lost` settles for the server to stop rather
// than write on a new session. While it has not led (a follower waiting), a lost one is opened anew.
import type { Client } from 'pg';

/** The part of pg's Client the store and leadership use. */
export interface PgClient {
  query(query: string | { name?: string; text: string; values?: unknown[] }): Promise<{ rows: Record<string, unknown>[] }>;
}

/** How soon PostgreSQL notices a leader whose host went silent (no FIN, no RST): TCP keepalives, seconds. */
const keepalive = { idle: 3, interval: 1, count: 3 };

export class PostgresSession {
  private client?: Promise<Client>;
  private lose!: (error: Error) => void;
  /** Settles when the session is lost after `hold()` (never before). */
  readonly lost = new Promise<Error>((resolve) => (this.lose = resolve));
  private held = false;
  private closing = false;

  constructor(private readonly url: string) {}

  /** The connection, opened if it is not (or, before `hold()`, if it was lost). */
  connection(): Promise<PgClient> {
    this.client ??= (async () => {
      const { default: pg } = await import('pg');
      const client = new pg.Client({
        connectionString: this.url,
        application_name: 'paddock',
        keepAlive: true,
        keepAliveInitialDelayMillis: keepalive.idle * 1000,
      });
      const gone = (error: Error) => {
        if (this.closing) return;
        if (this.held) this.lose(error);
        else this.client = undefined;
      };
      client.on('error', gone);
      client.on('end', () => gone(new Error('the connection to PostgreSQL ended')));
      await client.connect();
      // The server side of keepalive too: PostgreSQL ends a silent leader's session, and with it the lock.
      // A commit waits for another session's lock as long as SQLite's busy_timeout, then fails (store_failed).
      await client.query(
        `SET tcp_keepalives_idle = ${keepalive.idle}; SET tcp_keepalives_interval = ${keepalive.interval}; SET tcp_keepalives_count = ${keepalive.count}; SET lock_timeout = '5s'`,
      );
      return client;
    })();
    this.client.catch(() => (this.client = undefined));
    return this.client;
  }

  /** From now on this session is never replaced: its loss ends the server's leadership (`lost`). */
  hold(): void {
    this.held = true;
  }

  async close(): Promise<void> {
    this.closing = true;
    const client = await this.client?.catch(() => undefined);
    await client?.end().catch(() => undefined);
  }
}

/** PostgreSQL's text cannot hold NUL: one (in a machine's stderr, say) is stored as U+FFFD, where SQLite keeps it. */
export const postgresText = (value: string): string => (value.includes('\0') ? value.replaceAll('\0', '\uFFFD') : value);
