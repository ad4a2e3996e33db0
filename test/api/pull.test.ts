// The long-poll claim both pulling workers use (agents and runner hosts): take now, else wait for a
// wake and take again; a waiter that times out leaves nothing behind; stop wakes every waiter.
import test from 'ava';
import { LongPoll } from '../../api/pull.js';

test('work there already is taken without waiting', async (t) => {
  const pull = new LongPoll();
  t.deepEqual(await pull.claim(() => ['a'], 60_000), ['a']);
  t.is(pull.waiting, 0);
});

test('a wake makes a waiting claim take again', async (t) => {
  const pull = new LongPoll();
  const work: string[] = [];
  const claim = pull.claim(() => work.splice(0), 60_000);
  await new Promise((resolve) => setImmediate(resolve));
  t.is(pull.waiting, 1);
  work.push('a', 'b');
  pull.wake();
  t.deepEqual(await claim, ['a', 'b']);
  t.is(pull.waiting, 0);
});

test('a claim that times out takes once more and leaves no waiter behind', async (t) => {
  const pull = new LongPoll();
  let takes = 0;
  t.deepEqual(await pull.claim(() => (takes++, []), 10), []);
  t.is(takes, 2);
  t.is(pull.waiting, 0);
});

test('retake can refuse to take after the wait (the worker went away)', async (t) => {
  const pull = new LongPoll();
  let takes = 0;
  const claim = pull.claim(
    () => (takes++ === 0 ? [] : ['a']),
    60_000,
    () => false,
  );
  await new Promise((resolve) => setImmediate(resolve));
  pull.wake();
  t.deepEqual(await claim, []);
  t.is(takes, 1);
});

test('stop wakes every waiter, and later claims do not wait', async (t) => {
  const pull = new LongPoll();
  const claims = [pull.claim(() => [], 60_000), pull.claim(async () => [], 60_000)];
  await new Promise((resolve) => setImmediate(resolve));
  t.is(pull.waiting, 2);
  pull.stop();
  t.deepEqual(await Promise.all(claims), [[], []]);
  t.deepEqual(await pull.claim(() => [], 60_000), []);
  t.is(pull.waiting, 0);
});

test('a wake for one name wakes the claims waiting for that name and those that named none, not the others', async (t) => {
  const pull = new LongPoll();
  const takes = { a: 0, b: 0, any: 0 };
  const claims = [
    pull.claim(() => (takes.a++ === 0 ? [] : ['a']), 60_000, undefined, 'host-a'),
    pull.claim(() => (takes.b++ === 0 ? [] : ['b']), 60_000, undefined, 'host-b'),
    pull.claim(() => (takes.any++ === 0 ? [] : ['any']), 60_000),
  ];
  await new Promise((resolve) => setImmediate(resolve));
  t.is(pull.waiting, 3);
  pull.wake('host-a');
  t.deepEqual(await claims[0], ['a']);
  t.deepEqual(await claims[2], ['any']);
  t.is(pull.waiting, 1);
  t.is(takes.b, 1);
  pull.wake();
  t.deepEqual(await claims[1], ['b']);
  t.is(pull.waiting, 0);
});
