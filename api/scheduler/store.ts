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

  /** Events recorded but not yet committed, for readers that must not miss them. */
  unflushedEvents(reservationId: string): EventRow[] {
    return this.pendingEvents.filter((event) => event.reservationId === reservationId);
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
    const { sequelize } = this.db;
    try {
      await sequelize.query('BEGIN IMMEDIATE');
      try {
        for (const rows of chunks(reservations)) {
          await this.db.reservations.bulkCreate(rows, { updateOnDuplicate: reservationColumns as never });
        }
        for (const rows of chunks(machines)) {
          await this.db.machines.bulkCreate(rows, { updateOnDuplicate: machineColumns as never });
        }
        for (const rows of chunks(events)) await this.db.events.bulkCreate(rows);
        await sequelize.query('COMMIT');
      } catch (error) {
        await sequelize.query('ROLLBACK').catch(() => undefined);
        throw error;
      }
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
  'owner', 'state', 'outcome', 'reason', 'priority', 'leaseSeconds', 'members', 'allocations', 'publicKey',
  'privateKey', 'idempotencyKey', 'createdAt', 'updatedAt', 'grantedAt', 'expiresAt', 'hardCapAt', 'queueDeadline',
];
const machineColumns = ['kind', 'state', 'reservationId', 'reason', 'failures', 'labels', 'capacities', 'updatedAt'];

/** SQLite caps the variables in one statement; 500 rows of up to 18 columns stay well under it. */
function* chunks<T>(rows: T[], size = 500): Generator<T[]> {
  for (let start = 0; start < rows.length; start += size) yield rows.slice(start, start + size);
}
