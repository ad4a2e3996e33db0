// Write-through persistence with group commit. The scheduler changes its in-memory records, marks
// them dirty and appends events; `flush()` writes everything marked so far in one SQLite
// transaction. Callers await the flush before they answer, so nothing acknowledged is lost on a
// crash, and concurrent requests share one commit instead of paying one each.
//
// Contracts:
// - Every value reaches SQLite as a bound parameter of a prepared statement, never as SQL text, so
//   no string (a NUL, a quote, a machine's stderr) can change or cut a statement.
// - A failed commit is never retried and never left half applied in memory: the store keeps the
//   image of every record as last committed, and on a failure it discards every mark made since
//   and calls `onRollback`, which puts the scheduler's memory back to those images. Every caller
//   whose change was undone (this batch's and the next's) gets the error. So a value SQLite refuses
//   fails one batch, once, and the next batch starts from what the database holds.
// - `failing` holds the last commit's error until a commit succeeds (/healthz answers 503 then).
// - Provisionings (a machine's history, health.ts) are appended like events; each commit also drops
//   a machine's rows beyond the newest `provisioningsKept`.
// - Lab hosts' rows (when each agent was last heard) are the one exception: memory is ahead of them
//   by design, so a failed commit drops their marks and undoes nothing; the next heartbeat marks
//   them again.
import { setImmediate as nextTurn } from 'node:timers/promises';
import type { MachineState } from '../../protocol/api.js';
import { postgresText, type PostgresSession } from '../db/session.js';
import type { Database, EventRow, LabHostRow, MachineRow, ProvisioningRow, ReservationRow } from '../db/index.js';
import { DomainError } from '../domain-error.js';
import { liveStates } from './lifecycle.js';
import { machineToRow, reservationToRow, type MachineEntry, type Reservation } from './records.js';

/** A machine as last committed, with the part of its record the database does not hold. */
export interface MachineImage {
  row: MachineRow;
  pendingState?: MachineState;
}

/**
 * How many provisionings of a machine are kept: the health window is at most this long (config.ts),
 * and `machines show` can look back further than the window at little cost (100 small rows a machine).
 */
export const provisioningsKept = 100;

interface Batch {
  promise: Promise<void>;
  resolve(): void;
  reject(error: Error): void;
}

export class Store {
  private dirtyReservations = new Map<string, Reservation>();
  private dirtyMachines = new Map<string, MachineEntry>();
  private dirtyLabHosts = new Map<string, LabHostRow>();
  private pendingEvents: EventRow[] = [];
  private nextEventId = 1;
  private pendingProvisionings: ProvisioningRow[] = [];
  private nextProvisioningId = 1;
  /** The highest provisioning id committed: those above it are undone by a failed commit. */
  committedProvisioningId = 0;
  /** The batch collecting callers now; its marks are taken when its commit starts. */
  private collecting: Batch | null = null;
  private writing = false;
  private readonly writer: Writer;
  /** Live reservations as last committed (ended ones are dropped once their end is committed). */
  readonly committedReservations = new Map<string, ReservationRow>();
  readonly committedMachines = new Map<string, MachineImage>();
  /** The error of the last commit, until one succeeds. */
  failing: Error | null = null;
  /** Called after a failed commit: put memory back to `committedReservations` and `committedMachines`. */
  onRollback: () => void = () => undefined;
  /** Told how long each commit that wrote something took, and whether it failed (metrics). */
  onCommit: (seconds: number, failed: boolean) => void = () => undefined;

  constructor(private readonly db: Database) {
    this.writer = db.session ? new PostgresWriter(db.session) : new SqliteWriter(db);
  }

  async init(): Promise<void> {
    const max = (await this.db.events.max('id')) as number | null;
    this.nextEventId = (max ?? 0) + 1;
    this.committedProvisioningId = ((await this.db.provisionings.max('id')) as number | null) ?? 0;
    this.nextProvisioningId = this.committedProvisioningId + 1;
  }

