// Reservations end to end against a real API, real agent and real sshd hosts: refusal of what can
// never match, queueing while busy, leases reaped with their keys removed, idempotent release,
// long-poll and server-sent events.
import { readFileSync } from 'node:fs';
import test from 'ava';
import got from 'got';
import type { EventView, ReservationView } from '../../protocol/api.js';
import { startApi, staticMachinesYaml, testConfig, type TestApi } from '../helpers/api.js';
import { startSshd, type TestSshd } from '../helpers/sshd.js';
import { waitFor } from '../helpers/wait.js';

let api: TestApi;
let hosts: TestSshd[];

test.before(async () => {
  hosts = await Promise.all([startSshd(), startSshd()]);
  const yaml = `
lease: { default: 60, max: 120 }
reaper: { interval: 0.2 }
${staticMachinesYaml(
  hosts.map((host, index) => ({
    name: `host-${index + 1}`,
    port: host.port,
    adminKeyPath: host.adminKey.path,
    authorizedKeysFile: host.authorizedKeysFile,
    labels: { type: 'static-host', arch: 'x86_64', ...(index === 0 ? { disk: 'ssd' } : {}) },
    capacities: { cpus: 2 + index * 2, ram: index === 0 ? '2GiB' : '8GiB' },
  })),
)}`;
  api = await startApi(testConfig(yaml));
});

test.after.always(async () => {
  await api?.close();
  await Promise.all((hosts ?? []).map((host) => host.stop()));
});

const reserve = async (body: unknown) => api.http().post('v1/reservations', { json: body });
const waitReady = async (id: string) =>
  (await api.http().get(`v1/reservations/${id}`, { searchParams: { wait: 'ready', timeout: 300 } })).body as ReservationView;
