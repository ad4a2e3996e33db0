// A silent lab host's machines are offline, and stay so across a restart of the API until its agent
// is heard; then they return to the state they had (here: one in maintenance, one available). The
// agent is played over HTTP with an agent token, as test/api/roles.test.ts does.
import test from 'ava';
import type { AgentTask, AgentView, ExplainView, MachineView, ReservationExplainView, ReservationView } from '../../protocol/api.js';
import { startApi, testConfig } from '../helpers/api.js';
import { runPaddock } from '../helpers/server.js';
import { waitFor } from '../helpers/wait.js';

const yaml = `
agent: { enabled: false }
agents: { heartbeatTimeout: 1s }
reaper: { interval: 0.1 }
machines:
  - { name: m1, kind: static, labHost: lab-a, labels: { type: box }, settings: { address: 127.0.9.1, user: ci, adminKey: /nonexistent } }
  - { name: m2, kind: static, labHost: lab-a, labels: { type: box }, settings: { address: 127.0.9.2, user: ci, adminKey: /nonexistent } }
`;

test('offline machines stay offline across a restart until their agent is heard, then return to their state', async (t) => {
  const config = testConfig(yaml);
  const first = await startApi(config);
  const admin = first.http();
  t.is((await admin.post('v1/machines/m2/maintenance', { json: { reason: 'cable' } })).statusCode, 200);
  const machine = async (http: typeof admin, name: string) => (await http.get(`v1/machines/${name}`)).body as MachineView;
  // No agent for lab-a was ever heard: a heartbeat timeout after the start, its machines go offline.
  await waitFor(async () => (await machine(admin, 'm1')).state === 'offline' && (await machine(admin, 'm2')).state === 'offline', 120_000, 'offline');
  const since = (await machine(admin, 'm1')).offlineSince;
  t.truthy(since);
  await first.server.close();

  const second = await startApi(config);
  t.teardown(() => second.close());
  const again = second.http();
  const m1 = await machine(again, 'm1');
  t.is(m1.state, 'offline', 'still offline after the restart');
  t.is(m1.offlineSince, since, 'since the same time');
  t.regex(m1.reason ?? '', /lab host lab-a is silent/);
  const listed = (await again.get('v1/agents')).body as AgentView[];
  t.deepEqual(
    listed.map((agent) => [agent.name, agent.state, agent.lastHeard, agent.machines]),
    [['lab-a', 'silent', undefined, ['m1', 'm2']]],
  );
  t.deepEqual(listed[0].warnings, ['not heard since the API started']);

  // lab-a's agent claims, with a clock 20 s fast and an old version: its machines are back, and it is told about.
  const token = ((await again.post('v1/tokens', { json: { name: 'lab-a', role: 'agent' } })).body as { token: string }).token;
  const agent = second.http(token);
  const clock = new Date(Date.now() + 20_000).toISOString();
  const claimed = await agent.post('v1/agent/claim', { json: { agent: 'lab-a', kinds: ['static'], resume: true, version: '0.0.9', clock } });
  t.is(claimed.statusCode, 200, JSON.stringify(claimed.body));
  t.is((await machine(again, 'm1')).state, 'available');
  t.is((await machine(again, 'm1')).offlineSince, undefined);
  const m2 = await machine(again, 'm2');
  t.is(m2.state, 'maintenance', 'back to the state it had');
  t.is(m2.reason, 'cable');
  const [view] = (await again.get('v1/agents')).body as AgentView[];
  t.is(view.state, 'online');
  t.is(view.version, '0.0.9');
  t.truthy(view.clockOffsetSeconds! > 15);
  t.deepEqual(view.warnings, [`version 0.0.9 is older than the API's 0.1.0`, `its clock is ${view.clockOffsetSeconds}s ahead of the API's (more than 5s)`]);
  t.is((await agent.get('v1/agents')).statusCode, 403, 'agents ls is for admins');
});

/** The same lab-a, never silent here, and lab-b with one machine. */
const twoLabs = `${yaml.replace('heartbeatTimeout: 1s', 'heartbeatTimeout: 1d')}  - { name: b1, kind: static, labHost: lab-b, labels: { type: other }, settings: { address: 127.0.9.3, user: ci, adminKey: /nonexistent } }
`;

