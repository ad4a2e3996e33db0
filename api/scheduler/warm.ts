// Warm pools, the API's half: which free machines of a pool with `warm: [{image, count, idle}]` are
// to be kept booted from which image, and the swap that hands a reservation's member a warm machine
// of its image (or spares a warm machine a member of another image would take). The agents boot
// and stop the warm VMs (lab-host/warm.ts) and report which are ready; the allocator
// (allocate.ts) is not touched: machines of one shape are interchangeable, so after allocation a
// chosen machine is swapped for a free one of the same shape.
//
// A warm machine stays `available` (free): while its VM boots it may be granted as a cold machine,
// and its agent stops the warm boot first. An image nobody asked for in `idle` seconds is given
// back to cold use: no machine is kept warm for it until a member asks for it again (that member
// boots cold; the pool refills behind it). Nothing here is stored: after an API restart the agents'
// next reports say again which machines are warm, and the idle clocks start again.
import type { AgentTask, WarmFailure, WarmMachine, WarmPlan } from '../../protocol/agent.js';
import { isFree } from './inventory.js';
import type { MachineEntry, Reservation } from './records.js';
import type { MachineDefinition, SchedulerState } from './state.js';

interface WarmPool {
  machines: string[];
  images: readonly { image: string; count: number; idle: number }[];
}

/** `name` means `name:latest`, as the image store reads it. */
export const imageRef = (ref: string) => (ref.includes(':') ? ref : `${ref}:latest`);

/** How often an agent with warm pools reports (seconds); one without, how often it asks whether it has some. */
const reportEvery = { warm: 1, none: 30 };

export class WarmKeeper {
  private readonly pools = new Map<string, WarmPool>();
  private readonly poolOf = new Map<string, string>();
  /** Warm and ready, as the machines' agents last reported: machine → image. */
  private readonly ready = new Map<string, string>();
  /** What each machine is to keep warm, as last planned (kept where it still holds, so VMs are not moved about). */
  private readonly targets = new Map<string, string>();
  /** When each image was last asked for by a granted member (ms); since the start for those not asked yet. */
  private readonly asked = new Map<string, number>();
  private readonly since: number;
  /** Told of warm boots: one that failed is in the machine's health as a failed provisioning; one that came up ends its run of failures. */
  boots?: { failed(machine: MachineEntry, failure: WarmFailure): void; ready(machine: MachineEntry): void };

  constructor(
    private readonly state: SchedulerState,
    definitions: readonly MachineDefinition[],
  ) {
    this.since = state.now();
    this.define(definitions);
  }

  /** The pools of the configured machines: at start, and again when a configuration reload added or removed machines. */
  define(definitions: readonly MachineDefinition[]): void {
    this.pools.clear();
    this.poolOf.clear();
    for (const definition of definitions) {
      if (!definition.warm || !definition.warmPool) continue;
      const pool = this.pools.get(definition.warmPool) ?? { machines: [], images: definition.warm };
      pool.machines.push(definition.name);
      this.pools.set(definition.warmPool, pool);
      this.poolOf.set(definition.name, definition.warmPool);
    }
  }

  /** The machines warm and ready now, with their images (metrics). */
  get warmNow(): ReadonlyMap<string, string> {
    return this.ready;
  }

  /**
   * An agent's report of its warm machines that are ready (the whole list for its lab host), and
   * the plan it is to follow. A machine that is not of its lab host (gone from the config, moved
   * to another) is left out of the plan, so its warm VM is stopped; it changes nothing here.
   */
  report(agent: string, warm: readonly WarmMachine[], failed: readonly WarmFailure[] = []): WarmPlan {
    const { inventory } = this.state;
    const ours = (name: string) => {
      const machine = inventory.get(name);
      return machine?.labHost === agent && machine.state !== 'retired' ? machine : undefined;
    };
    const before = new Set(this.ready.keys());
    for (const [name] of this.ready) if (inventory.get(name)?.labHost === agent) this.ready.delete(name);
    for (const { machine, image } of warm) if (inventory.get(machine)?.labHost === agent) this.ready.set(machine, imageRef(image));
    for (const failure of failed) {
      const machine = ours(failure.machine);
      if (machine) this.boots?.failed(machine, failure);
    }
    for (const { machine: name } of warm) {
      const machine = ours(name);
      if (machine && !before.has(name)) this.boots?.ready(machine);
    }
    this.plan();
    const targets: WarmPlan['targets'] = [];
    const held: string[] = [];
    for (const machine of inventory.machines.values()) {
      if (machine.labHost !== agent || machine.state === 'retired') continue;
      const image = this.targets.get(machine.name);
      if (image !== undefined) targets.push({ machine: taskMachine(machine), image });
      else if (machine.reservationId !== undefined) held.push(machine.name);
    }
    const hasPools = [...this.poolOf.keys()].some((name) => inventory.get(name)?.labHost === agent);
    return { targets, held, intervalSeconds: hasPools ? reportEvery.warm : reportEvery.none };
  }

