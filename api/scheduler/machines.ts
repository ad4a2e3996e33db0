// The machines: loaded from the configuration and the database at start, taken out of service and
// put back by admins, quarantined by their health (failures in a row, see failure.ts; the score,
// see health.ts), and retired for good.
import { plainRows, type MachineRow } from '../db/index.js';
import { DomainError, notFound } from '../domain-error.js';
import { quarantines } from './failure.js';
import type { Grants } from './grants.js';
import type { Qualifications } from './qualification.js';
import { ms, unreachableFromRow, type MachineEntry } from './records.js';
import type { MachineDefinition, SchedulerState } from './state.js';

/** Why a machine the configuration no longer names is retired (at start, or by a reload). */
export const removedFromConfig = 'no longer in the configuration';

export class Machines {
  constructor(
    private readonly state: SchedulerState,
    private readonly grants: Grants,
    private readonly qualifications: Qualifications,
  ) {}

  /**
   * The configured machines with what the database remembers of them (maintenance, quarantine,
   * failures); stored machines no longer configured are retired, and a retired machine stays
   * retired even when the configuration names it again (with its history kept). Needs the live reservations
   * loaded: a machine is reserved only if one of them holds it, so a crash can leave none stuck.
   */
  async load(definitions: readonly MachineDefinition[]): Promise<void> {
    const { state } = this;
    const rows = new Map(plainRows(await state.db.machines.findAll({ raw: true })).map((row) => [row.name, row]));
    const held = new Map<string, string>();
    for (const reservation of state.live.values()) {
      for (const allocation of reservation.allocations) if (allocation.state !== 'released') held.set(allocation.machine, reservation.id);
    }
    for (const machine of definitions) {
      const row = rows.get(machine.name);
      rows.delete(machine.name);
      const stored = row?.state as MachineEntry['state'] | undefined;
      const reservationId = held.get(machine.name);
      // An offline machine stays offline until its lab host is heard; what it returns to is worked
      // out as for any other machine.
      const offline = stored === 'offline';
      const before = offline ? (row?.onlineState as MachineEntry['state'] | null) : stored;
      // What an admin or the health rules set while it was reserved: kept while a reservation holds
      // it, taken at once when none does any more.
      const pending = reservationId ? undefined : ((row?.pendingState ?? undefined) as MachineEntry['state'] | undefined);
      // A machine to qualify (config `qualify`) seen for the first time is qualifying, and stays so
      // across a restart until its qualification ends (qualification.ts).
      const qualifies = machine.qualify !== undefined && (!row || before === 'qualifying');
      const online = reservationId
        ? 'reserved'
        : (pending ?? (before === 'maintenance' || before === 'quarantined' ? before : qualifies ? 'qualifying' : 'available'));
      if (stored === 'retired' || before === 'retired' || online === 'retired') {
        const { labels, capacities, settings } = machine;
        const retired = this.addRetired(row!, { labHost: machine.labHost ?? 'local', access: machine.access ?? 'direct', labels, capacities, settings });
        if (stored !== 'retired') state.store.machine(retired);
        continue;
      }
      const entry = state.inventory.add({
        name: machine.name,
        kind: machine.kind,
        labHost: machine.labHost ?? 'local',
        access: machine.access ?? 'direct',
        state: offline ? 'offline' : online,
        labels: machine.labels,
        capacities: machine.capacities,
        settings: machine.settings,
        failures: row?.failures ?? 0,
        reservationId,
        qualify: machine.qualify,
        ...(row?.qualification ? { qualification: JSON.parse(row.qualification) } : {}),
        reason: online === before || pending !== undefined ? (row?.reason ?? undefined) : undefined,
        ...(reservationId && row?.pendingState ? { pendingState: row.pendingState as MachineEntry['state'] } : {}),
        ...(offline ? { onlineState: online, offlineSince: ms(row?.offlineSince ?? null) ?? state.now() } : {}),
        // Until its agent's next heartbeat says otherwise.
        ...(row && unreachableFromRow(row) ? { unreachable: unreachableFromRow(row) } : {}),
      });
      if (
        !row ||
        row.state !== entry.state ||
        row.onlineState !== (entry.onlineState ?? null) ||
        (row.pendingState ?? null) !== (entry.pendingState ?? null) ||
        row.labels !== JSON.stringify(entry.labels)
      ) {
        state.store.machine(entry);
      }
    }
    for (const row of rows.values()) {
      const retired = this.addRetired(row, {
        labHost: 'local',
        access: 'direct',
        labels: JSON.parse(row.labels),
        capacities: JSON.parse(row.capacities),
        settings: {},
      });
      if (row.state !== 'retired') {
        retired.reason = removedFromConfig;
        state.store.machine(retired);
      }
    }
  }

