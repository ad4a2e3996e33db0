// A machine's health: every provisioning attempt is recorded as it ends (ready or failed, with its
// stages), and the machine's score is the share of its last `health.window` provisionings that came
// up, leaving out failures that are not the machine's (a bad image, a silent lab host). The score is
// a capacity of the machine (`health`, to two decimals rounded down, so machines fall into few
// shapes) that specs can ask for (`health>=0.95`), and a second quarantine rule beside failures in a
// row: under `health.minScore` once the window holds `health.minSamples` provisionings.
import type { AllocationFailure, ProvisioningView, Stage } from '../../protocol/api.js';
import { stages as stageOrder } from '../../protocol/agent.js';
import { plainRows, type ProvisioningRow } from '../db/index.js';
import type { WarmFailure } from '../../protocol/agent.js';
import { countsAgainstMachine } from './failure.js';
import type { Machines } from './machines.js';
import { ms, type Allocation, type MachineEntry, type Reservation } from './records.js';
import type { SchedulerPolicy, SchedulerState } from './state.js';
import { provisioningsKept } from './store.js';

export type HealthPolicy = Omit<SchedulerPolicy['health'], 'retries'>;

export const healthDefaults = { window: 20, minScore: 0.5, minSamples: 5 };

/** What the score is worked out from: one provisioning, newest first in a history. */
export interface Outcome {
  outcome: 'ready' | 'failed' | string;
  counted: boolean;
}

export interface Score {
  /** Successes over provisionings that count, in the window; 1 with none. */
  score: number;
  /** How many provisionings that count the window held. */
  samples: number;
  failures: number;
}

/** The score over the newest `window` provisionings that count (a request's fault does not). */
export function healthScore(history: readonly Outcome[], window: number): Score {
  const samples = history.filter((entry) => entry.counted).slice(0, window);
  const failures = samples.filter((entry) => entry.outcome !== 'ready').length;
  return { score: samples.length === 0 ? 1 : (samples.length - failures) / samples.length, samples: samples.length, failures };
}

/** The score as a capacity: two decimals, rounded down (0.949 does not pass `health>=0.95`). */
export const quantizeScore = (score: number): number => Math.floor(score * 100 + 1e-9) / 100;

/** Whether the score quarantines the machine: under the minimum, over enough provisionings. */
export function scoreQuarantines(score: Score, policy: HealthPolicy): boolean {
  return score.samples >= (policy.minSamples ?? healthDefaults.minSamples) && score.score < (policy.minScore ?? healthDefaults.minScore);
}

/** Each stage reached (in readiness order), with the seconds since the one before or the start. */
export function stageDurations(stages: Partial<Record<Stage, string>>, startedAt: number): ProvisioningView['stages'] {
  let before = startedAt;
  const durations: ProvisioningView['stages'] = [];
  for (const stage of stageOrder) {
    const at = stages[stage];
    if (at === undefined) continue;
    const time = Date.parse(at);
    durations.push({ stage, at, seconds: Math.max(0, time - before) / 1000 });
    before = time;
  }
  return durations;
}

/** The owner of the system's own reservations (qualification boots). */
export const systemOwner = 'paddock';

export class Health {
  /** The kept provisionings of each machine, newest first. */
  private readonly history = new Map<string, ProvisioningRow[]>();
  /** When an agent took each provisioning under way, by allocation id (else the grant time counts). */
  private readonly started = new Map<string, number>();
  /** Whether a reservation's boots are qualification boots (by default: the system's own reservations). */
  isQualification: (reservation: Reservation) => boolean = (reservation) => reservation.owner === systemOwner;

  constructor(
    private readonly state: SchedulerState,
    private readonly machines: Machines,
  ) {}

  private get policy(): HealthPolicy {
    return this.state.policy.health;
  }

  private get window(): number {
    return Math.min(this.policy.window ?? healthDefaults.window, provisioningsKept);
  }

  /** Reads the kept history and gives every machine its score (after Machines.load). */
  async load(): Promise<void> {
    const rows = plainRows(await this.state.db.provisionings.findAll({ raw: true, order: [['id', 'DESC']] }));
    for (const row of rows) {
      const entry = { ...row, counted: Boolean(row.counted), qualification: Boolean(row.qualification) };
      const list = this.history.get(row.machine);
      if (list) list.push(entry);
      else this.history.set(row.machine, [entry]);
    }
    for (const machine of this.state.inventory.machines.values()) this.rescore(machine, false);
  }

  /** A machine added while the API runs (a configuration reload): its score, as one loaded at start gets. */
  added(machine: MachineEntry): void {
    this.rescore(machine, false);
  }

  /** An agent took the machine's provisioning (or re-deploy, or power-on): it starts now. */
  taken(allocation: Allocation): void {
    if (allocation.action?.type === 'power' && allocation.action.power === 'off') return;
    this.started.set(allocation.id, this.state.now());
  }

  /** The machine came up: recorded, and its run of failures ends. */
  ready(reservation: Reservation, allocation: Allocation, machine: MachineEntry): void {
    this.record(reservation, allocation, machine, undefined, true);
    this.machines.countSuccess(machine);
  }

  /**
   * The provisioning failed (`allocation.failure` says how), or a ready machine was lost
   * (`machine_lost`, from its start to now): recorded; when the failure is the machine's
   * (`counted`), it counts toward both quarantine rules.
   */
  failed(reservation: Reservation, allocation: Allocation, machine: MachineEntry, counted: boolean, reason: string): void {
    const score = this.record(reservation, allocation, machine, allocation.failure, counted);
    if (counted) this.countFailure(machine, score, reason);
  }