  /** Records loaded from the database: their committed images, without writing them again. */
  adopt(reservations: Iterable<Reservation>, machines: Iterable<MachineEntry>): void {
    for (const reservation of reservations) this.committedReservations.set(reservation.id, reservationToRow(reservation));
    const now = Date.now();
    for (const machine of machines) this.committedMachines.set(machine.name, { row: machineToRow(machine, now), pendingState: machine.pendingState });
  }

  /** Lets go of the prepared statements, so the database can close. */
  close(): Promise<void> {
    return this.writer.close();
  }

  reservation(reservation: Reservation): void {
    this.dirtyReservations.set(reservation.id, reservation);
  }

  machine(machine: MachineEntry): void {
    this.dirtyMachines.set(machine.name, machine);
  }

  labHost(row: LabHostRow): void {
    this.dirtyLabHosts.set(row.name, row);
  }

  event(event: Omit<EventRow, 'id'>): EventRow {
    const row = { ...event, id: this.nextEventId++ };
    this.pendingEvents.push(row);
    return row;
  }

  provisioning(provisioning: Omit<ProvisioningRow, 'id'>): ProvisioningRow {
    const row = { ...provisioning, id: this.nextProvisioningId++ };
    this.pendingProvisionings.push(row);
    return row;
  }

  /**
   * Resolves once everything marked before the call is committed; rejects (503 store_failed) when
   * that commit failed, after memory went back to the last committed state. While `failing`, a
   * flush with nothing marked still runs an empty transaction (one is tried every few seconds),
   * so `failing` clears once the database takes writes again.
   */
  flush(): Promise<void> {
    if (this.collecting === null) {
      let resolve!: () => void;
      let reject!: (error: Error) => void;
      const promise = new Promise<void>((yes, no) => ((resolve = yes), (reject = no)));
      this.collecting = { promise, resolve, reject };
    }
    const batch = this.collecting;
    if (!this.writing) void this.drain();
    return batch.promise;
  }

  private async drain(): Promise<void> {
    this.writing = true;
    try {
      while (this.collecting !== null) {
        await nextTurn(); // let concurrent callers join this commit
        const batch = this.collecting;
        this.collecting = null;
        await this.commitBatch(batch);
      }
    } finally {
      this.writing = false;
    }
  }

  private async commitBatch(batch: Batch): Promise<void> {
    const dirtyReservations = [...this.dirtyReservations.values()];
    const dirtyMachines = [...this.dirtyMachines.values()];
    const labHosts = [...this.dirtyLabHosts.values()];
    const events = this.pendingEvents;
    const provisionings = this.pendingProvisionings;
    this.dirtyReservations = new Map();
    this.dirtyMachines = new Map();
    this.dirtyLabHosts = new Map();
    this.pendingEvents = [];
    this.pendingProvisionings = [];
    if (dirtyReservations.length + dirtyMachines.length + labHosts.length + events.length + provisionings.length === 0 && this.failing === null) {
      batch.resolve();
      return;
    }
    const started = performance.now();
    try {
      const now = Date.now();
      const reservations = dirtyReservations.map(reservationToRow);
      const machines = dirtyMachines.map((machine) => machineToRow(machine, now));
      await this.writer.write({ reservations, machines, labHosts, events, provisionings });
      this.onCommit((performance.now() - started) / 1000, false);
      this.failing = null;
      if (provisionings.length > 0) this.committedProvisioningId = provisionings[provisionings.length - 1].id;
      for (const row of reservations) {
        if (liveStates.includes(row.state as Reservation['state'])) this.committedReservations.set(row.id, row);
        else this.committedReservations.delete(row.id);
      }
      dirtyMachines.forEach((machine, index) => this.committedMachines.set(machine.name, { row: machines[index], pendingState: machine.pendingState }));
      batch.resolve();
    } catch (cause) {
      this.onCommit((performance.now() - started) / 1000, true);
      this.failing = cause as Error;
      // Everything marked since the last commit rests on memory that is about to be undone: the
      // marks of the next batch go too, and its callers get the same error.
      this.dirtyReservations = new Map();
      this.dirtyMachines = new Map();
      this.dirtyLabHosts = new Map();
      this.pendingEvents = [];
      this.pendingProvisionings = [];
      this.onRollback();
      const error = storeFailed(cause);
      batch.reject(error);
      this.collecting?.reject(error);
      this.collecting = null;
      // Without writes, nothing would notice that the database is back: try an empty commit.
      setTimeout(() => void this.flush().catch(() => undefined), probeIntervalMs).unref();
    }
  }
}

