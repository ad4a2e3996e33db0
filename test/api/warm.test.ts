// The API's half of warm pools, with the agent played over HTTP (no VM boots): which slots the
// plan keeps warm, the swap that gives a member the warm slot of its image and a member of
// another image a cold one, and what an agent may report.
import test from 'ava';
import type { MachineView, ReservationView, WarmPlan } from '../../protocol/api.js';
import { startApi, testConfig } from '../helpers/api.js';

const yaml = `
agent: { enabled: false }
machines:
  - { name: vm, kind: qemu, count: 3, labHost: lab-a, labels: { arch: x86_64 }, warm: [{ image: "tiny:test", count: 1 }] }
  - { name: far, kind: qemu, labHost: lab-b, labels: { arch: arm64 } }
`;

test('the plan keeps warm slots where they are, a member of the image takes one, a member of another image a cold one', async (t) => {
  const api = await startApi(testConfig(yaml));
  t.teardown(() => api.close());
  const admin = api.http();
  const token = ((await admin.post('v1/tokens', { json: { name: 'lab-a', role: 'agent' } })).body as { token: string }).token;
  const agent = api.http(token);
  const report = async (warm: { machine: string; image: string }[]) => {
    const answer = await agent.post('v1/agent/warm', { json: { agent: 'lab-a', warm } });
    t.is(answer.statusCode, 200, JSON.stringify(answer.body));
    const plan = answer.body as WarmPlan;
    return { targets: plan.targets.map((target) => `${target.machine.name} ${target.image}`), held: plan.held, every: plan.intervalSeconds };
  };
  const reserve = async (image: string) => {
    const reservation = (await admin.post('v1/reservations', { json: { members: [{ role: 'vm', spec: 'arch=x86_64', image }] } })).body as ReservationView;
    t.is(reservation.state, 'allocated');
    return reservation.allocations[0].machine;
  };

  t.deepEqual(await report([]), { targets: ['vm-1 tiny:test'], held: [], every: 1 });
  // A slot warm already keeps its image (no VM moved about); another lab host's machine is ignored.
  t.deepEqual(
    (
      await report([
        { machine: 'vm-2', image: 'tiny:test' },
        { machine: 'far', image: 'tiny:test' },
      ])
    ).targets,
    ['vm-2 tiny:test'],
  );

  t.is(await reserve('tiny:test'), 'vm-2', 'the warm slot of the image, not the lowest free one');
  t.deepEqual(await report([{ machine: 'vm-2', image: 'tiny:test' }]), { targets: ['vm-1 tiny:test'], held: ['vm-2'], every: 1 });

  t.deepEqual((await report([{ machine: 'vm-1', image: 'tiny:test' }])).targets, ['vm-1 tiny:test']);
  t.is(await reserve('other:test'), 'vm-3', 'a cold slot, not the warm one the allocator would pick');
  t.is(await reserve('other:test'), 'vm-1', 'the warm slot when nothing else is free');
  t.deepEqual(await report([]), { targets: [], held: ['vm-1', 'vm-2', 'vm-3'], every: 1 });
});

test('only agents report warm machines, each for its own lab host', async (t) => {
  const api = await startApi(testConfig(yaml));
  t.teardown(() => api.close());
  const admin = api.http();
  const token = ((await admin.post('v1/tokens', { json: { name: 'lab-b', role: 'agent' } })).body as { token: string }).token;
  const user = ((await admin.post('v1/tokens', { json: { name: 'someone', role: 'user' } })).body as { token: string }).token;
  t.is((await api.http(user).post('v1/agent/warm', { json: { agent: 'lab-b', warm: [] } })).statusCode, 403);
  const spoofed = await api.http(token).post('v1/agent/warm', { json: { agent: 'lab-a', warm: [] } });
  t.is(spoofed.statusCode, 403, 'an agent speaks only for its own lab host');
  const twice = await api.http(token).post('v1/agent/warm', {
    json: {
      agent: 'lab-b',
      warm: [
        { machine: 'far', image: 'a' },
        { machine: 'far', image: 'b' },
      ],
    },
  });
  t.is(twice.statusCode, 400);
  const plan = (await api.http(token).post('v1/agent/warm', { json: { agent: 'lab-b', warm: [] } })).body as WarmPlan;
  t.deepEqual(plan, { targets: [], held: [], intervalSeconds: 30 }, 'a lab host without warm pools asks again in 30 s');
});

test('a failed warm boot is in its machine’s history and counts as a failed provisioning; enough in a row quarantine the machine, which is then not warmed', async (t) => {
  const api = await startApi(testConfig(`health: { quarantineAfter: 2 }\n${yaml}`));
  t.teardown(() => api.close());
  const admin = api.http();
  const token = ((await admin.post('v1/tokens', { json: { name: 'lab-a', role: 'agent' } })).body as { token: string }).token;
  const agent = api.http(token);
  const boot = (id: string, fault: string, code: string, machine = 'vm-1') => ({
    machine,
    image: 'tiny:test',
    id,
    reason: `${code} in the test`,
    fault,
    code,
    stage: 'powerConfirmed',
    seconds: 3,
  });
  const report = async (warm: { machine: string; image: string }[], failed: object[]) => {
    const answer = await agent.post('v1/agent/warm', { json: { agent: 'lab-a', warm, failed } });
    t.is(answer.statusCode, 200, JSON.stringify(answer.body));
    return (answer.body as WarmPlan).targets.map((target) => target.machine.name);
  };
  const vm1 = async () => (await admin.get('v1/machines/vm-1')).body as MachineView;

  t.deepEqual(await report([], [boot('warm-a1', 'infrastructure', 'power_failed'), boot('warm-f1', 'infrastructure', 'power_failed', 'far')]), ['vm-1']);
  t.like(await vm1(), { state: 'available', failures: 1 });
  t.deepEqual(
    (await vm1()).provisionings!.map((run) => [run.reservationId, run.owner, run.outcome, run.code, run.stage, run.counted, run.image]),
    [['warm-a1', 'paddock', 'failed', 'power_failed', 'powerConfirmed', true, 'tiny:test']],
  );
  t.is(((await admin.get('v1/machines/far')).body as MachineView).failures, 0, 'another lab host’s machine is not this agent’s to report');
  await report([], [boot('warm-a2', 'request', 'image_not_found')]);
  t.like(await vm1(), { failures: 1, health: 0 }, 'the image’s fault is in the history, not counted');
  await report([{ machine: 'vm-1', image: 'tiny:test' }], []);
  t.is((await vm1()).failures, 0, 'a warm boot that came up ends the run of failures');

  t.deepEqual(await report([], [boot('warm-a3', 'infrastructure', 'boot_timeout'), boot('warm-a4', 'infrastructure', 'power_failed')]), ['vm-2']);
  const quarantined = await vm1();
  t.is(quarantined.state, 'quarantined', 'a free machine is quarantined at once');
  t.regex(quarantined.reason ?? '', /^2 infrastructure failures in a row; last: warm boot of tiny:test: power_failed: power_failed in the test$/);

  const forged = await agent.post('v1/agent/warm', {
    json: { agent: 'lab-a', warm: [], failed: [{ ...boot('../r-1', 'infrastructure', 'x'), id: '../r-1' }] },
  });
  t.is(forged.statusCode, 400, 'a warm boot id is warm- and letters or digits');
});
