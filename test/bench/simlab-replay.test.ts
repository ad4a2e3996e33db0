// The replay of the stored history that ends the simlab benchmark: it must find a machine granted
// while another reservation held it, and must not take a retry, a member waiting for a machine or
// a machine released and granted again for one.
import test from 'ava';
import { queueTimes, replayHistory, type HistoryEvent } from '../../bench/simlab/replay.js';

let nextId = 1;
const at = (ms: number) => new Date(Date.UTC(2026, 0, 1) + ms).toISOString();
function event(reservationId: string, type: string, to: string, options: { machine?: string; from?: string; ms?: number } = {}): HistoryEvent {
  return { id: nextId++, reservationId, at: at(options.ms ?? 0), type, from: options.from ?? null, to, machine: options.machine ?? null, reason: null };
}

test('a machine granted, released and granted again is no double allocation', (t) => {
  const replay = replayHistory([
    event('r-1', 'allocation', 'pending', { machine: 'm1' }),
    event('r-1', 'allocation', 'provisioning', { machine: 'm1', from: 'pending' }),
    event('r-1', 'allocation', 'released', { machine: 'm1', from: 'releasing' }),
    event('r-2', 'allocation', 'pending', { machine: 'm1' }),
    event('r-2', 'allocation', 'released', { machine: 'm1', from: 'pending' }),
  ]);
  t.like(replay, { events: 5, grants: 2, releases: 2 });
  t.deepEqual(replay.doubleAllocations, []);
  t.deepEqual(replay.strayReleases, []);
});

test('a machine granted while another reservation holds it is found, with both reservations', (t) => {
  const first = event('r-1', 'allocation', 'pending', { machine: 'm1' });
  const second = event('r-2', 'allocation', 'pending', { machine: 'm1' });
  const replay = replayHistory([first, event('r-3', 'allocation', 'pending', { machine: 'm2' }), second]);
  t.deepEqual(replay.doubleAllocations, [{ machine: 'm1', eventId: second.id, reservationId: 'r-2', holder: 'r-1' }]);
});

test('a retry moves a member to another machine; the released member that waited held none', (t) => {
  const replay = replayHistory([
    event('r-1', 'allocation', 'pending', { machine: 'm1' }),
    event('r-1', 'allocation', 'releasing', { machine: 'm1', from: 'provisioning' }),
    event('r-1', 'allocation', 'waiting'),
    // The member that waited names the machine it failed on, which its old allocation still holds.
    event('r-1', 'allocation', 'released', { machine: 'm1', from: 'waiting' }),
    event('r-2', 'allocation', 'pending', { machine: 'm1' }),
  ]);
  t.is(replay.doubleAllocations.length, 1);
  t.is(replay.strayReleases.length, 0);
});

test('a release by a reservation that did not hold the machine is counted apart', (t) => {
  const replay = replayHistory([
    event('r-1', 'allocation', 'pending', { machine: 'm1' }),
    event('r-2', 'allocation', 'released', { machine: 'm1', from: 'releasing' }),
  ]);
  t.like(replay.strayReleases[0], { machine: 'm1', reservationId: 'r-2', holder: 'r-1' });
  t.deepEqual(replay.doubleAllocations, []);
});

test('time in queue runs from the request to the grant, for the reservations asked about only', (t) => {
  const events = [
    event('r-1', 'state', 'queued', { ms: 0 }),
    event('r-2', 'state', 'queued', { ms: 5 }),
    event('r-1', 'state', 'allocated', { from: 'queued', ms: 40 }),
    event('r-2', 'state', 'allocated', { from: 'queued', ms: 5 }),
    event('r-3', 'state', 'queued', { ms: 0 }),
  ];
  t.deepEqual(queueTimes(events, new Set(['r-1', 'r-2', 'r-3'])), [40, 0]);
  t.deepEqual(queueTimes(events, new Set(['r-2'])), [0]);
});
