// Starvation through the API: a gang that has waited past queue.starvation and still does not fit
// holds back the free machines it matches from the requests behind it, and only those, until it is
// served.
import test from 'ava';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ReservationView } from '../../protocol/api.js';
import { startApi, testConfig } from '../helpers/api.js';

/** Static machines no agent ever visits. */
const nowhere = (name: string, type: string, index: number) =>
  `  - { name: ${name}, kind: static, labels: { type: ${type} }, settings: { address: 127.0.0.${index + 2}, user: ci, adminKey: /nonexistent } }`;

test('a starving gang holds back the machines it needs from a later request, not the others', async (t) => {
  const api = await startApi(
    testConfig(
      [
        'agent: { enabled: false }',
        'agents: { heartbeatTimeout: 1d }',
        'queue: { starvation: 1s }',
        'machines:',
        nowhere('t-1', 't', 0),
        nowhere('t-2', 't', 1),
        nowhere('u-1', 'u', 2),
      ].join('\n'),
    ),
  );
  t.teardown(() => api.close());
  const http = api.http();
  const reserve = async (spec: string, count = 1) =>
    (await http.post('v1/reservations', { json: { members: [{ role: 'main', spec: `type=${spec}`, count }] } })).body as ReservationView;
  const stateOf = async (view: ReservationView) => ((await http.get(`v1/reservations/${view.id}`)).body as ReservationView).state;

  const holder = await reserve('t');
  t.is(holder.state, 'allocated');
  const gang = await reserve('t', 2);
  t.is(gang.state, 'queued', 'one t machine is free, the gang needs two');
  await sleep(1500);

  const single = await reserve('t');
  t.is(single.state, 'queued', 'the free t machine is held back for the starving gang');
  const other = await reserve('u');
  t.is(other.state, 'allocated', 'the gang does not hold machines it cannot use');

  t.is((await http.delete(`v1/reservations/${holder.id}`)).statusCode, 200);
  t.is(await stateOf(gang), 'allocated', 'the gang gets both t machines once the second frees');
  t.is(await stateOf(single), 'queued');
  t.is((await http.delete(`v1/reservations/${gang.id}`)).statusCode, 200);
  t.is(await stateOf(single), 'allocated');
});
