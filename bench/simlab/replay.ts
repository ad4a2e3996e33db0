// The stored history played back: every grant and release of every machine, in the order the
// server stored them (event ids), with the rule a scheduler must never break: a machine is in one
// live reservation at most. A grant is an allocation event to `pending` naming the machine (first
// grant, or a retry moved to it); the machine is free again at an allocation event to `released`
// from any state but `waiting` (a member waiting for a machine holds none).
import { QueryTypes, Sequelize } from 'sequelize';

export interface HistoryEvent {
  id: number;
  reservationId: string;
  at: Date | string;
  type: string;
  from: string | null;
  to: string;
  machine: string | null;
  reason: string | null;
}

export interface Conflict {
  machine: string;
  eventId: number;
  /** The reservation the event is of. */
  reservationId: string;
  /** The reservation that held the machine then (none: a release of a machine nobody held). */
  holder?: string;
}

export interface Replay {
  events: number;
  grants: number;
  releases: number;
  /** Grants of a machine while a reservation held it. */
  doubleAllocations: Conflict[];
  /** Releases of a machine by a reservation that did not hold it. */
  strayReleases: Conflict[];
}

export function replayHistory(events: Iterable<HistoryEvent>): Replay {
  const holders = new Map<string, string>();
  const replay: Replay = { events: 0, grants: 0, releases: 0, doubleAllocations: [], strayReleases: [] };
  for (const event of events) {
    replay.events += 1;
    if (event.type !== 'allocation' || event.machine === null) continue;
    const holder = holders.get(event.machine);
    const conflict = { machine: event.machine, eventId: event.id, reservationId: event.reservationId, ...(holder === undefined ? {} : { holder }) };
    if (event.to === 'pending') {
      replay.grants += 1;
      if (holder !== undefined) replay.doubleAllocations.push(conflict);
      holders.set(event.machine, event.reservationId);
    } else if (event.to === 'released' && event.from !== 'waiting') {
      replay.releases += 1;
      if (holder !== event.reservationId) replay.strayReleases.push(conflict);
      else holders.delete(event.machine);
    }
  }
  return replay;
}

/**
 * Milliseconds each of the given reservations waited from its request (state queued) to its grant
 * (state allocated), by the stored timestamps; those never granted are left out.
 */
export function queueTimes(events: Iterable<HistoryEvent>, reservations: ReadonlySet<string>): number[] {
  const queuedAt = new Map<string, number>();
  const waited: number[] = [];
  for (const event of events) {
    if (event.type !== 'state' || !reservations.has(event.reservationId)) continue;
    if (event.to === 'queued' && !queuedAt.has(event.reservationId)) queuedAt.set(event.reservationId, new Date(event.at).getTime());
    else if (event.to === 'allocated') {
      const since = queuedAt.get(event.reservationId);
      if (since !== undefined) waited.push(new Date(event.at).getTime() - since);
      queuedAt.delete(event.reservationId);
    }
  }
  return waited;
}

/** Every stored event in id order, from the SQLite file or the database at `url`. */
export async function readHistory(database: { url: string } | { sqliteFile: string }): Promise<HistoryEvent[]> {
  const sequelize =
    'url' in database ? new Sequelize(database.url, { logging: false }) : new Sequelize({ dialect: 'sqlite', storage: database.sqliteFile, logging: false });
  try {
    const rows = await sequelize.query<HistoryEvent>(
      'SELECT "id", "reservationId", "at", "type", "from", "to", "machine", "reason" FROM "events" ORDER BY "id"',
      {
        type: QueryTypes.SELECT,
      },
    );
    return rows;
  } finally {
    await sequelize.close();
  }
}