function storeFailed(cause: unknown): DomainError {
  const code = (cause as { code?: unknown }).code;
  // SQLite's own text names tables and constraints, never values; PostgreSQL's may quote a value, so
  // only its SQLSTATE code is shown; other errors (a date out of range) are summed up by their name alone.
  const sqlite = typeof code === 'string' && code.startsWith('SQLITE_');
  const postgres = typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code);
  const what = sqlite ? `${code}: ${(cause as Error).message}` : postgres ? `PostgreSQL error ${code}` : (cause as Error).name;
  return new DomainError('store_failed', `the change could not be stored (${what}); nothing was changed, try again`, {
    ...(sqlite ? { sqlite: code } : postgres ? { postgres: code } : {}),
  });
}

const reservationColumns = [
  'id',
  'owner',
  'state',
  'outcome',
  'reason',
  'priority',
  'leaseSeconds',
  'members',
  'allocations',
  'publicKey',
  'privateKey',
  'idempotencyKey',
  'createdAt',
  'updatedAt',
  'grantedAt',
  'expiresAt',
  'hardCapAt',
  'queueDeadline',
  'requeues',
] as const;
const machineColumns = [
  'name',
  'kind',
  'state',
  'reservationId',
  'reason',
  'failures',
  'labels',
  'capacities',
  'updatedAt',
  'onlineState',
  'offlineSince',
  'unreachableSince',
  'unreachableReason',
  'qualification',
  'pendingState',
] as const;
const eventColumns = ['id', 'reservationId', 'at', 'type', 'from', 'to', 'machine', 'reason'] as const;
const labHostColumns = ['name', 'lastHeard', 'version'] as const;
const provisioningColumns = [
  'id',
  'machine',
  'reservationId',
  'allocationId',
  'owner',
  'image',
  'outcome',
  'code',
  'fault',
  'stage',
  'counted',
  'qualification',
  'stages',
  'startedAt',
  'endedAt',
] as const;
const trims = new Map<number, string>();
/**
 * Drops the provisionings of `machines` machines older than each one's newest `provisioningsKept`,
 * in one statement (`?` becomes `$n` on PostgreSQL), cached by size.
 */
function trimProvisionings(machines: number): string {
  let sql = trims.get(machines);
  if (sql === undefined) {
    const ranked = `SELECT "id", ROW_NUMBER() OVER (PARTITION BY "machine" ORDER BY "id" DESC) AS "newer" FROM "provisionings" WHERE "machine" IN (${Array(machines).fill('?').join(',')})`;
    sql = `DELETE FROM "provisionings" WHERE "id" IN (SELECT "id" FROM (${ranked}) AS "ranked" WHERE "newer" > ${provisioningsKept})`;
    trims.set(machines, sql);
  }
  return sql;
}

/** The rows of one commit, by table. */
interface Rows {
  reservations: ReservationRow[];
  machines: MachineRow[];
  labHosts: LabHostRow[];
  events: EventRow[];
  provisionings: ProvisioningRow[];
}

/** Writes one commit's rows in one transaction on a connection of its own. */
interface Writer {
  write(rows: Rows): Promise<void>;
  close(): Promise<void>;
}

/** One statement of a commit: its SQL text (`?` placeholders) and its parameters. */
interface Step {
  sql: string;
  params: unknown[];
}

