// `paddock migrate --from sqlite FILE --to postgres://…`: a lab's data moved from its SQLite file
// into an empty PostgreSQL database, to run several API servers on it.
//
// The file is read in one read transaction (a consistent snapshot, even while a server writes it:
// what it writes after the snapshot is not moved, so stop the server first for a switch). The file
// must have this build's whole schema (a file of an older Paddock: start this one on it once, which
// migrates it; of a newer one: refused as `paddock serve` refuses it). The database is brought to the
// same schema by the same migrations, must hold no data yet, and receives every row in one
// transaction: a move that fails leaves it empty. Rows go in as they are (text, numbers, dates as
// SQLite holds them, which PostgreSQL reads back as the same instants), but for NUL characters,
// which PostgreSQL's text cannot hold (stored as U+FFFD, as the store does).
import { existsSync } from 'node:fs';
import path from 'node:path';
import sqlite3 from 'sqlite3';
import { databaseName, migrationNames, openPostgres } from './index.js';
import { postgresText } from './session.js';

export class MoveError extends Error {
  override readonly name = 'MoveError';
  constructor(
    message: string,
    readonly code: 'move_source' | 'move_schema' | 'move_target_not_empty' | 'move_failed',
  ) {
    super(message);
  }
}

/** The tables that hold a lab's data, in an order that needs no constraint deferred. */
const tables = ['tokens', 'machines', 'reservations', 'events', 'images', 'jobs', 'runs', 'labHosts', 'provisionings'] as const;

export interface MoveResult {
  /** Rows moved, by table. */
  rows: Record<string, number>;
  /** The target as it may be shown (no password). */
  to: string;
  seconds: number;
}

export async function moveSqliteToPostgres(file: string, url: string): Promise<MoveResult> {
  const started = process.hrtime.bigint();
  const source = path.resolve(file);
  if (!existsSync(source)) throw new MoveError(`no SQLite database at ${source}: give the lab's DATA/paddock.sqlite`, 'move_source');
  const rows = await readAll(source);
  const target = await openPostgres(url).catch((error: unknown) => {
    // pg's messages name hosts and databases, never the password; the URL itself is never repeated.
    throw new MoveError(`cannot open ${databaseName(url)}: ${(error as Error).message}`, 'move_failed');
  });
  try {
    const [counts] = await target.sequelize.query(tables.map((table) => `SELECT '${table}' AS "table", count(*) AS n FROM "${table}"`).join(' UNION ALL '));
    const filled = (counts as { table: string; n: number | string }[]).filter((row) => Number(row.n) > 0).map((row) => row.table);
    if (filled.length > 0) {
      throw new MoveError(
        `${databaseName(url)} holds data already (${filled.join(', ')}): a move goes into an empty database only, so nothing is mixed or overwritten`,
        'move_target_not_empty',
      );
    }
    const transaction = await target.sequelize.transaction();
    try {
      for (const table of tables) {
        const list = rows[table];
        for (let start = 0; start < list.length; start += 200) {
          const batch = list.slice(start, start + 200);
          const columns = Object.keys(batch[0]);
          const values: unknown[] = [];
          const tuples = batch.map((row) => `(${columns.map((column) => (values.push(postgresValue(row[column])), `$${values.length}`)).join(',')})`);
          await target.sequelize.query(`INSERT INTO "${table}" (${columns.map((column) => `"${column}"`).join(',')}) VALUES ${tuples.join(',')}`, {
            bind: values,
            transaction,
          });
        }
      }
      await transaction.commit();
    } catch (error) {
      await transaction.rollback().catch(() => undefined);
      throw new MoveError(`the move failed and was undone (${databaseName(url)} is empty again): ${(error as Error).message}`, 'move_failed');
    }
  } finally {
    await target.close();
  }
  return {
    rows: Object.fromEntries(tables.map((table) => [table, rows[table].length])),
    to: databaseName(url),
    seconds: Number(process.hrtime.bigint() - started) / 1e9,
  };
}

/** Every row of every table, from one snapshot of the file, which must have this build's schema. */
async function readAll(file: string): Promise<Record<(typeof tables)[number], Record<string, unknown>[]>> {
  const db = await new Promise<sqlite3.Database>((resolve, reject) => {
    const opened = new sqlite3.Database(file, sqlite3.OPEN_READWRITE, (error) => (error ? reject(error) : resolve(opened)));
  }).catch((error: unknown) => {
    throw new MoveError(`cannot open ${file}: ${(error as Error).message}`, 'move_source');
  });
  const all = (sql: string) =>
    new Promise<Record<string, unknown>[]>((resolve, reject) =>
      db.all(sql, (error, rows) => (error ? reject(error) : resolve(rows as Record<string, unknown>[]))),
    );
  const run = (sql: string) => new Promise<void>((resolve, reject) => db.run(sql, (error) => (error ? reject(error) : resolve())));
  try {
    await run('PRAGMA busy_timeout = 10000');
    await run('BEGIN');
    const applied = await all('SELECT name FROM "SequelizeMeta" ORDER BY name').catch(() => {
      throw new MoveError(`${file} is not a Paddock database (it has no record of migrations)`, 'move_source');
    });
    const names = applied.map((row) => row.name as string);
    const unknown = names.filter((name) => !migrationNames.includes(name));
    if (unknown.length > 0) throw new MoveError(`${file} was written by a newer Paddock (${unknown.join(', ')}): move it with that Paddock`, 'move_schema');
    const missing = migrationNames.filter((name) => !names.includes(name));
    if (missing.length > 0) {
      throw new MoveError(
        `${file} was written by an older Paddock (it lacks ${missing.join(', ')}): start this Paddock on it once (it migrates the file), stop it, then move it`,
        'move_schema',
      );
    }
    const rows = {} as Record<(typeof tables)[number], Record<string, unknown>[]>;
    for (const table of tables) rows[table] = await all(`SELECT * FROM "${table}"`);
    await run('COMMIT');
    return rows;
  } finally {
    await new Promise<void>((resolve) => db.close(() => resolve()));
  }
}

function postgresValue(value: unknown): unknown {
  return typeof value === 'string' ? postgresText(value) : (value ?? null);
}
