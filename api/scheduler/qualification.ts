// Qualification before service. A machine whose config asks for it (`qualify`) and that appears for
// the first time, or is activated after quarantine or maintenance, is `qualifying`: it boots
// `boots` times from its pool's reference image, the agent running the check command over SSH each
// time, and goes into service once `pass` boots passed; it is quarantined, with the failures' codes
// and stages, as soon as that can no longer happen.
//
// Each boot is an ordinary reservation owned by `paddock`, pinned to the machine (so its
// provisioning, events, failures, history and restart recovery are the same as any other), at the
// lowest priority: a qualifying machine is never offered to users, so a boot takes nothing from
// them, except room in a pool that limits its machines at once (an OpenStack flavor); there a boot
// starts only when no queued request could use that room, and a request waits at most for the one
// boot under way.
import { randomBytes } from 'node:crypto';
import type { MachineState, MemberView } from '../../protocol/api.js';
import { generateKeyPair } from '../../protocol/ssh-keys.js';
import { matchShape } from './allocate.js';
import type { Grants } from './grants.js';
import type { MachineEntry, Reservation } from './records.js';
import { parseMembers } from './requests.js';
import type { SchedulerState } from './state.js';

/** Who owns qualification boots. */
export const qualificationOwner = 'paddock';
/** The lowest priority a request can have: qualification boots come after every user's request. */
const lowestPriority = -1000;
/** Failure codes that are not the machine's (the cloud, the lab host): the boot is not counted and is done again. */
const notCounted = new Set(['no_capacity', 'cloud_unreachable', 'lab_host_offline']);
/**
 * A boot that failed for its request (the reference image is missing or bad) is not the machine's
 * fault and is not counted: the next one waits this long, for an admin to put the image right.
 */
const requestFaultPauseMs = 60_000;

export class Qualifications {
  /** Machines whose last boot failed for its image: no boot before this time. */
  private readonly pausedUntil = new Map<string, number>();
  /** The machines qualifying or with a qualification running: what advance looks at (not every machine). */
  private readonly watched = new Set<string>();

  constructor(
    private readonly state: SchedulerState,
    private readonly grants: Grants,
  ) {}

  /**
   * At start: a machine whose qualification boot is still live goes back to qualifying once it is
   * released; a boot that ended unrecorded (none can: its end and the count are one commit) is done again.
   */
  start(): void {
    for (const machine of this.state.inventory.machines.values()) {
      if (machine.state === 'qualifying' || machine.onlineState === 'qualifying' || machine.qualification?.state === 'running') this.watched.add(machine.name);
      const current = machine.qualification?.state === 'running' ? machine.qualification.current : undefined;
      if (current === undefined) continue;
      if (this.state.live.has(current)) machine.pendingState ??= 'qualifying';
      else {
        delete machine.qualification!.current;
        this.state.store.machine(machine);
      }
    }
    this.advance();
  }

  /** Whether the reservation is the qualification boot under way on the machine. */
  isBoot(reservation: Reservation, machine: MachineEntry | undefined): boolean {
    return reservation.owner === qualificationOwner && machine?.qualification?.current === reservation.id;
  }

  /** The check command a qualification boot's task carries; undefined for every other reservation. */
  checkFor(reservation: Reservation, machine: MachineEntry): string | undefined {
    return this.isBoot(reservation, machine) ? machine.qualify?.check : undefined;
  }

  /** A boot came up and passed its check (the agent reports ready only then): it is released at once. */
  ready(reservation: Reservation): void {
    const machine = this.state.inventory.get(reservation.allocations[0]?.machine ?? '');
    if (!this.isBoot(reservation, machine)) return;
    this.grants.beginRelease(reservation, 'released', 'qualification boot passed its check');
  }

  /**
   * Starts the next boot of every qualifying machine that has none under way and may boot now;
   * `machine`, just put in qualifying (an admin activated it), is looked at from now on.
   */
  advance(machine?: MachineEntry): void {
    if (machine) this.watched.add(machine.name);
    for (const name of this.watched) this.advanceOne(name);
  }

  private advanceOne(name: string): void {
    const machine = this.state.inventory.get(name);
    if (!machine) {
      this.watched.delete(name);
      return;
    }
    const qualification = machine.qualification;
    if (qualification?.state === 'running' && qualification.current === undefined && machine.state !== 'qualifying' && machine.state !== 'offline') {
      // Put in maintenance or retired between two boots: the qualification stops there.
      this.decide(machine);
      this.state.store.machine(machine);
    }
    if (machine.qualification?.state !== 'running' && machine.state !== 'qualifying' && machine.onlineState !== 'qualifying') {
      this.watched.delete(name);
      return;
    }
    if (machine.state !== 'qualifying' || machine.unreachable !== undefined || machine.qualify === undefined) return;
    if (machine.qualification?.state !== 'running') this.begin(machine);
    if ((this.pausedUntil.get(machine.name) ?? 0) > this.state.now()) return;
    this.pausedUntil.delete(machine.name);
    if (machine.qualification!.current === undefined && this.mayBoot(machine)) this.boot(machine);
  }