/** The statements that upsert `rows` and trim the provisionings, as few as `statementSizes` allows. */
function planCommit(rows: Rows, value: (value: unknown) => unknown): Step[] {
  return [
    ...plan('reservations', 'id', reservationColumns, rows.reservations, value),
    ...plan('machines', 'name', machineColumns, rows.machines, value),
    ...plan('labHosts', 'name', labHostColumns, rows.labHosts, value),
    ...plan('events', 'id', eventColumns, rows.events, value),
    ...plan('provisionings', 'id', provisioningColumns, rows.provisionings, value),
    ...chunks([...new Set(rows.provisionings.map((row) => row.machine))]).map((machines) => ({ sql: trimProvisionings(machines.length), params: machines })),
  ];
}

/** `items` cut into runs of the statement sizes, largest first. */
function chunks<T>(items: T[]): T[][] {
  const runs: T[][] = [];
  let start = 0;
  for (const size of statementSizes) for (; items.length - start >= size; start += size) runs.push(items.slice(start, start + size));
  return runs;
}

function* plan(table: string, key: string, columns: readonly string[], rows: object[], value: (value: unknown) => unknown): Generator<Step> {
  for (const run of chunks(rows)) {
    const params: unknown[] = [];
    for (const row of run) for (const column of columns) params.push(value((row as Record<string, unknown>)[column]));
    yield { sql: upsert(table, key, columns, run.length), params };
  }
}

const upserts = new Map<string, string>();
/** `INSERT … ON CONFLICT DO UPDATE` of `rows` rows (the same text in SQLite and PostgreSQL), cached. */
function upsert(table: string, key: string, columns: readonly string[], rows: number): string {
  const id = `${table}/${rows}`;
  let sql = upserts.get(id);
  if (sql === undefined) {
    const quoted = columns.map((column) => `"${column}"`);
    const updates = quoted.filter((column) => column !== `"${key}"`).map((column) => `${column}=excluded.${column}`);
    const row = `(${columns.map(() => '?').join(',')})`;
    sql = `INSERT INTO "${table}" (${quoted.join(',')}) VALUES ${Array(rows).fill(row).join(',')} ON CONFLICT("${key}") DO UPDATE SET ${updates.join(',')}`;
    upserts.set(id, sql);
  }
  return sql;
}

const probeIntervalMs = 2000;

/** Rows per statement: a batch of n rows runs as few statements of these sizes (largest first). */
const statementSizes = [64, 16, 4, 1];

interface SqliteStatement {
  run(params: unknown[], callback: (error: Error | null) => void): void;
  finalize(callback: () => void): void;
}
interface SqliteConnection {
  run(sql: string, callback: (error: Error | null) => void): void;
  prepare(sql: string, callback: (error: Error | null) => void): SqliteStatement;
}

/**
 * The store's own SQLite connection (opened through Sequelize's connection manager under a key of
 * its own), so no other query can land inside its transactions, with prepared statements cached by text.
 */
class SqliteWriter implements Writer {
  private connection?: Promise<SqliteConnection>;
  private readonly statements = new Map<string, Promise<SqliteStatement>>();
  constructor(private readonly db: Database) {}

  async write(rows: Rows): Promise<void> {
    const connection = await this.open();
    // Rows become parameters before the transaction starts: a value that cannot be stored fails here.
    const work = planCommit(rows, sqliteValue).map(({ sql, params }) => ({ statement: this.statement(connection, sql), params }));
    await call((done) => connection.run('BEGIN IMMEDIATE', done));
    try {
      for (const { statement, params } of work) {
        const prepared = await statement;
        await call((done) => prepared.run(params, done));
      }
      await call((done) => connection.run('COMMIT', done));
    } catch (error) {
      await call((done) => connection.run('ROLLBACK', done)).catch(() => undefined);
      throw error;
    }
  }