  /**
   * A warm boot (a machine booted ahead of demand by its agent, for no reservation) failed: it is
   * in the history as a failed provisioning of the system's own, and counts as one. A free machine
   * it quarantines leaves the pool at once, so its agent stops warming it.
   */
  warmFailed(machine: MachineEntry, boot: WarmFailure): void {
    const now = this.state.now();
    const counted = countsAgainstMachine(boot);
    const row = this.state.store.provisioning({
      machine: machine.name,
      reservationId: boot.id,
      allocationId: `${boot.id}.0`,
      owner: systemOwner,
      image: boot.image,
      outcome: 'failed',
      code: boot.code,
      fault: boot.fault,
      stage: boot.stage ?? null,
      counted,
      qualification: false,
      stages: '{}',
      startedAt: new Date(now - boot.seconds * 1000),
      endedAt: new Date(now),
    });
    const score = this.keep(machine, row);
    if (!counted) return;
    this.countFailure(machine, score, `warm boot of ${boot.image}: ${boot.code}: ${boot.reason}`);
    if (machine.pendingState === 'quarantined' && machine.state === 'available' && machine.reservationId === undefined) {
      machine.pendingState = undefined;
      this.state.inventory.setState(machine, 'quarantined');
      this.state.store.machine(machine);
    }
  }

  private countFailure(machine: MachineEntry, score: Score, reason: string): void {
    this.machines.countFailure(machine, reason);
    if (machine.pendingState === 'quarantined' || !scoreQuarantines(score, this.policy)) return;
    machine.pendingState = 'quarantined';
    machine.reason =
      `health score ${quantizeScore(score.score)} is under health.minScore ${this.policy.minScore ?? healthDefaults.minScore}: ` +
      `${score.failures} of its last ${score.samples} provisionings failed; last: ${reason}`;
    this.state.store.machine(machine);
  }

  /** A machine's score over its window. */
  score(name: string): Score {
    return healthScore(this.history.get(name) ?? [], this.window);
  }

  /** Every machine's score, by name (what a metrics endpoint exports). */
  scores(): Map<string, Score> {
    return new Map([...this.state.inventory.machines.keys()].map((name) => [name, this.score(name)]));
  }

  /** A machine's last `limit` provisionings, newest first. */
  provisionings(name: string, limit = this.window): ProvisioningView[] {
    return (this.history.get(name) ?? []).slice(0, limit).map(provisioningView);
  }

  /** After a failed commit: provisionings that were not stored are forgotten, and scores follow. */
  rollback(): void {
    const committed = this.state.store.committedProvisioningId;
    for (const [name, list] of this.history) {
      const kept = list.filter((row) => row.id <= committed);
      if (kept.length === list.length) continue;
      this.history.set(name, kept);
      const machine = this.state.inventory.get(name);
      if (machine) this.rescore(machine, false);
    }
  }

  private record(reservation: Reservation, allocation: Allocation, machine: MachineEntry, failure: AllocationFailure | undefined, counted: boolean): Score {
    const now = this.state.now();
    const startedAt = this.started.get(allocation.id) ?? reservation.grantedAt ?? now;
    this.started.delete(allocation.id);
    const image = allocation.image ?? reservation.members.find((member) => member.role === allocation.role)?.image;
    const row = this.state.store.provisioning({
      machine: machine.name,
      reservationId: reservation.id,
      allocationId: allocation.id,
      owner: reservation.owner,
      image: image ?? null,
      outcome: failure === undefined ? 'ready' : 'failed',
      code: failure?.code ?? null,
      fault: failure?.fault ?? null,
      stage: failure?.stage ?? null,
      counted,
      qualification: this.isQualification(reservation),
      stages: JSON.stringify(allocation.stages),
      startedAt: new Date(Math.min(startedAt, now)),
      endedAt: new Date(now),
    });
    return this.keep(machine, row);
  }

  /** A provisioning stored: first in the machine's history, and its score worked out again. */
  private keep(machine: MachineEntry, row: ProvisioningRow): Score {
    const list = [row, ...(this.history.get(machine.name) ?? [])];
    list.length = Math.min(list.length, provisioningsKept);
    this.history.set(machine.name, list);
    this.state.changes.emit('provisioning', row, machine);
    this.rescore(machine, true);
    return this.score(machine.name);
  }

  /** Puts the machine's quantized score in its capacities, moving it to its new shape when it changed. */
  private rescore(machine: MachineEntry, store: boolean): void {
    const health = quantizeScore(this.score(machine.name).score);
    if (machine.capacities.health === health) return;
    this.state.inventory.setCapacities(machine, { ...machine.capacities, health });
    if (store) this.state.store.machine(machine);
  }
}

function provisioningView(row: ProvisioningRow): ProvisioningView {
  const startedAt = ms(row.startedAt)!;
  const endedAt = ms(row.endedAt)!;
  const view: ProvisioningView = {
    reservationId: row.reservationId,
    owner: row.owner,
    outcome: row.outcome as ProvisioningView['outcome'],
    counted: row.counted,
    qualification: row.qualification,
    startedAt: new Date(startedAt).toISOString(),
    endedAt: new Date(endedAt).toISOString(),
    seconds: (endedAt - startedAt) / 1000,
    stages: stageDurations(JSON.parse(row.stages) as Partial<Record<Stage, string>>, startedAt),
  };
  if (row.image !== null) view.image = row.image;
  if (row.code !== null) view.code = row.code;
  if (row.fault !== null) view.fault = row.fault as ProvisioningView['fault'];
  if (row.stage !== null) view.stage = row.stage as Stage;
  return view;
}
