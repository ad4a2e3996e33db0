// A machine's health: every provisioning is recorded as it ends (outcome, code, stages), the score
// over the last `health.window` leaves request faults out, shows in the machine views, is matched as
// the capacity `health`, and quarantines the machine when it falls under `health.minScore`; the
// history survives a restart of the API. The machines are static hosts on real sshd servers served
// by the embedded agent; a provisioning fails for real: the infrastructure's fault when m1's key file
// is one its tenant could rewrite, the request's when it names an image Paddock does not have (on a
// QEMU slot, which fails before it starts any VM).
import test from 'ava';
import type { ExplainView, MachineView, ReservationView } from '../../protocol/api.js';
import { startApi, testConfig, type JsonClient } from '../helpers/api.js';
import { labApi, provision, release, staticLab } from '../helpers/static-lab.js';

const health = 'health: { quarantineAfter: 10, window: 4, minScore: 0.5, minSamples: 3 }';
/** A QEMU slot for request faults: it never gets as far as starting QEMU. */
const slot = '  - { name: q1, kind: qemu, labels: { type: vm, arch: x86_64 }, capacities: { cpus: 1, ram: 256MiB } }';

/** Machines no agent serves, for what needs only the inventory. */
const machines = `
agent: { enabled: false }
machines:
  - { name: m1, kind: static, labHost: lab-a, labels: { type: box, slot: a }, settings: { address: 127.0.9.1, user: ci, adminKey: /nonexistent } }
  - { name: m2, kind: static, labHost: lab-a, labels: { type: box, slot: b }, settings: { address: 127.0.9.2, user: ci, adminKey: /nonexistent } }
`;

const machine = async (http: JsonClient, name: string, limit?: number) =>
  (await http.get(`v1/machines/${name}`, limit ? { searchParams: { limit } } : {})).body as MachineView;

test('provisionings are recorded with outcome, code and stages; the score leaves request faults out, is matched in specs, quarantines, and survives a restart', async (t) => {
  const lab = await staticLab(t);
  const yaml = `${health}\n${lab.machines}\n${slot}`;
  const dataDir = testConfig(yaml).dataDir;
  const first = await labApi(yaml, dataDir);
  let restarted = false;
  t.teardown(async () => {
    if (!restarted) await first.api.close();
  });
  const a = 'type=box slot=a';
  await release(first, (await provision(first, a)).id);
  lab.breakKeyFile();
  t.is((await provision(first, a)).state, 'failed');
  lab.mendKeyFile();
  await release(first, (await provision(first, a)).id);

  // A bad image three times on q1: request faults, recorded but not counted. Counted, three
  // failures of three would quarantine it (minSamples 3).
  for (let round = 0; round < 3; round++) t.is((await provision(first, 'type=vm', 'nosuch:1')).state, 'failed');
  const q1 = await machine(first.user, 'q1');
  t.is(q1.state, 'available');
  t.is(q1.health, 1);
  t.deepEqual(
    q1.provisionings!.map((run) => [run.outcome, run.code, run.fault, run.counted, run.owner, run.image]),
    Array.from({ length: 3 }, () => ['failed', 'image_not_found', 'request', false, 'erin', 'nosuch:1']),
  );

  // Newest first, with who, what and how each stage went; 2 of 3 came up: 0.66.
  const m1 = await machine(first.user, 'm1');
  t.is(m1.health, 0.66);
  t.deepEqual(
    m1.provisionings!.map((run) => [run.outcome, run.code, run.fault, run.stage, run.counted, run.owner, run.qualification]),
    [
      ['ready', undefined, undefined, undefined, true, 'erin', false],
      ['failed', 'infrastructure_failed', 'infrastructure', 'sshReady', true, 'erin', false],
      ['ready', undefined, undefined, undefined, true, 'erin', false],
    ],
  );
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
      ['q1', 1, undefined],
    ],
  );

  // health>=0.9 takes m2 whichever machine is lower in name; with m2 busy it waits, and explain says why m1 does not do.
  const healthy = await provision(first, 'type=box health>=0.9');
  t.is(healthy.allocations[0].machine, 'm2');
  const waiting = (await first.user.post('v1/reservations', { json: { members: [{ role: 'main', spec: 'type=box health>=0.9' }] } })).body as ReservationView;
  t.is(waiting.state, 'queued');
  const explained = (await first.user.post('v1/explain', { json: { spec: 'type=box health>=0.9' } })).body as ExplainView;
  t.deepEqual(explained.rejected, [
    { machine: 'm1', term: 'health>=0.9', reason: 'health is 0.66, needs >= 0.9' },
    { machine: 'q1', term: 'type=box', reason: 'type is vm, needs box' },
  ]);
  t.is(
    (await first.user.post('v1/reservations', { json: { members: [{ role: 'main', spec: 'type=box health>=1.01' }] } })).statusCode,
    422,
    'no machine could ever',
  );
  await first.user.delete(`v1/reservations/${waiting.id}`);
  await release(first, healthy.id);

  // Two more failures: 1 of the last 4 came up, under 0.5 over 4 (>= 3) samples: quarantined once released.
  lab.breakKeyFile();
  await provision(first, a);
  t.is((await machine(first.user, 'm1')).state, 'available', '2 of 4: not under 0.5');
  const last = await provision(first, a);
  const quarantined = await machine(first.user, 'm1');
  t.is(quarantined.state, 'quarantined');
  t.is(quarantined.health, 0.25);
  t.regex(
    quarantined.reason ?? '',
    /^health score 0\.25 is under health\.minScore 0\.5: 3 of its last 4 provisionings failed; last: m1: adding the key of (\S+) .* unsafe owner or mode on/,
  );
  t.is(/adding the key of (\S+)/.exec(quarantined.reason ?? '')?.[1], last.id, 'the last failure is named');
  restarted = true;
  await first.api.server.close();
  lab.mendKeyFile();

  // After a restart: the same history, score and state.
  const second = await labApi(yaml, dataDir);
  t.teardown(() => second.api.close());
  const again = await machine(second.user, 'm1', 10);
  t.is(again.state, 'quarantined');
  t.is(again.health, 0.25);
  t.deepEqual(
    again.provisionings!.map((run) => run.code ?? run.outcome),
    ['infrastructure_failed', 'infrastructure_failed', 'ready', 'infrastructure_failed', 'ready'],
  );
  t.is((await machine(second.user, 'm1')).provisionings!.length, 4, 'the health window by default');
  t.is((await machine(second.user, 'q1')).provisionings!.length, 3, 'request faults are kept too');
  const explainAgain = (await second.user.post('v1/explain', { json: { spec: 'health>=0.25 slot=a' } })).body as ExplainView;
  t.deepEqual(explainAgain.matches, ['m1'], 'the score is a capacity again after the restart');

  // An admin takes it back: the score stays what the history says, and a spec asking for better leaves it alone.
  t.is((await second.admin.post('v1/machines/m1/activate')).statusCode, 200);
  const skipped = await provision(second, 'type=box health>=0.5');
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