  async close(): Promise<void> {
    const statements = [...this.statements.values()];
    this.statements.clear();
    for (const statement of statements) {
      const prepared = await statement.catch(() => undefined);
      if (prepared) await new Promise<void>((resolve) => prepared.finalize(() => resolve()));
    }
  }

  private open(): Promise<SqliteConnection> {
    this.connection ??= (async () => {
      const manager = this.db.sequelize.connectionManager as unknown as { getConnection(options: object): Promise<SqliteConnection> };
      const connection = await manager.getConnection({ uuid: 'paddock-store', type: 'write' });
      await call((done) => connection.run('PRAGMA busy_timeout = 5000', done));
      await call((done) => connection.run('PRAGMA synchronous = NORMAL', done));
      return connection;
    })();
    this.connection.catch(() => (this.connection = undefined));
    return this.connection;
  }

  /** A prepared statement, cached by its text. */
  private statement(connection: SqliteConnection, sql: string): Promise<SqliteStatement> {
    let statement = this.statements.get(sql);
    if (!statement) {
      statement = new Promise((resolve, reject) => {
        const prepared = connection.prepare(sql, (error) => (error ? reject(error) : resolve(prepared)));
      });
      this.statements.set(sql, statement);
      statement.catch(() => this.statements.delete(sql));
    }
    return statement;
  }
}

/**
 * The store's PostgreSQL commits, on the session that holds leadership (api/db/session.ts), with
 * named prepared statements. A commit on a lost session fails, and so does every later one: a
 * server that lost leadership never writes on a new session.
 */
class PostgresWriter implements Writer {
  /** Each statement's name and PostgreSQL text, made once: a commit only looks them up. */
  private readonly prepared = new Map<string, { name: string; text: string }>();

  constructor(private readonly session: PostgresSession) {}

  async write(rows: Rows): Promise<void> {
    const client = await this.session.connection();
    const work = planCommit(rows, postgresValue);
    await client.query('BEGIN');
    try {
      for (const { sql, params } of work) await client.query({ ...this.statement(sql), values: params });
      await client.query('COMMIT');
    } catch (error) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw error;
    }
  }

  async close(): Promise<void> {}

  private statement(sql: string): { name: string; text: string } {
    let statement = this.prepared.get(sql);
    if (statement === undefined) {
      statement = { name: `paddock_store_${this.prepared.size + 1}`, text: numbered(sql) };
      this.prepared.set(sql, statement);
    }
    return statement;
  }
}

/** `?` placeholders as PostgreSQL's `$1, $2, …` (the statements here hold no `?` of their own). */
function numbered(sql: string): string {
  let n = 0;
  return sql.replace(/\?/g, () => `$${++n}`);
}

function call(start: (done: (error: Error | null) => void) => void): Promise<void> {
  return new Promise((resolve, reject) => start((error) => (error ? reject(error) : resolve())));
}

/**
 * Dates in the text form Sequelize itself writes to SQLite, so rows read the same either way; an
 * invalid date or a number SQLite cannot hold fails the batch here, before its transaction.
 */
function sqliteValue(value: unknown): unknown {
  if (value === undefined || value === null) return null;
  if (value instanceof Date) return value.toISOString().replace('T', ' ').replace('Z', ' +00:00');
  if (typeof value === 'number' && !Number.isFinite(value)) throw new RangeError(`not a finite number: ${value}`);
  return value;
}

/**
 * Dates as ISO text with their zone (timestamptz columns); PostgreSQL's text cannot hold NUL, so a
 * NUL (in a machine's stderr, say) is stored as U+FFFD, where SQLite keeps it.
 */
function postgresValue(value: unknown): unknown {
  if (value === undefined || value === null) return null;
  if (value instanceof Date) {
    if (Number.isNaN(value.getTime())) throw new RangeError('not a valid date');
    return value.toISOString();
  }
  if (typeof value === 'number' && !Number.isFinite(value)) throw new RangeError(`not a finite number: ${value}`);
  if (typeof value === 'string') return postgresText(value);
  return value;
}
