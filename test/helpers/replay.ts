// The stored history played back in commit order (event ids), with the rule a scheduler must never
// break: a machine is in one live reservation at most. A grant is an allocation event to `pending`
// naming the machine (a first grant, or a retry moved to it); the machine is free again at an
// allocation event to `released` from any state but `waiting` (a member waiting for a machine holds
// none, though its event names the machine it failed on, which its old allocation still holds).
// The tests' replays (test/api/concurrency, test/servers/failover) and the simlab benchmark's.

export interface AllocationEvent {
  id: number;
  reservationId: string;
  type: string;
  from: string | null;
  to: string;
  machine: string | null;
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
  /** Grants of a machine while another reservation held it. */
  doubleAllocations: Conflict[];
  /** Releases of a machine by a reservation that did not hold it. */
  strayReleases: Conflict[];
  /** Machines still held at the end of the history, and by whom. */
  held: Map<string, string>;
  /** Every machine ever handed out. */
  handedOut: Set<string>;
}

export function replayAllocations(events: Iterable<AllocationEvent>): Replay {
  const held = new Map<string, string>();
  const replay: Replay = { events: 0, grants: 0, releases: 0, doubleAllocations: [], strayReleases: [], held, handedOut: new Set() };
  for (const event of events) {
    replay.events += 1;
    if (event.type !== 'allocation' || event.machine === null) continue;
    const holder = held.get(event.machine);
    const conflict = { machine: event.machine, eventId: event.id, reservationId: event.reservationId, ...(holder === undefined ? {} : { holder }) };
    if (event.to === 'pending') {
      replay.grants += 1;
      if (holder !== undefined) replay.doubleAllocations.push(conflict);
      held.set(event.machine, event.reservationId);
      replay.handedOut.add(event.machine);
    } else if (event.to === 'released' && event.from !== 'waiting') {
      replay.releases += 1;
      if (holder !== event.reservationId) replay.strayReleases.push(conflict);
      else held.delete(event.machine);
    }
  }
  return replay;
}
