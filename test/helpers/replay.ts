// The stored history replayed in commit order: a machine is taken by an allocation event 'pending'
// and given back by 'released'; it must never be taken twice without a release in between.

export interface AllocationEvent {
  reservationId: string;
  type: string;
  to: string;
  machine: string | null;
}

export interface Replay {
  /** Each time a machine was taken while another reservation held it. */
  doubles: string[];
  /** Each release by a reservation that did not hold the machine. */
  strayReleases: string[];
  /** Machines still held at the end of the history, and by whom. */
  held: Map<string, string>;
  grants: number;
  /** Every machine ever handed out. */
  handedOut: Set<string>;
}

export function replayAllocations(events: AllocationEvent[]): Replay {
  const held = new Map<string, string>();
  const replay: Replay = { doubles: [], strayReleases: [], held, grants: 0, handedOut: new Set() };
  for (const event of events) {
    if (event.type !== 'allocation' || !event.machine) continue;
    if (event.to === 'pending') {
      const holder = held.get(event.machine);
      if (holder !== undefined) replay.doubles.push(`${event.machine} granted to ${event.reservationId} while ${holder} holds it`);
      held.set(event.machine, event.reservationId);
      replay.grants += 1;
      replay.handedOut.add(event.machine);
    } else if (event.to === 'released') {
      if (held.get(event.machine) !== event.reservationId) replay.strayReleases.push(`${event.machine} released by ${event.reservationId}`);
      held.delete(event.machine);
    }
  }
  return replay;
}