  /**
   * A reservation ended: when it was a qualification boot, it is counted and the qualification
   * decided or carried on; any other may have left room in a pool for a boot.
   */
  ended(reservation: Reservation): void {
    if (reservation.owner !== qualificationOwner) {
      if (this.watched.size > 0) this.advance();
      return;
    }
    const allocation = reservation.allocations[0];
    const machine = this.state.inventory.get(allocation?.machine ?? '');
    if (!machine || !this.isBoot(reservation, machine)) return;
    const qualification = machine.qualification!;
    delete qualification.current;
    const failure = allocation.failure;
    if (reservation.state === 'released' && allocation.stages.probed !== undefined) qualification.passed += 1;
    else if (failure?.fault === 'request') {
      qualification.reason = `a boot was not counted: its image failed (${failure.code}: ${failure.reason}); the next one in ${requestFaultPauseMs / 1000}s`;
      this.pausedUntil.set(machine.name, this.state.now() + requestFaultPauseMs);
    } else if (reservation.state === 'failed' && failure && !notCounted.has(failure.code)) {
      qualification.failed += 1;
      qualification.failures.push({
        reservationId: reservation.id,
        code: failure.code,
        ...(failure.stage ? { stage: failure.stage } : {}),
        reason: failure.reason,
      });
    }
    this.decide(machine);
    this.state.store.machine(machine);
    this.advance();
  }

  /** Starts a qualification afresh for a machine put in `qualifying`. */
  private begin(machine: MachineEntry): void {
    const policy = machine.qualify!;
    machine.qualification = {
      state: 'running',
      boots: policy.boots,
      needed: policy.pass,
      passed: 0,
      failed: 0,
      failures: [],
      startedAt: new Date(this.state.now()).toISOString(),
    };
    this.state.store.machine(machine);
  }

  /** Ends the qualification once its outcome is certain (or once the machine left `qualifying`). */
  private decide(machine: MachineEntry): void {
    const qualification = machine.qualification!;
    const now = new Date(this.state.now()).toISOString();
    const held = machine.state === 'offline' ? machine.onlineState : machine.state;
    if (held !== 'qualifying') {
      qualification.state = held === 'quarantined' ? 'failed' : 'stopped';
      qualification.reason = `the machine became ${held}${machine.reason ? `: ${machine.reason}` : ''}`;
      qualification.endedAt = now;
      return;
    }
    const { passed, failed, boots, needed } = qualification;
    if (passed >= needed) {
      qualification.state = 'passed';
      qualification.endedAt = now;
      delete qualification.reason;
      machine.reason = undefined;
      this.setHeldState(machine, 'available');
      this.grants.schedule();
      return;
    }
    if (failed > boots - needed) {
      const summary = qualification.failures.map((each) => `${each.code}${each.stage ? ` at ${each.stage}` : ''}`);
      qualification.state = 'failed';
      qualification.endedAt = now;
      qualification.reason = `${passed} of ${passed + failed} boots passed, ${needed} of ${boots} needed`;
      machine.reason = `failed qualification: ${qualification.reason}; failures: ${summary.join(', ')}`;
      this.setHeldState(machine, 'quarantined');
    }
  }

  /** Sets the state, or, while offline, the state it returns to. */
  private setHeldState(machine: MachineEntry, next: MachineState): void {
    if (machine.state === 'offline') this.state.inventory.setState(machine, 'offline', next);
    else this.state.inventory.setState(machine, next);
  }

  /**
   * Whether a boot may start: always, unless the machine is in a pool that limits its machines at
   * once; then only with room left that no queued request could use.
   */
  private mayBoot(machine: MachineEntry): boolean {
    const pool = machine.labels.pool;
    const limit = pool === undefined ? undefined : this.state.poolLimits.get(pool);
    if (pool === undefined || limit === undefined) return true;
    if (limit - this.state.inventory.reservedIn(pool) <= 0) return false;
    const shapes = this.state.inventory.allShapes().filter((shape) => shape.labels.pool === pool);
    for (const reservation of this.state.queue) {
      for (const member of this.state.membersOf(reservation)) if (shapes.some((shape) => matchShape(member.spec, shape).ok)) return false;
    }
    return true;
  }

  /** The next boot: a reservation of `paddock` for this machine alone, granted at once. */
  private boot(machine: MachineEntry): void {
    const { state } = this;
    const qualification = machine.qualification!;
    const id = `r-${randomBytes(6).toString('hex')}`;
    const keys = generateKeyPair(`paddock:${id}`);
    const now = state.now();
    const members: MemberView[] = [
      { role: 'qualify', spec: `qualify=${machine.name}`, count: 1, ...(machine.qualify?.image ? { image: machine.qualify.image } : {}) },
    ];
    const reservation: Reservation = {
      id,
      owner: qualificationOwner,
      state: 'queued',
      priority: lowestPriority,
      leaseSeconds: state.policy.lease.default,
      members,
      allocations: [],
      publicKey: keys.publicKey,
      privateKey: keys.privateKey,
      createdAt: now,
      updatedAt: now,
    };
    state.addLive(reservation, parseMembers(members));
    const number = qualification.passed + qualification.failed + 1;
    state.record(reservation, { type: 'state', to: 'queued', reason: `qualification boot ${number} of at most ${qualification.boots} of ${machine.name}` });
    qualification.current = id;
    // Once released, the machine goes back to qualifying (grant makes it reserved meanwhile).
    machine.pendingState = 'qualifying';
    state.store.machine(machine);
    this.grants.grant(reservation, [[machine.name]], true);
  }
}