  /**
   * Plans each pool: per image, the free machines that keep it: those planned or warm with it
   * already first (so no VM is moved about), then the others by name; none for an image idle too long.
   */
  private plan(): void {
    const { inventory } = this.state;
    const now = this.state.now();
    const planned = new Map(this.targets);
    this.targets.clear();
    for (const [poolName, pool] of this.pools) {
      // A pool that limits its machines at once (an OpenStack pool's maxInstances) counts warm ones
      // too: they keep only the room its reservations leave.
      const limit = this.state.poolLimits.get(poolName);
      let room = limit === undefined ? Infinity : limit - inventory.reservedIn(poolName);
      const free = pool.machines.filter((name) => {
        const machine = inventory.get(name);
        return machine !== undefined && isFree(machine);
      });
      const wanted = pool.images.filter(({ image, idle }) => now - (this.asked.get(image) ?? this.since) <= idle * 1000);
      const kept = new Map<string, number>();
      const keep = (name: string, image: string) => {
        if (room <= 0) return;
        room -= 1;
        this.targets.set(name, image);
        kept.set(image, (kept.get(image) ?? 0) + 1);
      };
      // Warm with the image first, then being warmed with it, then any free slot.
      for (const held of [(name: string) => this.ready.get(name), (name: string) => planned.get(name)]) {
        for (const { image, count } of wanted) {
          for (const name of free) if ((kept.get(image) ?? 0) < count && !this.targets.has(name) && held(name) === image) keep(name, image);
        }
      }
      for (const { image, count } of wanted) {
        for (const name of free) if ((kept.get(image) ?? 0) < count && !this.targets.has(name)) keep(name, image);
      }
    }
  }

  /**
   * Swaps, within a shape, the machines a pass chose for a reservation: a member whose image is
   * warm on another free machine of the same shape takes that one; a member of another image is
   * given a free machine that is not warm (or being warmed) in place of a warm one, where there is
   * one. The images asked for count as asked (their idle clocks start again). Returns the machines.
   */
  pick(reservation: Reservation, machines: string[][]): string[][] {
    if (this.pools.size === 0) return machines;
    const { inventory } = this.state;
    const now = this.state.now();
    const chosen = new Set(machines.flat());
    const freeByShape = new Map(inventory.freeShapes().map((shape) => [shape.key, shape.machines]));
    return reservation.members.map((member, index) => {
      const image = member.image === undefined ? undefined : imageRef(member.image);
      if (image !== undefined) this.asked.set(image, now);
      return machines[index].map((name) => {
        const machine = inventory.get(name);
        const warm = this.ready.get(name);
        if (!machine || (image !== undefined && warm === image)) return this.take(name);
        const others = (freeByShape.get(machine.shapeKey) ?? []).filter((other) => !chosen.has(other));
        let better = image === undefined ? undefined : others.find((other) => this.ready.get(other) === image);
        // Warm, or being warmed, for another image: a cold one is taken in its place. One being
        // warmed with the member's image is kept (its agent lets the task wait for that boot).
        const warmFor = warm ?? this.targets.get(name);
        if (better === undefined && warmFor !== undefined && warmFor !== image)
          better = others.find((other) => !this.ready.has(other) && !this.targets.has(other));
        if (better === undefined) return this.take(name);
        chosen.delete(name);
        chosen.add(better);
        return this.take(better);
      });
    });
  }

  /** A machine granted: no longer warm for the pool (its agent hands its VM over, or stops it). */
  private take(name: string): string {
    this.ready.delete(name);
    this.targets.delete(name);
    return name;
  }
}

function taskMachine(machine: {
  name: string;
  kind: string;
  labels: Record<string, string>;
  capacities: Record<string, number>;
  settings: unknown;
}): AgentTask['machine'] {
  return { name: machine.name, kind: machine.kind, labels: machine.labels, capacities: machine.capacities, settings: machine.settings };
}
