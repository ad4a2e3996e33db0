// Least privilege: agent and runner tokens cannot reserve machines, upload images or read other
// people's reservations, and an agent token speaks only for the agent of its own name. Two lab-host
// agents (tokens `lab-a` and `lab-b`) talk to a real API whose embedded agent is off, so the test
// plays both agents over HTTP as a hostile lab host would.
import test from 'ava';
import type { AgentTask, ReservationView } from '../../protocol/api.js';
import { startApi, testConfig, type TestApi } from '../helpers/api.js';

const yaml = `
agent: { enabled: false }
machines:
  - name: vm
    kind: qemu
    count: 2
    labHost: lab-a
    labels: { arch: x86_64 }
    capacities: { cpus: 1, ram: 256MiB }
`;

async function token(api: TestApi, name: string, role: string): Promise<string> {
  const created = await api.http().post('v1/tokens', { json: { name, role } });
  if (created.statusCode !== 201) throw new Error(`token ${name}: ${JSON.stringify(created.body)}`);
  return (created.body as { token: string }).token;
}

const reservation = { members: [{ role: 'main', spec: 'arch=x86_64' }], lease: 600 };

test('agent and runner tokens cannot reserve, upload or list reservations; users and admins are unaffected', async (t) => {
  const api = await startApi(testConfig(yaml));
  t.teardown(() => api.close());
  const agent = api.http(await token(api, 'lab-a', 'agent'));
  const runner = api.http(await token(api, 'runner-1', 'runner'));
  const user = api.http(await token(api, 'alice', 'user'));
  const mine = await user.post('v1/reservations', { json: reservation });
  t.is(mine.statusCode, 201, JSON.stringify(mine.body));
  const id = (mine.body as ReservationView).id;

  for (const [role, client] of [
    ['agent', agent],
    ['runner', runner],
  ] as const) {
    const reserve = await client.post('v1/reservations', { json: reservation });
    t.is(reserve.statusCode, 403, `${role} reserve: ${JSON.stringify(reserve.body)}`);
    t.is((reserve.body as { code: string }).code, 'forbidden');
    const upload = await client.put('v1/images/evil/1', {
      body: 'not an image',
      headers: { 'content-type': 'application/octet-stream', 'paddock-format': 'raw', 'paddock-arch': 'x86_64' },
    });
    t.is(upload.statusCode, 403, `${role} upload: ${JSON.stringify(upload.body)}`);
    for (const path of ['v1/reservations', `v1/reservations/${id}`, `v1/reservations/${id}/credentials`, 'v1/jobs', 'v1/runs', 'v1/machines']) {
      const read = await client.get(path);
      t.is(read.statusCode, 403, `${role} GET ${path}: ${JSON.stringify(read.body)}`);
    }
    t.is((await client.delete(`v1/reservations/${id}`)).statusCode, 403, `${role} release`);
    t.is(((await client.get('v1/whoami')).body as { role: string }).role, role);
  }
  // The agent still reads images (its cache downloads what reservations boot).
  t.is((await agent.get('v1/images')).statusCode, 200);
  // A user token cannot act as an agent or a runner host either.
  t.is((await user.post('v1/agent/claim', { json: { agent: 'lab-a', kinds: ['qemu'] } })).statusCode, 403);
  t.is((await user.post('v1/runner/claim', { json: { runner: 'runner-1', slots: 1 } })).statusCode, 403);

  // Nothing was lost: alice's reservation is live and hers, and she can still release it.
  const after = await user.get(`v1/reservations/${id}`);
  t.is((after.body as ReservationView).owner, 'alice');
  t.is((await user.delete(`v1/reservations/${id}`)).statusCode, 200);
  const listed = (await api.http().get('v1/reservations', { searchParams: { all: 1, ended: 1 } })).body as ReservationView[];
  t.deepEqual(
    listed.map((each) => each.owner),
    ['alice'],
  );
});

