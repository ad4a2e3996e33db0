// The reservation lifecycle as one transition table. Every change of state goes through
// `transition`, which refuses what the table does not allow with an error naming the action and the
// state, so no code path can, say, release a reservation twice into two different end states.
import type { ReservationState } from '../../protocol/api.js';
import { DomainError } from '../domain-error.js';

export const transitions: Record<ReservationState, readonly ReservationState[]> = {
  queued: ['allocated', 'cancelled', 'expired', 'failed'],
  allocated: ['provisioning', 'releasing'],
  provisioning: ['ready', 'releasing'],
  ready: ['releasing'],
  // releasing ends in the outcome chosen when the release began; `queued` when the cloud was full
  // and the request waits again.
  releasing: ['released', 'failed', 'expired', 'cancelled', 'queued'],
  released: [],
  failed: [],
  expired: [],
  cancelled: [],
};

export const liveStates: readonly ReservationState[] = ['queued', 'allocated', 'provisioning', 'ready', 'releasing'];

export function isEnded(state: ReservationState): boolean {
  return transitions[state].length === 0;
}

export function canTransition(from: ReservationState, to: ReservationState): boolean {
  return transitions[from].includes(to);
}

export function assertTransition(action: string, from: ReservationState, to: ReservationState): void {
  if (!canTransition(from, to)) {
    throw new DomainError('illegal_transition', `cannot ${action} a reservation that is ${from}`, { action, state: from, to });
  }
}
