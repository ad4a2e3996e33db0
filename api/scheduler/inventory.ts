// The machines the scheduler hands out, and the index that keeps allocation cheap: machines with
// the same labels and capacities form a shape, and each shape keeps the sorted names of its free
// machines. Matching a spec is then done per shape, not per machine, so allocation cost depends on
// the number of shapes (a handful in a real lab), not on the number of machines.
import type { MachineState, UnavailableMachine } from '../../protocol/api.js';
import { shapeKey, type Shape } from './allocate.js';
import { explainSpec, type Explanation } from './match.js';
import { unavailableMachine, type MachineEntry } from './records.js';
import type { Spec } from './spec.js';

export class Inventory {
  readonly machines = new Map<string, MachineEntry>();
  /** Free machines per shape; every shape of a non-retired machine is here, possibly empty. */
  private readonly free = new Map<string, Shape>();
  /** Every non-retired machine per shape, free or not: what could ever satisfy a request. */
  private readonly all = new Map<string, Shape>();
  /** Reserved machines per `pool` label, kept in step so a pool's room costs nothing to ask. */
  private readonly reservedPerPool = new Map<string, number>();
  /** Shapes that gained a free machine, or whose pool gained room, since drainGrown was last called. */
  private readonly grown = new Set<string>();
  /** Whether a machine moved to a shape the inventory did not have, since drainNewShapes was last called. */
  private newShapes = false;
  /**
   * Every machine (retired ones too) by lab host, by name: what an agent's claims, heartbeats and
   * lists are about, so each costs its own lab host's machines, not the whole lab's (100 agents
   * each going over 10,000 machines). A machine's lab host never changes while the server runs.
   */
  private readonly byLabHost = new Map<string, Map<string, MachineEntry>>();

  add(entry: Omit<MachineEntry, 'shapeKey'>): MachineEntry {
    const machine: MachineEntry = { ...entry, shapeKey: shapeKey(entry.labels, entry.capacities) };
    if (isFree(machine)) this.grown.add(machine.shapeKey);
    const replaced = this.machines.get(machine.name);
    if (replaced) this.byLabHost.get(replaced.labHost)?.delete(replaced.name);
    this.machines.set(machine.name, machine);
    let ofLabHost = this.byLabHost.get(machine.labHost);
    if (!ofLabHost) this.byLabHost.set(machine.labHost, (ofLabHost = new Map()));
    ofLabHost.set(machine.name, machine);
    if (machine.state !== 'retired') {
      insertSorted(this.shape(this.all, machine).machines, machine.name);
      if (isFree(machine)) insertSorted(this.shape(this.free, machine).machines, machine.name);
    }
    if (holds(machine.state, machine.onlineState)) this.countReserved(machine, 1);
    return machine;
  }

  /** How many machines labelled `pool=NAME` are reserved. */
  reservedIn(pool: string): number {
    return this.reservedPerPool.get(pool) ?? 0;
  }

  private countReserved(machine: MachineEntry, step: number): void {
    const pool = machine.labels.pool;
    if (pool !== undefined) this.reservedPerPool.set(pool, this.reservedIn(pool) + step);
  }

  /**
   * The shape keys that gained a free machine or pool room since the last call: only requests
   * that match one of them can fit where they did not before (see scheduler/waiting.ts).
   */
  drainGrown(): string[] {
    const keys = [...this.grown];
    this.grown.clear();
    return keys;
  }

  /** Whether a new shape appeared (a health score moved a machine) since the last call: every waiting request may match it. */
  drainNewShapes(): boolean {
    const appeared = this.newShapes;
    this.newShapes = false;
    return appeared;
  }

  get(name: string): MachineEntry | undefined {
    return this.machines.get(name);
  }

  /** The machines of one lab host, retired ones too. */
  ofLabHost(labHost: string): Iterable<MachineEntry> {
    return this.byLabHost.get(labHost)?.values() ?? [];
  }

  /**
   * What the spec matches among the machines in service, the first term every other machine fails,
   * and which of the matches are free now, with why each of the others is not (offline, unreachable, …).
   */
  explain(spec: Spec): Explanation & { available: string[]; unavailable: UnavailableMachine[] } {
    const explanation = explainSpec(
      spec,
      [...this.machines.values()].filter((machine) => machine.state !== 'retired'),
    );
    const available: string[] = [];
    const unavailable: UnavailableMachine[] = [];
    for (const name of explanation.matches) {
      const why = unavailableMachine(this.machines.get(name)!);
      if (why === undefined) available.push(name);
      else unavailable.push(why);
    }
    return { ...explanation, available, unavailable };
  }

  freeShapes(): Shape[] {
    return [...this.free.values()];
  }

  allShapes(): Shape[] {
    return [...this.all.values()];
  }

