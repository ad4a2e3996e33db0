// Bearer tokens. Only a token's sha256 is stored; tokens are checked against an in-memory map
// loaded at start. On first start an admin token is made and written to <dataDir>/admin-token with
// mode 0600: its path is printed, the token itself never logged. A token may expire (`expiresAt`):
// from then on it is refused with 401 `token_expired`. Revoking or rotating a token ends its use at
// once: the map forgets it, and every request and stream it has open is cut (`endWhenRevoked`).
import { createHash, randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import type Koa from 'koa';
import type { Role, TokenView } from '../protocol/api.js';
import { plainRow, plainRows, type Database, type TokenRow } from './db/index.js';
import { DomainError, notFound } from './domain-error.js';
import type { Caller } from '../protocol/api.js';

const hash = (token: string) => createHash('sha256').update(token).digest('hex');

interface Entry extends Caller {
  /** Milliseconds since the epoch; undefined: never. */
  expiresAt?: number;
}

/** A new token's lifetime: seconds from now, or none. */
export interface TokenLifetime {
  expiresInSeconds?: number;
}

export class Tokens {
  private byHash = new Map<string, Entry>();
  /** What to cut when a token goes, by the token's name: its open requests and streams. */
  private holders = new Map<string, Set<() => void>>();

  constructor(
    private readonly db: Database,
    private readonly now: () => number = Date.now,
  ) {}

  /** Loads the tokens; makes the first admin token if there is none and returns the file it went to. */
  async start(dataDir: string): Promise<{ adminTokenFile?: string }> {
    const rows = plainRows(await this.db.tokens.findAll({ raw: true }));
    for (const row of rows) this.byHash.set(row.hash, entryOf(row));
    if (rows.some((row) => row.role === 'admin')) return {};
    const { token } = await this.create('admin', 'admin');
    const adminTokenFile = path.join(dataDir, 'admin-token');
    writeFileSync(adminTokenFile, `${token}\n`, { mode: 0o600 });
    return { adminTokenFile };
  }

  async create(name: string, role: Role, lifetime: TokenLifetime = {}): Promise<TokenView & { token: string }> {
    if (await this.db.tokens.findByPk(name)) throw new DomainError('conflict', `a token named ${name} exists already`);
    const token = `pdk_${randomBytes(24).toString('base64url')}`;
    const createdAt = new Date(this.now());
    const expiresAt = lifetime.expiresInSeconds === undefined ? null : new Date(createdAt.getTime() + lifetime.expiresInSeconds * 1000);
    await this.db.tokens.create({ name, role, hash: hash(token), createdAt, expiresAt });
    this.byHash.set(hash(token), { name, role, ...(expiresAt ? { expiresAt: expiresAt.getTime() } : {}) });
    return { ...this.view({ name, role, hash: '', createdAt, expiresAt }), token };
  }

  /**
   * A fresh token for an in-process caller (the embedded agent, a run), replacing the one from the
   * last start. It never takes over a token of another role: a user named like the agent keeps hers.
   */
  async rotate(name: string, role: Role): Promise<string> {
    const existing = plainRow(await this.db.tokens.findByPk(name, { raw: true }));
    if (existing && existing.role !== role) {
      throw new DomainError('conflict', `a ${existing.role} token named ${name} exists: cannot make a ${role} token of that name`);
    }
    if (existing) await this.revoke(name);
    return (await this.create(name, role)).token;
  }

  /**
   * `paddock token rotate`: a new secret under the same name and role; the old one ends at once.
   * The new token lives `lifetime.expiresInSeconds` if given, else as long as the old one was given
   * (a 30-day token rotated is good for another 30 days), else for ever.
   */
  async reissue(name: string, lifetime: TokenLifetime = {}): Promise<TokenView & { token: string }> {
    const row = plainRow(await this.db.tokens.findByPk(name, { raw: true }));
    if (!row) throw notFound(`token ${name}`);
    const old = entryOf(row);
    const given =
      lifetime.expiresInSeconds ??
      (old.expiresAt === undefined ? undefined : Math.max(1, Math.round((old.expiresAt - new Date(row.createdAt).getTime()) / 1000)));
    const token = `pdk_${randomBytes(24).toString('base64url')}`;
    const createdAt = new Date(this.now());
    const expiresAt = given === undefined ? null : new Date(createdAt.getTime() + given * 1000);
    await this.db.tokens.update({ hash: hash(token), createdAt, expiresAt }, { where: { name } });
    this.byHash.delete(row.hash);
    this.byHash.set(hash(token), { name, role: old.role, ...(expiresAt ? { expiresAt: expiresAt.getTime() } : {}) });
    this.cut(name);
    return { ...this.view({ name, role: old.role, hash: '', createdAt, expiresAt }), token };
  }

  async list(): Promise<TokenView[]> {
    const rows = plainRows(await this.db.tokens.findAll({ order: [['name', 'ASC']], raw: true }));
    return rows.map((row) => this.view(row));
  }

  /** One token's record (never the token itself). */
  async get(name: string): Promise<TokenView> {
    const row = plainRow(await this.db.tokens.findByPk(name, { raw: true }));
    if (!row) throw notFound(`token ${name}`);
    return this.view(row);
  }

  async revoke(name: string): Promise<void> {
    const row = plainRow(await this.db.tokens.findByPk(name, { raw: true }));
    if (!row) throw notFound(`token ${name}`);
    await this.db.tokens.destroy({ where: { name } });
    this.byHash.delete(row.hash);
    this.cut(name);
  }

  /** The caller a presented token belongs to, `expired` for one past its expiry, or undefined. */
  check(token: string): Caller | { expired: Caller & { expiresAt: string } } | undefined {
    // Looked up by digest: the time taken says nothing about how much of a token was right.
    const entry = this.byHash.get(hash(token));
    if (!entry) return undefined;
    if (entry.expiresAt !== undefined && entry.expiresAt <= this.now()) {
      return { expired: { name: entry.name, role: entry.role, expiresAt: new Date(entry.expiresAt).toISOString() } };
    }
    return { name: entry.name, role: entry.role };
  }

  /**
   * Calls `end` when the token of `name` is revoked or rotated, until the returned function is
   * called: how an open request, a log being followed or a WebSocket is cut at once.
   */
  holdWhileValid(name: string, end: () => void): () => void {
    let set = this.holders.get(name);
    if (!set) this.holders.set(name, (set = new Set()));
    set.add(end);
    return () => {
      set.delete(end);
      if (set.size === 0 && this.holders.get(name) === set) this.holders.delete(name);
    };
  }

  private cut(name: string): void {
    const set = this.holders.get(name);
    this.holders.delete(name);
    for (const end of set ?? []) end();
  }

  private view(row: TokenRow): TokenView {
    const expiresAt = row.expiresAt ? new Date(row.expiresAt) : undefined;
    return {
      name: row.name,
      role: row.role as Role,
      createdAt: new Date(row.createdAt).toISOString(),
      ...(expiresAt ? { expiresAt: expiresAt.toISOString(), expired: expiresAt.getTime() <= this.now() } : {}),
    };
  }
}

const entryOf = (row: TokenRow): Entry => ({
  name: row.name,
  role: row.role as Role,
  ...(row.expiresAt ? { expiresAt: new Date(row.expiresAt).getTime() } : {}),
});

/**
 * Resolves the caller from the Authorization header; every route but /healthz goes through it.
 * The request is cut if its token is revoked or rotated before it is answered (a long-poll, a
 * followed log, a download), unless the request is the one that revokes it
 * (`ctx.state.endsOwnToken`).
 */
export function authenticate(tokens: Tokens): Koa.Middleware {
  return async (ctx, next) => {
    const caller = callerOf(tokens, ctx.get('authorization'));
    ctx.state.caller = caller;
    const release = tokens.holdWhileValid(caller.name, () => {
      if (ctx.state.endsOwnToken !== true) ctx.req.socket.destroy();
    });
    ctx.res.once('close', release);
    await next();
  };
}

/** The caller an Authorization header names (also for requests that are not Koa's: WebSocket upgrades). */
export function callerOf(tokens: Tokens, header: string | undefined): Caller {
  if (!header) throw new DomainError('unauthorized', 'missing token: send Authorization: Bearer <token>');
  const match = /^Bearer\s+(\S+)$/i.exec(header);
  if (!match) throw new DomainError('unauthorized', 'malformed Authorization header: expected Bearer <token>');
  const caller = tokens.check(match[1]);
  if (!caller) throw new DomainError('unauthorized', 'unknown or revoked token');
  if ('expired' in caller) {
    const { name, expiresAt } = caller.expired;
    throw new DomainError('token_expired', `token ${name} expired at ${expiresAt}: an admin can rotate it (paddock token rotate ${name})`, { name, expiresAt });
  }
  return caller;
}

/** Cuts `socket` (a WebSocket's, from its upgrade on) when the caller's token is revoked or rotated. */
export function endWhenRevoked(tokens: Tokens, caller: Caller, socket: { destroy(): void; once(event: 'close', listener: () => void): unknown }): void {
  const release = tokens.holdWhileValid(caller.name, () => socket.destroy());
  socket.once('close', release);
}