test('a machine its agent reports unreachable is not matched until a heartbeat no longer says so; another lab host cannot mark it', async (t) => {
  const config = testConfig(twoLabs);
  const first = await startApi(config);
  const admin = first.http();
  const tokenOf = async (name: string) => ((await admin.post('v1/tokens', { json: { name, role: 'agent' } })).body as { token: string }).token;
  const [labA, labB] = [first.http(await tokenOf('lab-a')), first.http(await tokenOf('lab-b'))];
  const user = first.http(((await admin.post('v1/tokens', { json: { name: 'erin', role: 'user' } })).body as { token: string }).token);
  const machine = async (name: string) => (await admin.get(`v1/machines/${name}`)).body as MachineView;
  const beat = (http: typeof admin, body: object) => http.post('v1/agent/heartbeat', { json: { version: '0.1.0', ...body } });

  const reported = await beat(labA, { agent: 'lab-a', problems: [{ machine: 'm1', reason: 'no such serial device /dev/ttyUSB9' }] });
  t.is(reported.statusCode, 200, JSON.stringify(reported.body));
  const labAView = async (http: typeof admin) => ((await http.get('v1/agents')).body as AgentView[]).find((agent) => agent.name === 'lab-a')!;
  const firstHeard = Date.parse((await labAView(admin)).lastHeard!);
  const m1 = await machine('m1');
  t.is(m1.state, 'available', 'its state is kept');
  t.is(m1.unreachable?.reason, 'no such serial device /dev/ttyUSB9');
  t.truthy(m1.unreachable?.since);
  t.is((await machine('m2')).unreachable, undefined);

  // Only m2 is handed out; the next request waits, and explain says m1 is unreachable.
  const members = [{ role: 'main', spec: 'type=box' }];
  const granted = (await user.post('v1/reservations', { json: { members } })).body as ReservationView;
  t.is(granted.allocations[0]?.machine, 'm2');
  const waiting = (await user.post('v1/reservations', { json: { members } })).body as ReservationView;
  t.is(waiting.state, 'queued');
  const explained = (await user.get(`v1/reservations/${waiting.id}/explain`)).body as ReservationExplainView;
  t.deepEqual(explained.members[0].matches, ['m1', 'm2']);
  t.deepEqual(explained.members[0].available, []);
  t.deepEqual(
    explained.members[0].unavailable.map((entry) => [entry.machine, entry.state]),
    [
      ['m1', 'available'],
      ['m2', 'reserved'],
    ],
  );
  t.regex(explained.members[0].unavailable[0].reason, /^unreachable: its lab host lab-a reports since \S+: no such serial device \/dev\/ttyUSB9$/);
  t.is(explained.members[0].unavailable[1].reason, 'reserved');
  const bySpec = (await user.post('v1/explain', { json: { spec: 'type=box' } })).body as ExplainView;
  t.deepEqual(bySpec.unavailable, explained.members[0].unavailable);

  // Hostile heartbeats change nothing: lab-b's agent naming lab-a's machines (in its own name or
  // in lab-a's), a list mixing machines, an admin speaking for lab-b, machines that do not exist,
  // oversized lists and reasons, control characters, one machine twice.
  const says = (agent: string, ...problems: [string, string][]) => ({ agent, problems: problems.map(([machine, reason]) => ({ machine, reason })) });
  const lift = says('lab-a');
  const refused: [typeof admin, object, number][] = [
    [labB, says('lab-b'), 200], // lab-b's own, empty: touches only lab-b's machines
    [labB, says('lab-b', ['m2', 'forged']), 403],
    [labB, says('lab-b', ['b1', 'mine'], ['m2', 'forged']), 403],
    [labB, lift, 403],
    [admin, says('lab-b', ['m2', 'forged']), 403],
    [labA, says('lab-a', ['nosuch', 'x']), 403],
    [labA, says('lab-a', ...Array.from({ length: 1025 }, (_, index): [string, string] => [`m${index}`, 'x'])), 400],
    [labA, says('lab-a', ['m2', 'x'.repeat(501)]), 400],
    [labA, says('lab-a', ['m2', 'red \u001b[31m alert']), 400],
    [labA, says('lab-a', ['m2', 'two\nlines']), 400],
    [labA, says('lab-a', ['m2', '']), 400],
    [labA, says('lab-a', ['../m2', 'x']), 400],
    [labA, says('lab-a', ['m2', 'x'], ['m2', 'y']), 400],
    [labA, { agent: 'lab-a', problems: [{ machine: 'm2', reason: 'x', extra: 1 }] }, 400],
    // An agent of lab-a serving only qemu speaks for no static machine: it neither marks nor lifts one.
    [labA, { ...says('lab-a', ['m2', 'x']), kinds: ['qemu'] }, 403],
    [labA, { ...lift, kinds: ['qemu'] }, 200],
  ];
  for (const [http, body, status] of refused) {
    const answer = await beat(http, body);
    t.is(answer.statusCode, status, `${JSON.stringify(body).slice(0, 200)}: ${JSON.stringify(answer.body)}`);
  }
  t.is((await machine('m1')).unreachable?.reason, 'no such serial device /dev/ttyUSB9', 'still marked');
  t.is((await machine('m2')).unreachable, undefined, 'not marked by anyone else');
  t.is((await machine('b1')).unreachable, undefined);
  t.is(((await user.get(`v1/reservations/${waiting.id}`)).body as ReservationView).state, 'queued');

  // A heartbeat without problems (an agent that has not checked yet) leaves the mark; the mark and
  // its time survive a restart of the API.
  t.is((await beat(labA, { agent: 'lab-a' })).statusCode, 200);
  const since = (await machine('m1')).unreachable?.since;
  t.truthy(since);
  const lastHeard = Date.parse((await labAView(admin)).lastHeard!);
  await first.server.close();
  const second = await startApi(config);
  t.teardown(() => second.close());
  const again = second.http();
  // When lab-a was last heard (stored at most once a second) and its version are still shown.
  const shown = await labAView(again);
  t.true(
    Date.parse(shown.lastHeard!) >= firstHeard && Date.parse(shown.lastHeard!) <= lastHeard,
    `${shown.lastHeard} between the first and the last heartbeat`,
  );
  t.is(shown.version, '0.1.0');
  t.deepEqual(shown.warnings, ['not heard since the API started', 'it cannot reach 1 of its machines: m1 (paddock machines ls says why)']);
  const listed = await runPaddock(second.url, second.adminToken, ['agents', 'ls']);
  t.is(listed.code, 0, listed.stderr);
  t.regex(listed.stdout, new RegExp(`^lab-a\\s+online\\s+0\\.1\\.0\\s+${shown.lastHeard!.replaceAll('.', '\\.')}\\s+m1,m2\\s`, 'm'));
  t.regex(listed.stdout, /^lab-b\s+online\s+0\.1\.0\s+\d{4}-\S+Z\s+b1/m, 'lab-b, heard once');
  const restarted = (await again.get('v1/machines/m1')).body as MachineView;
  t.deepEqual(restarted.unreachable, { since: since!, reason: 'no such serial device /dev/ttyUSB9' });
  t.is(((await again.get(`v1/reservations/${waiting.id}`)).body as ReservationView).state, 'queued', 'still waiting after the restart');

  // A new reason keeps the time; a heartbeat without m1 lifts it, and the waiting request gets it
  // (an admin speaks for lab-a here).
  const asAdmin = (body: object) => again.post('v1/agent/heartbeat', { json: body });
  t.is((await asAdmin({ agent: 'lab-a', problems: [{ machine: 'm1', reason: 'the PDU at 10.0.0.9 does not answer' }] })).statusCode, 200);
  t.deepEqual(((await again.get('v1/machines/m1')).body as MachineView).unreachable, { since: since!, reason: 'the PDU at 10.0.0.9 does not answer' });
  t.is((await asAdmin(lift)).statusCode, 200);
  t.is(((await again.get('v1/machines/m1')).body as MachineView).unreachable, undefined);
  const got = (await again.get(`v1/reservations/${waiting.id}`)).body as ReservationView;
  t.is(got.state, 'allocated');
  t.is(got.allocations[0].machine, 'm1');
});

