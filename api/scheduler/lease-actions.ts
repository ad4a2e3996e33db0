// What an owner does to a machine during a lease: power (off, on, cycle) and re-deploy (boot
// another image). Each is an `action` event, puts the member's allocation back to `provisioning`
// with its stages cleared, and becomes an agent task of the machine's lab host; the member is
// `ready` again (or `off`) when the agent reports it. A failure fails that member alone
// (failure.ts), never the reservation: its other members keep working and it can be booted again.
//
// Races: an action is taken only while the reservation is ready and the member is not busy (one
// action at a time, none during its first provisioning); a release or an expiry during an action
// turns the allocation to `releasing`, which replaces the task not yet taken, aborts the one in
// flight on the agent (same allocation id), and makes later reports of the action moot.
import type { Caller, LeaseAction, PowerAction } from '../../protocol/api.js';
import { DomainError, notFound } from '../domain-error.js';
import { isEnded } from './lifecycle.js';
import type { Allocation, Reservation } from './records.js';
import type { Reservations } from './reservations.js';
import type { SchedulerState } from './state.js';

/** What an owner asks for: a power action, or a re-deploy with an image (and a kernel command line). */
export type LeaseActionRequest = { type: 'power'; power: PowerAction } | { type: 'boot'; image: string; cmdline?: string };

/** How an action reads in events and messages: `power cycle`, `boot NAME:TAG`. */
export function describeAction(action: LeaseActionRequest | LeaseAction): string {
  return action.type === 'power' ? `power ${action.power}` : `boot ${action.image}`;
}

export class LeaseActions {
  constructor(
    private readonly state: SchedulerState,
    private readonly reservations: Reservations,
    /** The machine kinds whose machines can be powered and re-deployed during a lease. */
    private readonly kinds: ReadonlySet<string>,
  ) {}

  /**
   * Asks for a power action or a re-deploy on one member (`role`, `index`) of the caller's
   * reservation (any, for an admin). `power on` of a ready member and `power off` of one that is
   * off change nothing. Answers the reservation as it is now (the action goes on in the background).
   */
  async act(caller: Caller, id: string, member: { role: string; index: number }, request: LeaseActionRequest): Promise<Reservation> {
    const { state } = this;
    const reservation = await this.reservations.get(caller, id);
    if (isEnded(reservation.state) || reservation.state === 'releasing' || !state.live.has(reservation.id)) {
      throw new DomainError('lease_expired', `reservation ${reservation.id} is ${reservation.state}: its machines are no longer held`, {
        state: reservation.state,
      });
    }
    if (reservation.state !== 'ready') {
      throw new DomainError('not_ready', `reservation ${reservation.id} is ${reservation.state}: power and boot act once every machine was ready`, {
        state: reservation.state,
      });
    }
    const allocation = reservation.allocations.find(
      (candidate) => candidate.role === member.role && candidate.index === member.index && candidate.replacedBy === undefined,
    );
    if (!allocation) throw notFound(`member ${member.role}[${member.index}] of reservation ${reservation.id}`);
    const machine = state.inventory.get(allocation.machine);
    if (!machine || !this.kinds.has(machine.kind)) {
      throw new DomainError(
        'power_not_supported',
        `${allocation.machine} is a ${machine?.kind ?? 'retired'} machine: it cannot be powered or booted again during a lease`,
        { machine: allocation.machine, kind: machine?.kind },
      );
    }
    const where = `${allocation.role}[${allocation.index}] on ${allocation.machine}`;
    if (allocation.state === 'provisioning') {
      const busy = allocation.action ? `${describeAction(allocation.action)} is under way` : 'it is still being provisioned';
      throw new DomainError('member_busy', `${where} is busy: ${busy}; try again once it is done`, { state: allocation.state });
    }
    if (allocation.state !== 'ready' && allocation.state !== 'off' && allocation.state !== 'failed') {
      throw new DomainError('member_busy', `${where} is ${allocation.state}`, { state: allocation.state });
    }
    if (request.type === 'power' && ((request.power === 'on' && allocation.state === 'ready') || (request.power === 'off' && allocation.state === 'off'))) {
      return reservation;
    }
    this.start(reservation, allocation, request, caller.name);
    await state.store.flush();
    return reservation;
  }

  private start(reservation: Reservation, allocation: Allocation, request: LeaseActionRequest, by: string): void {
    const { state } = this;
    const cmdline = request.type === 'boot' && request.cmdline !== undefined ? ` with kernel command line ${JSON.stringify(request.cmdline)}` : '';
    state.record(reservation, { type: 'action', to: describeAction(request), machine: allocation.machine, reason: `asked by ${by}${cmdline}` });
    allocation.action = { ...request, by };
    if (request.type === 'boot') {
      allocation.image = request.image;
      if (request.cmdline !== undefined) allocation.cmdline = request.cmdline;
      else delete allocation.cmdline;
    }
    delete allocation.failure;
    allocation.stages = {};
    // No agent holds the task until one takes it: a server restarted meanwhile hands it out again.
    allocation.agent = undefined;
    state.setAllocation(reservation, allocation, 'provisioning', describeAction(request));
    state.addTask(request.type, reservation, allocation);
  }
}
