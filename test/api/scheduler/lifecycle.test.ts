// The reservation lifecycle table: every legal path is allowed, everything else is refused with an
// error that names the action and the state.
import test from 'ava';
import type { ReservationState } from '../../../protocol/api.js';
import { DomainError } from '../../../api/domain-error.js';
import { toApiError } from '../../../api/errors.js';
import { assertTransition, canTransition, isEnded, liveStates, transitions } from '../../../api/scheduler/lifecycle.js';

const states = Object.keys(transitions) as ReservationState[];

test('the happy path and its ends are allowed', (t) => {
  const path: ReservationState[] = ['queued', 'allocated', 'provisioning', 'ready', 'releasing', 'released'];
  for (let index = 1; index < path.length; index++) t.true(canTransition(path[index - 1], path[index]), `${path[index - 1]} → ${path[index]}`);
  for (const end of ['failed', 'expired', 'cancelled'] as const) t.true(canTransition('releasing', end));
  t.true(canTransition('queued', 'cancelled'));
  t.true(canTransition('queued', 'expired'));
});

test('ended states go nowhere, and live states are exactly the others', (t) => {
  for (const state of states) t.is(isEnded(state), !liveStates.includes(state), state);
  t.deepEqual(states.filter(isEnded).sort(), ['cancelled', 'expired', 'failed', 'released']);
});

test('an illegal transition names the action and the state', (t) => {
  const error = t.throws(() => assertTransition('renew', 'released', 'ready'), { instanceOf: DomainError });
  t.is(error!.code, 'illegal_transition');
  t.is(toApiError(error).status, 409);
  t.is(error!.message, 'cannot renew a reservation that is released');
  t.throws(() => assertTransition('grant', 'ready', 'allocated'));
  t.throws(() => assertTransition('ready', 'queued', 'ready'), { message: /queued/ });
});

test('no state can skip releasing on its way from holding machines to an end', (t) => {
  for (const holding of ['allocated', 'provisioning', 'ready'] as const) {
    for (const end of ['released', 'failed', 'expired', 'cancelled'] as const) t.false(canTransition(holding, end), `${holding} → ${end}`);
  }
});