test('explain says which matching machines are offline because their lab host is silent; heard again, its marks hold from the first heartbeat', async (t) => {
  const api = await startApi(testConfig(yaml));
  t.teardown(() => api.close());
  const admin = api.http();
  await waitFor(async () => ((await admin.get('v1/machines/m1')).body as MachineView).state === 'offline', 120_000, 'offline');
  const waiting = (await admin.post('v1/reservations', { json: { members: [{ role: 'main', spec: 'type=box' }] } })).body as ReservationView;
  t.is(waiting.state, 'queued');
  const explained = (await admin.get(`v1/reservations/${waiting.id}/explain`)).body as ReservationExplainView;
  t.deepEqual(explained.members[0].available, []);
  const m1 = explained.members[0].unavailable.find((entry) => entry.machine === 'm1');
  t.is(m1?.state, 'offline');
  t.regex(m1?.reason ?? '', /^offline: its lab host lab-a is silent since \d{4}-\d\d-\d\dT/);

  // lab-a is heard again, with m1 it cannot reach: m2 is granted, never m1 (the marks come first).
  const heard = await admin.post('v1/agent/heartbeat', { json: { agent: 'lab-a', problems: [{ machine: 'm1', reason: 'no such serial device' }] } });
  t.is(heard.statusCode, 200, JSON.stringify(heard.body));
  const granted = (await admin.get(`v1/reservations/${waiting.id}`)).body as ReservationView;
  // (lab-a may be silent again by the time this is read: what counts is which machine was granted.)
  t.deepEqual(
    granted.allocations.map((allocation) => allocation.machine),
    ['m2'],
  );
});