const release = async (id: string) => (await api.http().delete(`v1/reservations/${id}`)).body as ReservationView;
const waitState = async (id: string, state: string, seconds = 120) => {
  const deadline = Date.now() + seconds * 1000;
  for (;;) {
    const view = (await api.http().get(`v1/reservations/${id}`)).body as ReservationView;
    if (view.state === state || Date.now() > deadline) return view;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
};

test.serial('a spec no machine has is refused at once with the reasons per member', async (t) => {
  const response = await reserve({
    members: [
      { role: 'build', spec: 'arch=x86_64' },
      { role: 'board', spec: 'arch=armv7 ram>=1GiB' },
      { role: 'many', spec: 'static-host', count: 3 },
    ],
  });
  t.is(response.statusCode, 422);
  const body = response.body as { code: string; details: { members: { role: string; reason: string }[] } };
  t.is(body.code, 'unsatisfiable');
  const roles = body.details.members.map((member) => member.role).sort();
  t.deepEqual(roles, ['board', 'many']);
  t.regex(body.details.members.find((member) => member.role === 'board')!.reason, /arch/);
  const list = (await api.http().get('v1/reservations')).body as unknown[];
  t.is(list.length, 0, 'nothing was queued');
});

test.serial('a gang is granted together, provisioned over SSH, and its key removed on release', async (t) => {
  const created = await reserve({
    members: [
      { role: 'build', spec: 'disk=ssd' },
      { role: 'test', spec: 'cpus>=4 ram>=4GiB' },
    ],
    lease: 60,
  });
  t.is(created.statusCode, 201, JSON.stringify(created.body));
  const ready = await waitReady((created.body as ReservationView).id);
  t.is(ready.state, 'ready', ready.reason);
  t.deepEqual(
    ready.allocations.map((allocation) => [allocation.role, allocation.machine]),
    [
      ['build', 'host-1'],
      ['test', 'host-2'],
    ],
  );
  for (const [index, allocation] of ready.allocations.entries()) {
    t.is(allocation.hostKey, hosts[index].hostKey, "the host key seen at readiness is the server's");
    t.truthy(allocation.stages.sshReady);
    t.regex(readFileSync(hosts[index].authorizedKeysFile, 'utf8'), new RegExp(`paddock:${ready.id}`));
  }
  const credentials = (await api.http().get(`v1/reservations/${ready.id}/credentials`)).body as { privateKey: string; knownHosts: string };
  t.regex(credentials.privateKey, /BEGIN OPENSSH PRIVATE KEY/);
  t.is(credentials.knownHosts.trim().split('\n').length, 2);
  t.false(api.logs.join('\n').includes(credentials.privateKey.split('\n')[1]), 'the private key is not logged');

  const releasing = await release(ready.id);
  t.true(['releasing', 'released'].includes(releasing.state));
  const released = await waitState(ready.id, 'released');
  t.is(released.state, 'released');
  for (const host of hosts) t.notRegex(readFileSync(host.authorizedKeysFile, 'utf8'), new RegExp(`paddock:${ready.id}`));
  const again = await api.http().delete(`v1/reservations/${ready.id}`);
  t.is(again.statusCode, 200, 'release is idempotent');
  t.is((again.body as ReservationView).state, 'released');
  const renew = await api.http().post(`v1/reservations/${ready.id}/renew`);
  t.is(renew.statusCode, 409);
  t.is((renew.body as { code: string }).code, 'lease_expired');
});

test.serial('a busy spec queues and is granted when a machine frees up', async (t) => {
  const first = (await reserve({ members: [{ role: 'main', spec: 'disk=ssd' }] })).body as ReservationView;
  t.is((await waitReady(first.id)).state, 'ready');
  const second = await reserve({ members: [{ role: 'main', spec: 'disk=ssd' }] });
  t.is(second.statusCode, 201);
  const queued = second.body as ReservationView;
  t.is(queued.state, 'queued');
  t.is(queued.queuePosition, 1);
  const explained = (await api.http().get(`v1/reservations/${queued.id}/explain`)).body as { members: { matches: string[]; available: string[] }[] };
  t.deepEqual(explained.members[0].matches, ['host-1']);
  t.deepEqual(explained.members[0].available, []);
  await release(first.id);
  const granted = await waitReady(queued.id);
  t.is(granted.state, 'ready', granted.reason);
  t.is(granted.allocations[0].machine, 'host-1');
  await release(queued.id);
  t.is((await waitState(queued.id, 'released')).state, 'released');
});

test.serial('a lease that is not renewed is reaped and its key removed; a renewed one lives on', async (t) => {
  // Order, not speed: both are renewed until they are ready (provisioning may be slow on a busy
  // machine), then only one is. The one left alone must be reaped; the other must outlive the
  // expiry it had when it became ready.
  const renewed = (await reserve({ members: [{ role: 'main', spec: 'disk=ssd' }], lease: 10 })).body as ReservationView;
  const reaped = (await reserve({ members: [{ role: 'main', spec: 'cpus>=4' }], lease: 4 })).body as ReservationView;
  const renewing = new Set([renewed.id, reaped.id]);
  const renewals = (async () => {
    while (renewing.size > 0) {
      for (const id of renewing) await api.http().post(`v1/reservations/${id}/renew`);
      await new Promise((resolve) => setTimeout(resolve, 300));
    }
  })();
  try {
    t.is((await waitReady(reaped.id)).state, 'ready');
    renewing.delete(reaped.id);
    const ready = await waitReady(renewed.id);
    t.is(ready.state, 'ready');
    const firstExpiry = Date.parse(ready.expiresAt!);
    const expired = await waitState(reaped.id, 'expired', 120);
    t.is(expired.state, 'expired');
    t.is(expired.reason, 'lease expired');
    const history = ((await api.http().get(`v1/reservations/${reaped.id}/events`)).body as EventView[])
      .filter((event) => event.type === 'state')
      .map((event) => event.to);
    t.true(history.indexOf('ready') >= 0 && history.indexOf('ready') < history.indexOf('expired'), history.join(' → '));
    t.notRegex(readFileSync(hosts[1].authorizedKeysFile, 'utf8'), new RegExp(`paddock:${reaped.id}`));
    while (Date.now() <= firstExpiry + 1000) await new Promise((resolve) => setTimeout(resolve, 200));
    const alive = (await api.http().get(`v1/reservations/${renewed.id}`)).body as ReservationView;
    t.is(alive.state, 'ready');
    t.true(Date.parse(alive.expiresAt!) > firstExpiry, 'renewals moved the expiry on');
  } finally {
    renewing.clear();
    await renewals;
  }
  await release(renewed.id);
  await waitState(renewed.id, 'released', 120);
});

test.serial('renewal stops at the hard cap', async (t) => {
  const created = (await reserve({ members: [{ role: 'main', spec: 'disk=ssd' }], lease: 100 })).body as ReservationView;
  const ready = await waitReady(created.id);
  const renewed = (await api.http().post(`v1/reservations/${ready.id}/renew`)).body as ReservationView;
  t.true(Date.parse(renewed.expiresAt!) <= Date.parse(renewed.hardCapAt!));
  t.is(Date.parse(renewed.hardCapAt!) - Date.parse(renewed.grantedAt!), 120_000);
  const tooLong = await reserve({ members: [{ role: 'main', spec: 'disk=ssd' }], lease: '3m' });
  t.is(tooLong.statusCode, 400);
  await release(ready.id);
  await waitState(ready.id, 'released');
});

test.serial('events stream as server-sent events, and long-poll, idempotency keys and cancellation work', async (t) => {
  const body = { members: [{ role: 'main', spec: 'static-host' }], idempotencyKey: 'job-42-step-1' };
  const created = await reserve(body);
  t.is(created.statusCode, 201);
  const replay = await reserve(body);
  t.is(replay.statusCode, 200);
  const id = (created.body as ReservationView).id;
  t.is((replay.body as ReservationView).id, id);
  const together = await Promise.all([1, 2, 3].map(() => reserve({ ...body, idempotencyKey: 'job-43-step-1', members: [{ role: 'main', spec: 'disk=ssd' }] })));
  t.deepEqual(together.map((response) => response.statusCode).sort(), [200, 200, 201], 'retries arriving together make one reservation');
  t.is(new Set(together.map((response) => (response.body as ReservationView).id)).size, 1);
  await release((together[0].body as ReservationView).id);

  const seen: EventView[] = [];
  const stream = got.stream(`${api.url}/v1/reservations/${id}/events`, { headers: { authorization: `Bearer ${api.adminToken}`, accept: 'text/event-stream' } });
  let buffer = '';
  const ended = new Promise<void>((resolve, reject) => {
    stream.on('data', (chunk: Buffer) => {
      buffer += chunk.toString();
      for (let at = buffer.indexOf('\n\n'); at >= 0; at = buffer.indexOf('\n\n')) {
        const block = buffer.slice(0, at);
        buffer = buffer.slice(at + 2);
        const data = block.split('\n').find((line) => line.startsWith('data: '));
        if (data) seen.push(JSON.parse(data.slice(6)) as EventView);
      }
    });
    stream.on('end', resolve);
    stream.on('error', reject);
  });
  t.is((await waitReady(id)).state, 'ready');
  await release(id);
  await ended;
  const states = seen.filter((event) => event.type === 'state').map((event) => event.to);
  t.deepEqual(states, ['queued', 'allocated', 'provisioning', 'ready', 'releasing', 'released']);
  t.true(seen.some((event) => event.type === 'stage' && event.to === 'sshReady'));
  const stored = (await api.http().get(`v1/reservations/${id}/events`)).body as EventView[];
  t.deepEqual(
    stored.map((event) => event.id),
    seen.map((event) => event.id),
    'the stream and the stored history agree',
  );

  // A queued request released before it is granted ends cancelled.
  const blockers = await Promise.all([reserve({ members: [{ role: 'main', spec: 'static-host', count: 2 }] })]);
  const blocker = blockers[0].body as ReservationView;
  const waiting = (await reserve({ members: [{ role: 'main', spec: 'static-host' }] })).body as ReservationView;
  t.is(waiting.state, 'queued');
  t.is((await release(waiting.id)).state, 'cancelled');
  await waitReady(blocker.id);
  await release(blocker.id);
  await waitState(blocker.id, 'released');
});

test.serial('machines can be put in maintenance and back', async (t) => {
  const admin = api.http();
  const maintenance = await admin.post('v1/machines/host-1/maintenance', { json: { reason: 'new PSU' } });
  t.is(maintenance.statusCode, 200);
  t.is((maintenance.body as { state: string }).state, 'maintenance');
  const queued = (await reserve({ members: [{ role: 'main', spec: 'disk=ssd' }] })).body as ReservationView;
  t.is(queued.state, 'queued', 'a machine in maintenance is not matched');
  const activated = await admin.post('v1/machines/host-1/activate');
  // Back in service, it goes at once to the request that was waiting for it.
  t.deepEqual(activated.body as object, { ...(activated.body as object), state: 'reserved', reservationId: queued.id });
  t.is((await waitReady(queued.id)).state, 'ready');
  await release(queued.id);
  await waitState(queued.id, 'released');
  const machines = (await admin.get('v1/machines')).body as { name: string; state: string }[];
  t.deepEqual(
    machines.map((machine) => [machine.name, machine.state]),
    [
      ['host-1', 'available'],
      ['host-2', 'available'],
    ],
  );
});

test.serial("an idempotency key is its owner's, and names its reservation after it ended too", async (t) => {
  const body = { members: [{ role: 'main', spec: 'static-host' }], idempotencyKey: 'shared-key-1', queueTimeout: 60 };
  const mine = await reserve(body);
  t.is(mine.statusCode, 201);
  const alice = (await api.http().post('v1/tokens', { json: { name: 'alice-keys', role: 'user' } })).body as { token: string };
  const byAlice = await api.http(alice.token).post('v1/reservations', { json: body });
  t.is(byAlice.statusCode, 201, "the same key of another owner makes alice's own");
  const alices = byAlice.body as ReservationView;
  t.not(alices.id, (mine.body as ReservationView).id);
  const ended = (await api.http(alice.token).delete(`v1/reservations/${alices.id}`)).body as ReservationView;
  await release((mine.body as ReservationView).id);
  // Ended, it is no longer in the scheduler's memory: the key is looked up in the database.
  await waitFor(
    async () => ['released', 'cancelled'].includes(((await api.http(alice.token).get(`v1/reservations/${alices.id}`)).body as ReservationView).state),
    60_000,
    "alice's reservation ended",
  );
  const again = await api.http(alice.token).post('v1/reservations', { json: body });
  t.is(again.statusCode, 200);
  t.is((again.body as ReservationView).id, alices.id, 'the same reservation, not a new one');
  t.true(
    ['releasing', 'released', 'cancelled'].includes((again.body as ReservationView).state),
    `${ended.state} then ${(again.body as ReservationView).state}`,
  );
});
