// A machine's health: every provisioning is recorded as it ends (outcome, code, stages), the score
// over the last `health.window` leaves request faults out, shows in the machine views, is matched as
// the capacity `health`, and quarantines the machine when it falls under `health.minScore`; the
// history survives a restart of the API. The lab host's agent is played over HTTP with an agent
// token (as test/api/lab-hosts.test.ts does), so each outcome is exactly the one reported.
import test from 'ava';
import type { ExplainView, MachineView, ReservationView } from '../../protocol/api.js';
import { startApi, testConfig, type JsonClient } from '../helpers/api.js';
import { lab, playedLabMachines as machines, provision, release, type Outcome } from '../helpers/played-agent.js';

const yaml = `health: { quarantineAfter: 10, window: 4, minScore: 0.5, minSamples: 3 }\n${machines}`;

const ready: Outcome = { stages: ['addressKnown', 'sshReady'], kind: 'ready' };
const sshTimeout: Outcome = { stages: ['addressKnown'], kind: 'failed', fault: 'infrastructure', code: 'ssh_timeout', stage: 'sshReady' };
const badImage: Outcome = { stages: [], kind: 'failed', fault: 'request', code: 'image_corrupt' };

const machine = async (http: JsonClient, name: string, limit?: number) =>
  (await http.get(`v1/machines/${name}`, limit ? { searchParams: { limit } } : {})).body as MachineView;

test('provisionings are recorded with outcome, code and stages; the score leaves request faults out, is matched in specs, quarantines, and survives a restart', async (t) => {
  const config = testConfig(yaml);
  const first = await lab(await startApi(config));
  const a = 'type=box slot=a';
  await release(first, (await provision(first, a, ready)).id);
  t.is((await provision(first, a, sshTimeout)).state, 'failed');
  t.is((await provision(first, a, badImage, 'nosuch:1')).state, 'failed');
  await release(first, (await provision(first, a, ready)).id);

  // Newest first, with who, what and how each stage went; 2 of 3 counted came up: 0.66.
  const m1 = await machine(first.user, 'm1');
  t.is(m1.health, 0.66);
  t.deepEqual(
    m1.provisionings!.map((run) => [run.outcome, run.code, run.fault, run.stage, run.counted, run.owner, run.qualification]),
    [
      ['ready', undefined, undefined, undefined, true, 'erin', false],
      ['failed', 'image_corrupt', 'request', undefined, false, 'erin', false],
      ['failed', 'ssh_timeout', 'infrastructure', 'sshReady', true, 'erin', false],
      ['ready', undefined, undefined, undefined, true, 'erin', false],
    ],
  );
  t.is(m1.provisionings![1].image, 'nosuch:1');
  t.deepEqual(
    m1.provisionings![0].stages.map((stage) => stage.stage),
    ['addressKnown', 'sshReady'],
  );
  for (const run of m1.provisionings!) {
    t.true(run.seconds >= 0 && Date.parse(run.endedAt) >= Date.parse(run.startedAt));
    for (const stage of run.stages) t.true(stage.seconds >= 0);
  }
  t.true(m1.provisionings![0].stages[1].seconds > 0, 'sshReady came after addressKnown');
  t.deepEqual(m1.capacities, {}, 'the score is not shown among the configured capacities');
  t.notRegex(JSON.stringify(m1), /PRIVATE KEY|ssh-ed25519/, 'no keys in the history');
  const listed = (await first.user.get('v1/machines')).body as MachineView[];
  t.deepEqual(
    listed.map((each) => [each.name, each.health, each.provisionings]),
    [
      ['m1', 0.66, undefined],
      ['m2', 1, undefined],
    ],
  );

  // health>=0.9 takes m2 whichever machine is lower in name; with m2 busy it waits, and explain says why m1 does not do.
  const healthy = await provision(first, 'type=box health>=0.9', ready);
  t.is(healthy.allocations[0].machine, 'm2');
  const waiting = (await first.user.post('v1/reservations', { json: { members: [{ role: 'main', spec: 'type=box health>=0.9' }] } })).body as ReservationView;
  t.is(waiting.state, 'queued');
  const explained = (await first.user.post('v1/explain', { json: { spec: 'type=box health>=0.9' } })).body as ExplainView;
  t.deepEqual(explained.rejected, [{ machine: 'm1', term: 'health>=0.9', reason: 'health is 0.66, needs >= 0.9' }]);
  t.is(
    (await first.user.post('v1/reservations', { json: { members: [{ role: 'main', spec: 'type=box health>=1.01' }] } })).statusCode,
    422,
    'no machine could ever',
  );
  await first.user.delete(`v1/reservations/${waiting.id}`);
  await release(first, healthy.id);

  // Two more failures: 1 of the last 4 counted came up, under 0.5 over 4 (>= 3) samples: quarantined once released.
  await provision(first, a, sshTimeout);
  t.is((await machine(first.user, 'm1')).state, 'available', '2 of 4: not under 0.5');
  await provision(first, a, { ...sshTimeout, code: 'console_silent' });
  const quarantined = await machine(first.user, 'm1');
  t.is(quarantined.state, 'quarantined');
  t.is(quarantined.health, 0.25);
  t.is(quarantined.reason, 'health score 0.25 is under health.minScore 0.5: 3 of its last 4 provisionings failed; last: console_silent here');
  await first.api.server.close();

  // After a restart: the same history, score and state.
  const second = await lab(await startApi(config));
  t.teardown(() => second.api.close());
  const again = await machine(second.user, 'm1', 10);
  t.is(again.state, 'quarantined');
  t.is(again.health, 0.25);
  t.deepEqual(
    again.provisionings!.map((run) => run.code ?? run.outcome),
    ['console_silent', 'ssh_timeout', 'ready', 'image_corrupt', 'ssh_timeout', 'ready'],
  );
  t.is((await machine(second.user, 'm1')).provisionings!.length, 4, 'the health window by default');
  const explainAgain = (await second.user.post('v1/explain', { json: { spec: 'health>=0.25 slot=a' } })).body as ExplainView;
  t.deepEqual(explainAgain.matches, ['m1'], 'the score is a capacity again after the restart');

  // An admin takes it back: the score stays what the history says, and a spec asking for better leaves it alone.
  t.is((await second.admin.post('v1/machines/m1/activate')).statusCode, 200);
  const skipped = await provision(second, 'type=box health>=0.5', ready);
  t.is(skipped.allocations[0].machine, 'm2');
  await release(second, skipped.id);
});

