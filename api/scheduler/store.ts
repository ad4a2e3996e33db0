// Write-through persistence with group commit. The scheduler changes its in-memory records, marks
// them dirty and appends events; `flush()` writes everything marked so far in one SQLite
// transaction. Callers await the flush before they answer, so nothing acknowledged is lost on a
// crash, and concurrent requests share one commit instead of paying one each.
import type { Database, EventRow } from '../db/index.js';
import { machineToRow, reservationToRow, type MachineEntry, type Reservation } from './records.js';

export class Store {
  private dirtyReservations = new Map<string, Reservation>();
  private dirtyMachines = new Map<string, MachineEntry>();
  private pendingEvents: EventRow[] = [];
  private nextEventId = 1;
  private running: Promise<void> | null = null;
  private next: Promise<void> | null = null;

  constructor(private readonly db: Database) {}

  async init(): Promise<void> {
    const max = (await this.db.events.max('id')) as number | null;
    this.nextEventId = (max ?? 0) + 1;
  }

  reservation(reservation: Reservation): void {
    this.dirtyReservations.set(reservation.id, reservation);
  }

  machine(machine: MachineEntry): void {
    this.dirtyMachines.set(machine.name, machine);
  }

  event(event: Omit<EventRow, 'id'>): EventRow {
    const row = { ...event, id: this.nextEventId++ };
    this.pendingEvents.push(row);
    return row;
  }

  /** Resolves once everything marked before the call is committed. */
  flush(): Promise<void> {
    if (this.running === null) {
      this.running = this.write().finally(() => {
        this.running = null;
      });
      return this.running;
    }
    // A commit is under way and may have taken its snapshot already: queue exactly one more.
    if (this.next === null) {
      this.next = this.running
        .catch(() => undefined) // that commit's callers see its error; this one tries afresh
        .then(() => {
          this.next = null;
          return this.flush();
        });
    }
    return this.next;
  }

  /**
   * One INSERT … ON CONFLICT DO UPDATE for a batch of rows, as SQL text with every value escaped
   * by Sequelize. This is the hot path of every request, so it skips building model instances (the
   * schema itself still belongs to the Sequelize models and migrations).
   */
  private upsert(table: string, key: string, columns: string[], rows: object[]): string {
    const quoted = columns.map((column) => `"${column}"`);
    const updates = quoted.filter((column) => column !== `"${key}"`).map((column) => `${column}=excluded.${column}`);
    const escape = (value: unknown) => (value === null || value === undefined ? 'NULL' : this.db.sequelize.escape(sqlValue(value) as string));
    const values = rows.map((row) => `(${columns.map((column) => escape((row as Record<string, unknown>)[column])).join(',')})`);
    return `INSERT INTO "${table}" (${quoted.join(',')}) VALUES ${values.join(',')} ON CONFLICT("${key}") DO UPDATE SET ${updates.join(',')};`;
  }

  private async write(): Promise<void> {
    await new Promise((resolve) => setImmediate(resolve)); // let concurrent callers join this commit
    const dirtyReservations = this.dirtyReservations;
    const dirtyMachines = this.dirtyMachines;
    const events = this.pendingEvents;
    this.dirtyReservations = new Map();
    this.dirtyMachines = new Map();
    this.pendingEvents = [];
    if (dirtyReservations.size + dirtyMachines.size + events.length === 0) return;
    const now = Date.now();
    const reservations = [...dirtyReservations.values()].map(reservationToRow);
    const machines = [...dirtyMachines.values()].map((machine) => machineToRow(machine, now));
    const statements = [
      ...[...chunks(reservations)].map((rows) => this.upsert('reservations', 'id', reservationColumns, rows)),
      ...[...chunks(machines)].map((rows) => this.upsert('machines', 'name', machineColumns, rows)),
      ...[...chunks(events)].map((rows) => this.upsert('events', 'id', eventColumns, rows)),
    ];
    try {
      // One trip to SQLite's thread for the whole transaction; exec rolls back nothing by itself,
      // so a failure is rolled back here.
      const connection = (await this.db.sequelize.connectionManager.getConnection({ type: 'write' })) as unknown as SqliteConnection;
      await new Promise<void>((resolve, reject) =>
        connection.exec(`BEGIN IMMEDIATE;${statements.join('')}COMMIT;`, (error) => (error ? reject(error) : resolve())),
      ).catch(async (error: unknown) => {
        await new Promise<void>((resolve) => connection.exec('ROLLBACK;', () => resolve()));
        throw error;
      });
    } catch (error) {
      // Keep what failed to commit so the next flush tries again; newer marks win.
      for (const [id, reservation] of dirtyReservations) if (!this.dirtyReservations.has(id)) this.dirtyReservations.set(id, reservation);
      for (const [name, machine] of dirtyMachines) if (!this.dirtyMachines.has(name)) this.dirtyMachines.set(name, machine);
      this.pendingEvents = [...events, ...this.pendingEvents];
      throw error;
    }
  }
}

const reservationColumns = [
  'id', 'owner', 'state', 'outcome', 'reason', 'priority', 'leaseSeconds', 'members', 'allocations', 'publicKey',
  'privateKey', 'idempotencyKey', 'createdAt', 'updatedAt', 'grantedAt', 'expiresAt', 'hardCapAt', 'queueDeadline',
];
const machineColumns = ['name', 'kind', 'state', 'reservationId', 'reason', 'failures', 'labels', 'capacities', 'updatedAt'];

const eventColumns = ['id', 'reservationId', 'at', 'type', 'from', 'to', 'machine', 'reason'];

interface SqliteConnection {
  exec(sql: string, callback: (error: Error | null) => void): void;
}

/** Dates in the text form Sequelize itself writes to SQLite, so rows read the same either way. */
function sqlValue(value: unknown): unknown {
  return value instanceof Date ? value.toISOString().replace('T', ' ').replace('Z', ' +00:00') : value;
}

/** SQLite caps the variables in one statement; 500 rows of up to 18 columns stay well under it. */
function* chunks<T>(rows: T[], size = 500): Generator<T[]> {
  for (let start = 0; start < rows.length; start += size) yield rows.slice(start, start + size);
}