  /**
   * Moves a machine to a new state, keeping the free index in step. An offline machine keeps the
   * state it returns to (`onlineState`); while that is `reserved` it still counts in its pool.
   */
  setState(machine: MachineEntry, state: MachineState, onlineState?: MachineState): void {
    const online = state === 'offline' ? onlineState : undefined;
    if (machine.state === state && machine.onlineState === online) return;
    const wasHeld = holds(machine.state, machine.onlineState);
    const isHeld = holds(state, online);
    if (wasHeld && !isHeld) {
      this.countReserved(machine, -1);
      if (machine.labels.pool !== undefined) for (const shape of this.all.values()) if (shape.labels.pool === machine.labels.pool) this.grown.add(shape.key);
    }
    if (!wasHeld && isHeld) this.countReserved(machine, 1);
    // A retired machine leaves every shape: no request can count on it any more.
    if (state === 'retired' && machine.state !== 'retired') this.leaveAll(machine);
    if (state !== 'retired' && machine.state === 'retired') insertSorted(this.shape(this.all, machine).machines, machine.name);
    this.keepingFree(machine, () => {
      machine.state = state;
      machine.onlineState = online;
    });
  }

  /**
   * Gives a machine new capacities (its health score changed): it moves to the shape they make,
   * free or not; a shape left without machines goes.
   */
  setCapacities(machine: MachineEntry, capacities: Record<string, number>): void {
    const key = shapeKey(machine.labels, capacities);
    if (key === machine.shapeKey) return;
    const inService = machine.state !== 'retired';
    const free = isFree(machine);
    if (free) removeSorted(this.shape(this.free, machine).machines, machine.name);
    // The requests waiting on its old shape are tried again (and then wait on the shapes they match
    // now); a shape new to the inventory may match requests that wait on none of the old ones.
    this.grown.add(machine.shapeKey);
    if (inService && !this.all.has(key)) this.newShapes = true;
    if (inService) this.leaveAll(machine);
    machine.capacities = capacities;
    machine.shapeKey = key;
    if (inService) insertSorted(this.shape(this.all, machine).machines, machine.name);
    if (free) {
      insertSorted(this.shape(this.free, machine).machines, machine.name);
      this.grown.add(key);
    }
  }

  /** Takes a machine out of its shape in `all`; an empty shape goes from both indexes. */
  private leaveAll(machine: MachineEntry): void {
    const shape = this.all.get(machine.shapeKey);
    if (!shape) return;
    removeSorted(shape.machines, machine.name);
    if (shape.machines.length === 0) {
      this.all.delete(machine.shapeKey);
      if (this.free.get(machine.shapeKey)?.machines.length === 0) this.free.delete(machine.shapeKey);
    }
  }

  /**
   * Marks a machine its lab host cannot reach (or lifts the mark): while marked it is not free,
   * whatever its state; a reserved one stays with its reservation.
   */
  setUnreachable(machine: MachineEntry, unreachable: MachineEntry['unreachable']): void {
    this.keepingFree(machine, () => {
      if (unreachable === undefined) delete machine.unreachable;
      else machine.unreachable = unreachable;
    });
  }

  /** Runs a change of the machine, then keeps the free index in step with it. */
  private keepingFree(machine: MachineEntry, change: () => void): void {
    const wasFree = isFree(machine);
    change();
    const free = isFree(machine);
    if (wasFree && !free) removeSorted(this.shape(this.free, machine).machines, machine.name);
    if (!wasFree && free) {
      insertSorted(this.shape(this.free, machine).machines, machine.name);
      this.grown.add(machine.shapeKey);
    }
  }

  private shape(index: Map<string, Shape>, machine: MachineEntry): Shape {
    let shape = index.get(machine.shapeKey);
    if (!shape) {
      shape = { key: machine.shapeKey, labels: machine.labels, capacities: machine.capacities, machines: [] };
      index.set(machine.shapeKey, shape);
    }
    return shape;
  }
}

/** Whether a machine may be matched: available, and not reported unreachable by its lab host. */
export const isFree = (machine: Pick<MachineEntry, 'state' | 'unreachable'>) => machine.state === 'available' && machine.unreachable === undefined;

/** Whether a reservation holds the machine: reserved, or offline while reserved. */
const holds = (state: MachineState, onlineState: MachineState | undefined) => state === 'reserved' || (state === 'offline' && onlineState === 'reserved');

function position(names: string[], name: string): number {
  let low = 0;
  let high = names.length;
  while (low < high) {
    const middle = (low + high) >>> 1;
    if (names[middle] < name) low = middle + 1;
    else high = middle;
  }
  return low;
}

function insertSorted(names: string[], name: string): void {
  const at = position(names, name);
  if (names[at] !== name) names.splice(at, 0, name);
}

function removeSorted(names: string[], name: string): void {
  const at = position(names, name);
  if (names[at] === name) names.splice(at, 1);
}