test('machine names and parameters that are not right get clear errors with stable codes', async (t) => {
  const api = await startApi(testConfig(machines));
  t.teardown(() => api.close());
  const http = api.http();
  const cases: [string, number, string][] = [
    ['v1/machines/nosuch', 404, 'not_found'],
    ['v1/machines/..%2Fm1', 400, 'invalid_parameter'],
    ['v1/machines/.m1', 400, 'invalid_parameter'],
    ['v1/machines/m1%00', 400, 'invalid_parameter'],
    ['v1/machines/m1?limit=0', 400, 'invalid_request'],
    ['v1/machines/m1?limit=101', 400, 'invalid_request'],
    ['v1/machines/m1?limit=two', 400, 'invalid_request'],
    ['v1/machines?retired=maybe', 400, 'invalid_parameter'],
  ];
  for (const [path, status, code] of cases) {
    const answer = await http.get(path);
    t.is(answer.statusCode, status, path);
    t.is((answer.body as { code: string }).code, code, path);
  }
  const notFound = await http.post('v1/machines/nosuch/retire', { json: {} });
  t.is(notFound.statusCode, 404);
  t.is((await http.post('v1/machines/m1/retire', { json: { reason: 'two\nlines' } })).statusCode, 400);
  t.is((await http.post('v1/machines/m1/retire', { json: { why: 'x' } })).statusCode, 400);
  t.is((await machine(http, 'm1')).state, 'available', 'nothing retired by bad requests');
});

test('a config naming health as a capacity or a label is refused', (t) => {
  for (const [what, yamlText] of [
    ['capacity', machines.replace('labels: { type: box, slot: a }', 'labels: { type: box }, capacities: { health: 1 }')],
    ['label', machines.replace('slot: a', 'health: good')],
  ]) {
    const error = t.throws(() => testConfig(yamlText), undefined, what);
    t.regex(error?.message ?? '', /health is reserved: the machine's health score/, what);
  }
});
