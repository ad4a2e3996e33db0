// An agent's claim whose connection goes away while its answer is being made (the agent killed, a
// network cut, the agent moving to another API server) loses nothing: the tasks it took go back,
// and the lab host's next claim gets them. The answer is held at the commit by a lock on the
// database, the claim's connection is cut meanwhile, then the lock is let go.
import http from 'node:http';
import test from 'ava';
import type { AgentTask, ReservationView } from '../../protocol/api.js';
import { startApi, testConfig, type TestApi } from '../helpers/api.js';
import { openStoredData } from '../helpers/database.js';

const yaml = `
agent: { enabled: false }
machines:
  - name: vm
    kind: qemu
    count: 1
    labHost: lab-a
    labels: { arch: x86_64 }
    capacities: { cpus: 1, ram: 256MiB }
`;

async function token(api: TestApi, name: string, role: string): Promise<string> {
  return ((await api.http().post('v1/tokens', { json: { name, role } })).body as { token: string }).token;
}

test('tasks taken by a claim whose connection went away go to the next claim', async (t) => {
  t.timeout(300_000);
  const api = await startApi(testConfig(yaml));
  t.teardown(() => api.close());
  const agentToken = await token(api, 'lab-a', 'agent');
  const agent = api.http(agentToken);
  const user = api.http(await token(api, 'alice', 'user'));
  const claim = { agent: 'lab-a', kinds: ['qemu'] };
  t.deepEqual((await agent.post('v1/agent/claim', { json: claim })).body, { tasks: [] });

  // A long-poll claim on a connection of its own, to cut.
  const body = JSON.stringify({ ...claim, wait: 60 });
  const cut = http.request(`${api.url}/v1/agent/claim`, {
    method: 'POST',
    headers: { authorization: `Bearer ${agentToken}`, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
  });
  cut.on('error', () => undefined);
  cut.end(body);
  await new Promise((resolve) => setTimeout(resolve, 500)); // the claim waits on the server

  // The commit that answers the claim waits for the lock; the claim's connection goes meanwhile.
  const stored = await openStoredData(api);
  await stored.lock(['reservations', 'machines', 'events']);
  const reserving = user.post('v1/reservations', { json: { members: [{ role: 'main', spec: 'arch=x86_64' }], lease: 600 } });
  await new Promise((resolve) => setTimeout(resolve, 1000)); // granted, and taken by the waiting claim
  cut.destroy();
  await new Promise((resolve) => setTimeout(resolve, 500));
  await stored.unlock();
  await stored.close();
  const created = await reserving;
  t.is(created.statusCode, 201, JSON.stringify(created.body));
  const id = (created.body as ReservationView).id;

  const next = await agent.post('v1/agent/claim', { json: { ...claim, wait: 10 } });
  const tasks = (next.body as { tasks: AgentTask[] }).tasks;
  t.deepEqual(
    tasks.map((task) => [task.action, task.reservationId]),
    [['provision', id]],
    'the next claim gets the provisioning the cut one took',
  );
});