  /**
   * A machine a configuration reload names for the first time: in service at once (qualifying
   * first when it has `qualify`), as a machine the configuration names at start for the first time.
   */
  addDefined(machine: MachineDefinition): MachineEntry {
    const entry = this.state.inventory.add({
      name: machine.name,
      kind: machine.kind,
      labHost: machine.labHost ?? 'local',
      access: machine.access ?? 'direct',
      state: machine.qualify !== undefined ? 'qualifying' : 'available',
      labels: machine.labels,
      capacities: machine.capacities,
      settings: machine.settings,
      failures: 0,
      qualify: machine.qualify,
    });
    this.state.store.machine(entry);
    return entry;
  }

  /**
   * A machine a configuration reload no longer names: retired, as one removed while the API was
   * down. A reservation that holds it keeps it to the end (its lease, its release), and it is
   * retired once released, as an admin's retirement of a reserved machine is. Says which.
   */
  retireRemoved(machine: MachineEntry): 'now' | 'on release' {
    machine.reason = removedFromConfig;
    const when = this.heldState(machine) === 'reserved' ? 'on release' : 'now';
    if (when === 'on release') machine.pendingState = 'retired';
    else {
      this.state.inventory.setState(machine, 'retired');
      machine.offlineSince = undefined;
      machine.pendingState = undefined;
    }
    this.state.store.machine(machine);
    return when;
  }

  /** A machine to be retired on release because a reload dropped it, named again by a later reload: it stays in service. */
  keepRemoved(machine: MachineEntry): boolean {
    if (machine.pendingState !== 'retired' || machine.reason !== removedFromConfig) return false;
    machine.pendingState = undefined;
    machine.reason = undefined;
    this.state.store.machine(machine);
    return true;
  }

  /** A retired machine in the inventory (listed, its history shown), never matched. */
  private addRetired(row: MachineRow, traits: Pick<MachineEntry, 'labHost' | 'access' | 'labels' | 'capacities' | 'settings'>): MachineEntry {
    const { health: _health, ...capacities } = traits.capacities;
    return this.state.inventory.add({
      name: row.name,
      kind: row.kind,
      ...traits,
      capacities,
      state: 'retired',
      failures: row.failures,
      reason: row.reason ?? undefined,
    });
  }

  /**
   * Retires a machine for good (admins): never matched again, kept with its history; a reserved one
   * is retired once released.
   */
  async retire(name: string, reason: string | undefined): Promise<MachineEntry> {
    const machine = this.inService(name);
    machine.reason = reason ?? 'retired';
    if (this.heldState(machine) === 'reserved') machine.pendingState = 'retired';
    else {
      this.state.inventory.setState(machine, 'retired');
      machine.offlineSince = undefined;
      machine.pendingState = undefined;
    }
    this.state.store.machine(machine);
    await this.state.store.flush();
    return machine;
  }

  machine(name: string): MachineEntry {
    const machine = this.state.inventory.get(name);
    if (!machine) throw notFound(`machine ${name}`);
    return machine;
  }

  async setMaintenance(name: string, reason: string | undefined): Promise<MachineEntry> {
    const machine = this.inService(name);
    machine.reason = reason ?? 'maintenance';
    if (this.heldState(machine) === 'reserved') machine.pendingState = 'maintenance';
    else this.setOnlineState(machine, 'maintenance');
    this.state.store.machine(machine);
    await this.state.store.flush();
    return machine;
  }

