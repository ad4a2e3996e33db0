// Bearer tokens. Only a token's sha256 is stored; tokens are checked against an in-memory map
// loaded at start. On first start an admin token is made and written to <dataDir>/admin-token with
// mode 0600: its path is printed, the token itself never logged.
import { createHash, randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import type Koa from 'koa';
import type { Role, TokenView } from '../protocol/api.js';
import { plainRow, plainRows, type Database } from './db/index.js';
import { DomainError, notFound } from './domain-error.js';
import type { Caller } from '../protocol/api.js';

const hash = (token: string) => createHash('sha256').update(token).digest('hex');

export class Tokens {
  private byHash = new Map<string, Caller>();

  constructor(private readonly db: Database) {}

  /** Loads the tokens; makes the first admin token if there is none and returns the file it went to. */
  async start(dataDir: string): Promise<{ adminTokenFile?: string }> {
    const rows = plainRows(await this.db.tokens.findAll({ raw: true }));
    for (const row of rows) this.byHash.set(row.hash, { name: row.name, role: row.role as Role });
    if (rows.some((row) => row.role === 'admin')) return {};
    const { token } = await this.create('admin', 'admin');
    const adminTokenFile = path.join(dataDir, 'admin-token');
    writeFileSync(adminTokenFile, `${token}\n`, { mode: 0o600 });
    return { adminTokenFile };
  }

  async create(name: string, role: Role): Promise<TokenView & { token: string }> {
    if (await this.db.tokens.findByPk(name)) throw new DomainError('conflict', `a token named ${name} exists already`);
    const token = `pdk_${randomBytes(24).toString('base64url')}`;
    const createdAt = new Date();
    await this.db.tokens.create({ name, role, hash: hash(token), createdAt });
    this.byHash.set(hash(token), { name, role });
    return { name, role, createdAt: createdAt.toISOString(), token };
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

  async list(): Promise<TokenView[]> {
    const rows = plainRows(await this.db.tokens.findAll({ order: [['name', 'ASC']], raw: true }));
    return rows.map((row) => ({ name: row.name, role: row.role as Role, createdAt: new Date(row.createdAt).toISOString() }));
  }

  async revoke(name: string): Promise<void> {
    const row = plainRow(await this.db.tokens.findByPk(name, { raw: true }));
    if (!row) throw notFound(`token ${name}`);
    await this.db.tokens.destroy({ where: { name } });
    this.byHash.delete(row.hash);
  }

  /** The caller a presented token belongs to, or undefined. */
  check(token: string): Caller | undefined {
    // Looked up by digest: the time taken says nothing about how much of a token was right.
    return this.byHash.get(hash(token));
  }
}

/** Resolves the caller from the Authorization header; every route but /healthz goes through it. */
export function authenticate(tokens: Tokens): Koa.Middleware {
  return async (ctx, next) => {
    ctx.state.caller = callerOf(tokens, ctx.get('authorization'));
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
  return caller;
}
