// What a test server stored, read (and, to provoke failures, changed) with SQL outside Paddock: its
// SQLite file, or its PostgreSQL database in the PostgreSQL pass (postgres.ts). Statements are
// written once for both: identifiers in double quotes ("reservationId"; PostgreSQL folds unquoted
// ones to lower case), values inline.
import path from 'node:path';
import sqlite3 from 'sqlite3';
import pg from 'pg';

export interface StoredData {
  dialect: 'sqlite' | 'postgres';
  run(sql: string): Promise<void>;
  all<T>(sql: string): Promise<T[]>;
  close(): Promise<void>;
  /**
   * Makes every write of `table` (`event` INSERT or UPDATE) for which `condition` holds fail, as a
   * database that refuses a value would: a trigger named `name`, dropped by `allow(name)`.
   */
  refuse(name: string, event: 'INSERT' | 'UPDATE', table: string, condition: string): Promise<void>;
  allow(name: string, table: string): Promise<void>;
  /** Holds the write lock of `tables` until `unlock()`: commits touching them wait, then fail. */
  lock(tables: string[]): Promise<void>;
  unlock(): Promise<void>;
}

export async function openStoredData(server: { dataDir: string; database?: string }): Promise<StoredData> {
  return server.database === undefined ? openSqlite(path.join(server.dataDir, 'paddock.sqlite')) : openPostgres(server.database);
}

function openSqlite(file: string): StoredData {
  const db = new sqlite3.Database(file);
  const run = (sql: string) => new Promise<void>((resolve, reject) => db.run(sql, (error) => (error ? reject(error) : resolve())));
  return {
    dialect: 'sqlite',
    run,
    all: <T>(sql: string) => new Promise<T[]>((resolve, reject) => db.all(sql, (error, rows) => (error ? reject(error) : resolve(rows as T[])))),
    close: () => new Promise<void>((resolve) => db.close(() => resolve())),
    refuse: (name, event, table, condition) =>
      run(`CREATE TRIGGER ${name} BEFORE ${event} ON ${table} WHEN ${condition} BEGIN SELECT RAISE(ABORT, 'refused for the test'); END`),
    allow: (name) => run(`DROP TRIGGER ${name}`),
    lock: () => run('BEGIN EXCLUSIVE'),
    unlock: () => run('ROLLBACK'),
  };
}

async function openPostgres(url: string): Promise<StoredData> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  const run = async (sql: string) => void (await client.query(sql));
  return {
    dialect: 'postgres',
    run,
    all: async <T>(sql: string) => (await client.query(sql)).rows as T[],
    close: () => client.end(),
    refuse: (name, event, table, condition) =>
      run(
        `CREATE FUNCTION ${name}() RETURNS trigger AS $$ BEGIN IF ${condition} THEN RAISE EXCEPTION 'refused for the test'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql; ` +
          `CREATE TRIGGER ${name} BEFORE ${event} ON ${table} FOR EACH ROW EXECUTE FUNCTION ${name}()`,
      ),
    allow: (name, table) => run(`DROP TRIGGER ${name} ON ${table}; DROP FUNCTION ${name}()`),
    lock: (tables) => run(`BEGIN; LOCK TABLE ${tables.join(', ')} IN EXCLUSIVE MODE`),
    unlock: () => run('ROLLBACK'),
  };
}