  async activate(name: string): Promise<MachineEntry> {
    const machine = this.inService(name);
    machine.pendingState = undefined;
    machine.reason = undefined;
    machine.failures = 0;
    // A machine to qualify boots its qualification again before it serves anyone.
    if (machine.qualify !== undefined) machine.qualification = undefined;
    if (this.heldState(machine) === 'reserved') machine.pendingState = machine.qualify !== undefined ? 'qualifying' : undefined;
    else this.setOnlineState(machine, machine.qualify !== undefined ? 'qualifying' : 'available');
    this.state.store.machine(machine);
    this.qualifications.advance(machine);
    this.grants.schedule();
    await this.state.store.flush();
    return machine;
  }

  /** One more infrastructure failure in a row: past the health policy's limit, quarantined once free. */
  countFailure(machine: MachineEntry, reason: string): void {
    machine.failures += 1;
    if (quarantines(machine.failures, this.state.policy.health)) {
      machine.pendingState = 'quarantined';
      machine.reason = `${machine.failures} infrastructure failures in a row; last: ${reason}`;
    }
    this.state.store.machine(machine);
  }

  /** A machine that came up: its run of failures ends. */
  countSuccess(machine: MachineEntry): void {
    machine.failures = 0;
    this.state.store.machine(machine);
  }

  /**
   * Teardown failed for good: the machine may still carry a reservation's traces, so it leaves
   * the pool (once released) until an admin looks at it.
   */
  quarantineAfterRelease(machine: MachineEntry, reason: string): void {
    machine.pendingState = 'quarantined';
    machine.reason = `release failed: ${reason}`;
    this.state.store.machine(machine);
  }

  /**
   * Its lab host went silent: the machine is offline (not matched) until the agent is heard again,
   * then goes back to the state it had (or was given meanwhile).
   */
  takeOffline(machine: MachineEntry, since: number): void {
    if (machine.state === 'offline' || machine.state === 'retired') return;
    this.state.inventory.setState(machine, 'offline', machine.state);
    machine.offlineSince = since;
    this.state.store.machine(machine);
  }

  /** Its lab host was heard again. */
  bringOnline(machine: MachineEntry): void {
    if (machine.state !== 'offline') return;
    this.state.inventory.setState(machine, machine.onlineState ?? 'available');
    machine.offlineSince = undefined;
    this.state.store.machine(machine);
  }

  /**
   * What its lab host's agent says of its reach: a reason marks the machine unreachable (not matched,
   * since the first report of it), none lifts the mark. Says whether the machine came back.
   */
  setReach(machine: MachineEntry, reason: string | undefined): boolean {
    const known = machine.unreachable;
    if (reason === known?.reason) return false;
    this.state.inventory.setUnreachable(machine, reason === undefined ? undefined : { since: known?.since ?? this.state.now(), reason });
    this.state.store.machine(machine);
    return reason === undefined;
  }

  /** The state that counts for maintenance and activation: an offline machine's is the one it returns to. */
  private heldState(machine: MachineEntry): MachineEntry['state'] {
    return machine.state === 'offline' ? (machine.onlineState ?? 'available') : machine.state;
  }

  /** Sets the state, or, while offline, the state it returns to. */
  private setOnlineState(machine: MachineEntry, next: MachineEntry['state']): void {
    if (machine.state === 'offline') this.state.inventory.setState(machine, 'offline', next);
    else this.state.inventory.setState(machine, next);
  }

  private inService(name: string): MachineEntry {
    const machine = this.machine(name);
    if (machine.state === 'retired' || machine.pendingState === 'retired') {
      throw new DomainError('machine_retired', `machine ${name} is retired${machine.state === 'retired' ? '' : ' (once released)'}: it never comes back`, {
        machine: name,
      });
    }
    return machine;
  }
}
