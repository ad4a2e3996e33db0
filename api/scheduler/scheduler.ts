// The scheduler, put together: one state (state.ts) and the parts that act on it, each calling only
// the parts below it:
//
//   lease actions (power, boot)
//            |
//   reservations (owners' requests, the reaper)   agents (tasks, reports, lab hosts heard or silent)
//            \                                      /        |
//             \                               machines (inventory, health, retirement;
//                                              health.ts: the history and score)
//              \                                /
//               grants (the scheduling pass, release, requeue)
//                            |
//               state (memory, events, store)     pure policy: spec, match, allocate, queue, failure
//
// Beside machines, retries (retries.ts) moves a member whose machine failed while being provisioned
// to another machine: agents hand it those failures, and grants run it first in every pass.
//
// Nothing here knows HTTP: refusals are domain errors (api/domain-error.ts) that api/ maps to statuses.
import type { Database } from '../db/index.js';
import { AgentTasks } from './agents.js';
import { Grants } from './grants.js';
import { Health } from './health.js';
import { LabHosts } from './lab-hosts.js';
import { Machines } from './machines.js';
import { LeaseActions } from './lease-actions.js';
import { Qualifications } from './qualification.js';
import { Reservations } from './reservations.js';
import { Retries } from './retries.js';
import { SchedulerState, type MachineDefinition, type SchedulerPolicy } from './state.js';
import { WarmKeeper } from './warm.js';
import { version } from '../../protocol/version.js';
import type { Log } from '../../protocol/log.js';

export type { MachineDefinition, SchedulerPolicy } from './state.js';

/** What a configuration reload did to the machines (applyMachines). */
export interface MachineChanges {
  /** Named for the first time: in service now (qualifying first when they have `qualify`). */
  added: string[];
  /** No longer named and free: retired now. */
  retired: string[];
  /** No longer named and held by a reservation: retired once it is released. */
  retiredOnRelease: string[];
  /** Named again before their reservation ended: they stay in service. */
  kept: string[];
  /** Named again, but retired: a retired machine never comes back (its history is kept). */
  stillRetired: string[];
}

export interface SchedulerOptions {
  machines: readonly MachineDefinition[];
  policy: SchedulerPolicy;
  /** The most machines of each provider pool (by `pool` label) reserved at once. */
  poolLimits?: ReadonlyMap<string, number>;
  /** The machine kinds whose machines can be powered and re-deployed during a lease (none when not given). */
  leaseActionKinds?: ReadonlySet<string>;
  now?: () => number;
  /** Where the reservations' events are logged (component scheduler); none when not given. */
  log?: Log;
}

export class Scheduler {
  readonly reservations: Reservations;
  readonly machines: Machines;
  readonly agents: AgentTasks;
  readonly leaseActions: LeaseActions;
  readonly qualifications: Qualifications;
  readonly health: Health;
  readonly warm: WarmKeeper;
  private readonly state: SchedulerState;
  private readonly grants: Grants;
  private readonly retries: Retries;
  private readonly definitions: readonly MachineDefinition[];
  private reaper?: NodeJS.Timeout;

  constructor(db: Database, options: SchedulerOptions) {
    this.state = new SchedulerState(db, options.policy, options.now ?? Date.now, options.poolLimits);
    if (options.log) this.state.log = options.log;
    this.definitions = options.machines;
    this.grants = new Grants(this.state);
    this.qualifications = new Qualifications(this.state, this.grants);
    this.grants.onEnded = (reservation) => this.qualifications.ended(reservation);
    this.warm = new WarmKeeper(this.state, options.machines);
    this.grants.pick = (reservation, machines) => this.warm.pick(reservation, machines);
    this.reservations = new Reservations(this.state, this.grants);
    this.machines = new Machines(this.state, this.grants, this.qualifications);
    const labHosts = new LabHosts((options.policy.agents?.heartbeatTimeout ?? 30) * 1000, this.state.now, version);
    this.health = new Health(this.state, this.machines);
    this.warm.boots = { failed: (machine, failure) => this.health.warmFailed(machine, failure), ready: (machine) => this.machines.countSuccess(machine) };
    this.agents = new AgentTasks(this.state, this.grants, this.machines, labHosts, this.health);
    this.agents.onReady = (reservation) => this.qualifications.ready(reservation);
    this.agents.checkFor = (reservation, machine) => this.qualifications.checkFor(reservation, machine);
    this.retries = new Retries(this.state, this.grants, this.machines);
    this.agents.retries = this.retries;
    this.grants.beforePass = () => this.retries.serve();
    this.leaseActions = new LeaseActions(this.state, this.reservations, options.leaseActionKinds ?? new Set());
  }

