// The stored history of a simulated lab: read from its database, played back (test/helpers/replay.ts:
// a machine is in one live reservation at most), and the time each request waited in the queue.
import { QueryTypes, Sequelize } from 'sequelize';
export { replayAllocations as replayHistory, type Replay } from '../../test/helpers/replay.js';

/** An event as stored (the events table). */
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
