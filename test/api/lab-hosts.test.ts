// A silent lab host's machines are offline, and stay so across a restart of the API until its agent
// is heard; then they return to the state they had (here: one in maintenance, one available). The
// agent is played over HTTP with an agent token, as test/api/roles.test.ts does.
import test from 'ava';
import type { AgentView, MachineView } from '../../protocol/api.js';
import { startApi, testConfig } from '../helpers/api.js';
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