test('an agent token speaks only for its own name and reports only on the tasks it holds', async (t) => {
  const api = await startApi(testConfig(yaml));
  t.teardown(() => api.close());
  const labA = api.http(await token(api, 'lab-a', 'agent'));
  const labB = api.http(await token(api, 'lab-b', 'agent'));
  const user = api.http(await token(api, 'alice', 'user'));
  const created = await user.post('v1/reservations', { json: reservation });
  t.is(created.statusCode, 201);
  const id = (created.body as ReservationView).id;

  // lab-b cannot claim in lab-a's name.
  const impersonated = await labB.post('v1/agent/claim', { json: { agent: 'lab-a', kinds: ['qemu'] } });
  t.is(impersonated.statusCode, 403, JSON.stringify(impersonated.body));
  t.is((impersonated.body as { code: string }).code, 'forbidden');

  // In its own name, lab-b gets none of lab-a's tasks, and sees none of lab-a's machines.
  const own = await labB.post('v1/agent/claim', { json: { agent: 'lab-b', kinds: ['qemu'] } });
  t.is(own.statusCode, 200, JSON.stringify(own.body));
  t.deepEqual((own.body as { tasks: AgentTask[] }).tasks, []);
  t.deepEqual((await labB.get('v1/agent/machines', { searchParams: { kinds: 'qemu' } })).body, []);
  t.is((await labB.get('v1/agent/machines', { searchParams: { kinds: 'qemu', agent: 'lab-a' } })).statusCode, 403);
  t.deepEqual(
    ((await labA.get('v1/agent/machines', { searchParams: { kinds: 'qemu' } })).body as { name: string }[]).map((machine) => machine.name),
    ['vm-1', 'vm-2'],
  );

  const claimed = await labA.post('v1/agent/claim', { json: { agent: 'lab-a', kinds: ['qemu'] } });
  t.is(claimed.statusCode, 200, JSON.stringify(claimed.body));
  const tasks = (claimed.body as { tasks: AgentTask[] }).tasks;
  t.is(tasks.length, 1);
  const task = tasks[0];

  const fakeReady = { kind: 'ready', host: '10.6.6.6', port: 22, user: 'root', hostKey: 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEvil evil' };
  // lab-b, in its own name, cannot move a task lab-a holds: no forged readiness, no forged release.
  for (const report of [fakeReady, { kind: 'released' }, { kind: 'failed', reason: 'x', fault: 'infrastructure' }]) {
    const forged = await labB.post(`v1/agent/tasks/${encodeURIComponent(task.id)}/report`, { json: { agent: 'lab-b', report } });
    t.is(forged.statusCode, 403, JSON.stringify(forged.body));
    t.is((forged.body as { code: string }).code, 'not_your_task');
  }
  // …nor in lab-a's name.
  const spoofed = await labB.post(`v1/agent/tasks/${encodeURIComponent(task.id)}/report`, { json: { agent: 'lab-a', report: fakeReady } });
  t.is(spoofed.statusCode, 403);
  let view = (await user.get(`v1/reservations/${id}`)).body as ReservationView;
  t.is(view.state, 'provisioning');
  t.is(view.allocations[0].host, undefined, 'no forged address reached the owner');
  t.is((await api.http().get('v1/machines/vm-1')).statusCode, 200);

  // The holder reports as usual.
  const ready = await labA.post(`v1/agent/tasks/${encodeURIComponent(task.id)}/report`, {
    json: { agent: 'lab-a', report: { ...fakeReady, host: '127.0.0.1' } },
  });
  t.is(ready.statusCode, 204, JSON.stringify(ready.body));
  view = (await user.get(`v1/reservations/${id}`)).body as ReservationView;
  t.is(view.state, 'ready');
  t.is(view.allocations[0].host, '127.0.0.1');
});

test('the embedded agent token cannot take over a user token of the same name', async (t) => {
  const config = testConfig(yaml);
  const first = await startApi(config);
  const created = await first.http().post('v1/tokens', { json: { name: 'local', role: 'user' } });
  t.is(created.statusCode, 201);
  const userToken = (created.body as { token: string }).token;
  await first.server.close();
  // The next start with the embedded agent on refuses, and leaves the user's token working.
  const error = await t.throwsAsync(startApi({ ...config, agent: { ...config.agent, enabled: true } }));
  t.regex(error.message, /a user token named local exists/);
  const again = await startApi(config);
  t.teardown(() => again.close());
  t.is(((await again.http(userToken).get('v1/whoami')).body as { name: string; role: string }).role, 'user');
});