  /** Every machine, by name (read only: changes go through the parts). */
  get inventory(): SchedulerState['inventory'] {
    return this.state.inventory;
  }

  /** Loads machines and live reservations, and repairs what a crash left half done. */
  async start(): Promise<void> {
    const { state } = this;
    await state.store.init();
    const live = await this.reservations.loadLive();
    await this.machines.load(this.definitions);
    await this.health.load();
    await this.agents.start();
    state.store.adopt(state.live.values(), state.inventory.machines.values());
    state.store.onRollback = () => {
      state.rollback();
      this.retries.reindex();
      this.health.rollback();
    };
    for (const reservation of live) this.grants.resume(reservation);
    this.qualifications.start();
    this.retries.reindex();
    this.grants.schedule();
    await state.store.flush();
    const interval = Math.max(50, state.policy.reaper.interval * 1000);
    this.reaper = setInterval(() => {
      void this.reservations.reap().catch(() => undefined);
      void this.agents.watch().catch(() => undefined);
      // A qualification boot waiting for pool room, or a machine back from offline, boots now.
      this.qualifications.advance();
      void state.store.flush().catch(() => undefined);
    }, interval);
    this.reaper.unref();
  }

  /**
   * The machine list of a reloaded configuration (SIGHUP): machines it names for the first time
   * are added, machines it no longer names are retired (now, or once the reservation holding them
   * is released: no reservation loses a machine); a machine named before is left as it is (the
   * caller hands its running definition: a changed one waits for a restart, api/config-reload.ts).
   */
  async applyMachines(definitions: readonly MachineDefinition[]): Promise<MachineChanges> {
    const { state } = this;
    const changes: MachineChanges = { added: [], retired: [], retiredOnRelease: [], kept: [], stillRetired: [] };
    const named = new Set(definitions.map((definition) => definition.name));
    for (const definition of definitions) {
      const machine = state.inventory.get(definition.name);
      if (!machine) {
        const entry = this.machines.addDefined(definition);
        this.health.added(entry);
        if (entry.state === 'qualifying') this.qualifications.advance(entry);
        changes.added.push(definition.name);
      } else if (machine.state === 'retired') changes.stillRetired.push(definition.name);
      else if (this.machines.keepRemoved(machine)) changes.kept.push(definition.name);
    }
    for (const machine of state.inventory.machines.values()) {
      if (named.has(machine.name) || machine.state === 'retired' || machine.pendingState === 'retired') continue;
      if (this.machines.retireRemoved(machine) === 'now') changes.retired.push(machine.name);
      else changes.retiredOnRelease.push(machine.name);
    }
    // Warm pools of the machines in service (a retired one's warm VM is stopped by its agent's next plan).
    this.warm.define(definitions.filter((definition) => state.inventory.get(definition.name)?.state !== 'retired'));
    this.agents.named(changes.added.map((name) => state.inventory.get(name)!.labHost));
    // A machine added on a silent lab host goes offline before a pass can grant it.
    await this.agents.watch();
    this.grants.schedule();
    await state.store.flush();
    return changes;
  }

  async stop(): Promise<void> {
    clearInterval(this.reaper);
    this.state.agentPull.stop();
    try {
      await this.state.store.flush();
    } finally {
      await this.state.store.close();
    }
  }

  /**
   * What metrics read (api/metrics.ts): the queue and the live reservations at scrape time, the
   * events and provisionings as they are recorded (`changes`), and each commit's time (`store.onCommit`).
   */
  get observed(): Pick<SchedulerState, 'queue' | 'live' | 'changes' | 'store'> {
    return this.state;
  }

  /** The engine the data is kept in (for /healthz). */
  get databaseDialect(): Database['dialect'] {
    return this.state.db.dialect;
  }

  /** Null while commits succeed; else the last commit's error. */
  storeFailure(): Error | null {
    return this.state.store.failing;
  }
}
