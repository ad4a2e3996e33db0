// An online backup of the database (`paddock backup FILE`): a copy of DATA/paddock.sqlite made
// while the server runs and writes, consistent as of one moment.
//
// The copy is SQLite's `VACUUM INTO`, run on a connection of its own to the file: it reads the whole
// database in one read transaction, and in WAL mode a reader sees the last commit before it began
// and never blocks the server's writer (nor is blocked by it), so the copy is one committed state
// however many writes go on meanwhile, and the server does not pause. (SQLite's backup API, the
// other way, copies in steps as the sqlite3 package drives it, and starts over whenever another
// process writes between two steps: under steady writes it may never end.) The copy is compact, has no -wal beside it, and is checked
// (`PRAGMA integrity_check`) before it takes its name: a FILE that exists is a whole, checked backup.
//
// It opens the file directly rather than asking the API: it needs no token and works while the API
// is stuck, the database (reservations' private keys, token hashes) never crosses the network, and
// the backup lands where the admin can read it. It must run on the API's host, as the user the
// server runs as (or root).
import { closeSync, existsSync, fsyncSync, openSync, renameSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';
import sqlite3 from 'sqlite3';

export class BackupError extends Error {
  override readonly name = 'BackupError';
  readonly code = 'backup_failed';
}

export interface BackupResult {
  /** The backup, an absolute path. */
  file: string;
  bytes: number;
  /** The migrations the copy has applied, in order: its schema's version. */
  migrations: string[];
  seconds: number;
}

/** The database file of a data directory. */
export const databaseFile = (dataDir: string) => path.join(dataDir, 'paddock.sqlite');

/** Copies the database of `dataDir` to `target` (refused if it exists, unless `force`). Throws BackupError. */
export async function backupDatabase(dataDir: string, target: string, options: { force?: boolean } = {}): Promise<BackupResult> {
  const started = process.hrtime.bigint();
  const source = databaseFile(path.resolve(dataDir));
  const file = path.resolve(target);
  if (!existsSync(source)) throw new BackupError(`no database at ${source}: give the server's data directory (--data DIR, or --config FILE for its dataDir)`);
  if (existsSync(file) && !options.force) throw new BackupError(`${file} exists: give another name, or --force to replace it`);
  if (existsSync(file) && statSync(file).isDirectory()) throw new BackupError(`${file} is a folder: give the backup's file name`);
  // Beside the target, so the last step is a rename in one file system; empty and owner-only from
  // the start (VACUUM INTO fills an empty file): the copy holds private keys.
  const partial = path.join(path.dirname(file), `.${path.basename(file)}.partial-${process.pid}`);
  try {
    closeSync(openSync(partial, 'wx', 0o600));
  } catch (error) {
    throw new BackupError(`cannot write in ${path.dirname(file)}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
  }
  try {
    // Read-write (so SQLite can use the shared -shm index of a live WAL file), never created: a wrong path fails above.
    const db = await open(source, sqlite3.OPEN_READWRITE);
    try {
      await run(db, 'PRAGMA busy_timeout = 10000');
      await run(db, 'VACUUM INTO ?', [partial]);
    } finally {
      await close(db);
    }
    const copy = await open(partial, sqlite3.OPEN_READONLY);
    let migrations: string[];
    try {
      const checked = await all<{ integrity_check: string }>(copy, 'PRAGMA integrity_check');
      if (checked.length !== 1 || checked[0].integrity_check !== 'ok')
        throw new BackupError(`the copy failed its integrity check: ${checked.map((row) => row.integrity_check).join('; ')}`);
      const tables = await all(copy, `SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'SequelizeMeta'`);
      migrations = tables.length === 0 ? [] : (await all<{ name: string }>(copy, 'SELECT name FROM "SequelizeMeta" ORDER BY name')).map((row) => row.name);
    } finally {
      await close(copy);
    }
    syncFile(partial);
    renameSync(partial, file);
    syncFile(path.dirname(file));
    return { file, bytes: statSync(file).size, migrations, seconds: Number(process.hrtime.bigint() - started) / 1e9 };
  } catch (error) {
    rmSync(partial, { force: true });
    if (error instanceof BackupError) throw error;
    throw new BackupError(`backup of ${source} failed: ${(error as Error).message}`);
  }
}

function syncFile(file: string): void {
  const fd = openSync(file, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

function open(file: string, mode: number): Promise<sqlite3.Database> {
  return new Promise((resolve, reject) => {
    const db = new sqlite3.Database(file, mode, (error) => (error ? reject(error) : resolve(db)));
  });
}

function run(db: sqlite3.Database, sql: string, parameters: unknown[] = []): Promise<void> {
  return new Promise((resolve, reject) => db.run(sql, parameters, (error) => (error ? reject(error) : resolve())));
}

function all<Row = Record<string, unknown>>(db: sqlite3.Database, sql: string): Promise<Row[]> {
  return new Promise((resolve, reject) => db.all(sql, (error, rows) => (error ? reject(error) : resolve(rows as Row[]))));
}

function close(db: sqlite3.Database): Promise<void> {
  return new Promise((resolve) => db.close(() => resolve()));
}