test('provisioning cut short by a silent lab host fails as lab_host_offline, not counted against the machine; its release waits for the agent and completes when it is back', async (t) => {
  const api = await startApi(
    testConfig(`
agent: { enabled: false }
agents: { heartbeatTimeout: 3s }
reaper: { interval: 0.1 }
health: { quarantineAfter: 1 }
machines:
  - { name: m1, kind: static, labHost: lab-a, labels: { type: box }, settings: { address: 127.0.9.1, user: ci, adminKey: /nonexistent } }
`),
  );
  t.teardown(() => api.close());
  const admin = api.http();
  const agent = api.http(((await admin.post('v1/tokens', { json: { name: 'lab-a', role: 'agent' } })).body as { token: string }).token);
  const machine = async () => (await admin.get('v1/machines/m1')).body as MachineView;
  // lab-a's agent is heard until it takes the provisioning task, then says nothing more.
  let beating = true;
  const heartbeats = (async () => {
    while (beating) {
      await agent.post('v1/agent/heartbeat', { json: { agent: 'lab-a' } });
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  })();
  const created = (await admin.post('v1/reservations', { json: { members: [{ role: 'main', spec: 'type=box' }] } })).body as ReservationView;
  const claimed = (await agent.post('v1/agent/claim', { json: { agent: 'lab-a', kinds: ['static'], wait: 30 } })).body as { tasks: AgentTask[] };
  beating = false;
  await heartbeats;
  t.deepEqual(
    claimed.tasks.map((task) => [task.action, task.machine.name]),
    [['provision', 'm1']],
  );
  const allocation = claimed.tasks[0].id;

  const reservation = async () => (await admin.get(`v1/reservations/${created.id}`)).body as ReservationView;
  await waitFor(async () => (await reservation()).state === 'releasing', 120_000, 'provisioning failed');
  const failed = await reservation();
  t.is(failed.allocations[0].failure?.code, 'lab_host_offline');
  t.is(failed.allocations[0].failure?.fault, 'infrastructure');
  t.is(failed.allocations[0].state, 'releasing', 'its release waits for the agent: nothing else can undo what it did on m1');
  t.is((await machine()).failures, 0, 'not counted against the machine');
  t.is((await machine()).state, 'offline');

  // A late report of the cut-short provisioning is not the agent's to make any more.
  const late = await agent.post(`v1/agent/tasks/${encodeURIComponent(allocation)}/report`, {
    json: { agent: 'lab-a', report: { kind: 'failed', reason: 'no SSH login', fault: 'infrastructure', code: 'ssh_timeout' } },
  });
  t.is(late.statusCode, 403);
  t.is((await reservation()).state, 'releasing');

  // The agent comes back (its first claim resumes): it gets the release, and the release completes.
  const resumed = (await agent.post('v1/agent/claim', { json: { agent: 'lab-a', kinds: ['static'], resume: true } })).body as { tasks: AgentTask[] };
  t.deepEqual(
    resumed.tasks.map((task) => [task.action, task.id]),
    [['release', allocation]],
  );
  const released = await agent.post(`v1/agent/tasks/${encodeURIComponent(allocation)}/report`, { json: { agent: 'lab-a', report: { kind: 'released' } } });
  t.is(released.statusCode, 204, JSON.stringify(released.body));
  const ended = await reservation();
  t.is(ended.state, 'failed');
  t.is(ended.allocations[0].state, 'released');
  const m1 = await machine();
  t.is(m1.state, 'available', 'not quarantined (quarantineAfter: 1)');
  t.is(m1.failures, 0);
});
