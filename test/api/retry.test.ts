// Retry on another machine, on static SSH hosts: a machine whose admin key cannot be read fails
// while being provisioned (an infrastructure failure). The member moves to a free twin while the
// gang's other member keeps its machine; with no twin free it waits without holding a machine, is
// served before queued requests, survives a restart, and gives up at the queue timeout; a member out
// of retries fails the reservation as before.
import { execFile } from 'node:child_process';
import path from 'node:path';
import test from 'ava';
import { Paddock, ReservationFailedError } from '../../client/index.js';
import type { EventView, MachineView, ReservationExplainView, ReservationView } from '../../protocol/api.js';
import { startApi, staticHostOn, staticMachinesYaml, testConfig, type TestApi } from '../helpers/api.js';
import { startSshd, type TestSshd } from '../helpers/sshd.js';

/** A static machine that fails at every provisioning: its admin key does not exist (it never gets as far as connecting). */
let brokenPorts = 0;
const broken = (sshd: TestSshd, name: string, labels: Record<string, string>) => ({
  ...staticHostOn(sshd, name, labels),
  port: 20_000 + ++brokenPorts,
  adminKeyPath: '/nonexistent/admin_ed25519',
  authorizedKeysFile: `/nonexistent/${name}/authorized_keys`,
});

async function lab(t: import('ava').ExecutionContext, health: string, machines: (hosts: TestSshd[]) => Parameters<typeof staticMachinesYaml>[0]) {
  const hosts = await Promise.all([startSshd(), startSshd()]);
  const config = testConfig(`health: ${health}\nagent: { checkInterval: 0 }\n${staticMachinesYaml(machines(hosts))}`);
  let api = await startApi(config);
  t.teardown(async () => {
    await api.close();
    await Promise.all(hosts.map((host) => host.stop()));
  });
  return {
    hosts,
    get api() {
      return api;
    },
    paddock: () => new Paddock({ url: api.url, token: api.adminToken }),
    /** Stops the server and starts it again on the same data directory. */
    async restart() {
      await api.server.close();
      api = await startApi(config);
    },
  };
}

const view = async (api: TestApi, id: string) => (await api.http().get(`v1/reservations/${id}`)).body as ReservationView;
const machine = async (api: TestApi, name: string) => (await api.http().get(`v1/machines/${name}`)).body as MachineView;
const allocationEvents = (events: EventView[]) => events.filter((event) => event.type === 'allocation').map((event) => `${event.machine ?? '-'} ${event.to}`);

async function until<T>(probe: () => Promise<T>, done: (value: T) => boolean, what: string): Promise<T> {
  const deadline = Date.now() + 120_000;
  for (;;) {
    const value = await probe();
    if (done(value)) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(value)}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

const waitingMember = (reservation: ReservationView) => reservation.allocations.find((allocation) => allocation.state === 'waiting');

test('a gang member whose machine fails is served by its twin; the other member keeps its machine', async (t) => {
  const { api, paddock } = await lab(t, '{ quarantineAfter: 1 }', ([a, b]) => [
    staticHostOn(a, 'db-1', { type: 'db' }),
    broken(a, 'web-1', { type: 'web' }),
    staticHostOn(b, 'web-2', { type: 'web' }),
  ]);
  const progress: string[] = [];
  const reservation = await paddock().reserve({
    members: [
      { role: 'db', spec: 'type=db' },
      { role: 'web', spec: 'type=web' },
    ],
    lease: '5m',
  });
  await reservation.ready({ timeout: 120, onProgress: (update) => 'type' in update && update.reason && progress.push(update.reason) });
  const ready = await view(api, reservation.id);
  t.is(ready.state, 'ready');
  const [db, web, failed] = ready.allocations;
  t.like(db, { id: `${reservation.id}.0`, role: 'db', machine: 'db-1', state: 'ready' }, 'the other member keeps its machine and its allocation');
  t.like(web, { id: `${reservation.id}.1-r1`, role: 'web', index: 0, machine: 'web-2', state: 'ready', retries: 1, failedOn: ['web-1'] });
  t.is(web.failure, undefined);
  t.like(failed, { id: `${reservation.id}.1`, machine: 'web-1', replacedBy: web.id });
  t.is(failed.failure?.fault, 'infrastructure');

  const events = await reservation.events();
  t.deepEqual(
    events.filter((event) => event.type === 'state').map((event) => event.to),
    ['queued', 'allocated', 'provisioning', 'ready'],
    'the reservation never left provisioning',
  );
  const allocations = allocationEvents(events);
  const order = ['web-1 failed', 'web-2 pending', 'web-1 releasing', 'web-2 ready'].map((step) => allocations.indexOf(step));
  t.true(
    order.every((at, index) => at >= 0 && (index === 0 || at > order[index - 1])),
    allocations.join(', '),
  );
  t.is(allocations.filter((step) => step.startsWith('db-1')).join(', '), 'db-1 pending, db-1 provisioning, db-1 ready', 'db-1 was provisioned once');
  const retrying = events.find((event) => event.to === 'pending' && event.machine === 'web-2');
  t.regex(retrying?.reason ?? '', /^web\[0\]: retrying on web-2 after \w+ on web-1$/);
  t.true(
    progress.some((line) => /retrying on web-2/.test(line)),
    'the script saw the retry as progress',
  );
  t.is((await reservation.run('web', 'echo served')).stdout.trim(), 'served', 'the member logs in on its twin');
  t.true((await reservation.run('db', 'true')).code === 0);

  const web1 = await until(
    () => machine(api, 'web-1'),
    (entry) => entry.state === 'quarantined',
    'web-1 torn down',
  );
  t.is(web1.failures, 1, 'the failure counts against the failed machine');
  await reservation.release();
});

test('with no twin free the member waits without a machine, survives a restart and gets the first one freed ahead of the queue', async (t) => {
  const env = await lab(t, '{ quarantineAfter: 1 }', ([a, b]) => [
    staticHostOn(a, 'db-1', { type: 'db' }),
    broken(a, 'web-1', { type: 'web', slot: 'a' }),
    staticHostOn(b, 'web-2', { type: 'web', slot: 'b' }),
  ]);
  const blocker = await env.paddock().reserve({ members: [{ role: 'web', spec: 'type=web slot=b' }], lease: '5m' });
  await blocker.ready({ timeout: 120 });
  const reservation = await env.paddock().reserve({
    members: [
      { role: 'db', spec: 'type=db' },
      { role: 'web', spec: 'type=web' },
    ],
    lease: '5m',
  });
  const waiting = await until(
    () => view(env.api, reservation.id),
    (current) => waitingMember(current) !== undefined && current.allocations[0].state === 'ready',
    'the web member to wait',
  );
  t.is(waiting.state, 'provisioning');
  t.like(waitingMember(waiting), { id: `${reservation.id}.1-r1`, role: 'web', machine: '', failedOn: ['web-1'] });
  t.truthy(waitingMember(waiting)?.waitingUntil);
  const waitEvent = (await reservation.events()).find((event) => event.to === 'waiting');
  t.regex(waitEvent?.reason ?? '', /^web\[0\]: no other machine matching type=web is free after \w+ on web-1; waiting until /);
  const explained = (await env.api.http().get(`v1/reservations/${reservation.id}/explain`)).body as ReservationExplainView;
  t.like(explained.members[1].waiting?.[0], { index: 0, failedOn: ['web-1'], waitingUntil: waitingMember(waiting)?.waitingUntil }, 'explain says it waits');
  const log = await env.api.http().get(`v1/reservations/${reservation.id}/console`);
  t.is(log.statusCode, 404, 'no console log, and the waiting member (no machine) breaks nothing');
  const shown = await cli(env.api, ['show', reservation.id]);
  t.regex(shown, /web\.0 - waiting for another machine after \w+ on web-1, until /, 'paddock show says the member waits and why');
  await until(
    () => machine(env.api, 'web-1'),
    (entry) => entry.state === 'quarantined',
    'web-1 torn down',
  );
  t.is((await machine(env.api, 'web-2')).reservationId, blocker.id);

  const later = await env.paddock().reserve({ members: [{ role: 'web', spec: 'type=web' }], lease: '5m' });
  t.is((await view(env.api, later.id)).state, 'queued');

  await env.restart();
  const restarted = await view(env.api, reservation.id);
  t.is(restarted.state, 'provisioning');
  t.is(waitingMember(restarted)?.id, `${reservation.id}.1-r1`, 'the member still waits after a restart');
  t.is(restarted.allocations[0].state, 'ready');

  await env.api.http().delete(`v1/reservations/${blocker.id}`);
  const served = await env.paddock().reservation(reservation.id);
  await served.ready({ timeout: 120 });
  const after = await view(env.api, reservation.id);
  t.like(after.allocations[1], { id: `${reservation.id}.1-r1`, machine: 'web-2', state: 'ready' });
  t.regex((await served.events()).find((event) => event.from === 'waiting')?.reason ?? '', /^web\[0\]: retrying on web-2 after \w+ on web-1$/);
  t.is((await view(env.api, later.id)).state, 'queued', 'the queued request did not get the machine the waiting member needed');
  await served.release();
  await env.api.http().delete(`v1/reservations/${later.id}`);
});

test('a member that waits past the queue timeout fails the reservation; one released while it waits leaves nothing held', async (t) => {
  const env = await lab(t, '{ quarantineAfter: 1 }', ([, b]) => [
    broken(b, 'web-1', { type: 'web', slot: 'a' }),
    staticHostOn(b, 'web-2', { type: 'web', slot: 'b' }),
  ]);
  const blocker = await env.paddock().reserve({ members: [{ role: 'web', spec: 'type=web slot=b' }], lease: '5m' });
  await blocker.ready({ timeout: 120 });

  const timedOut = await env.paddock().reserve({ members: [{ role: 'web', spec: 'type=web' }], lease: '5m', queueTimeout: 2 });
  const error = await t.throwsAsync(timedOut.ready({ timeout: 120 }), { instanceOf: ReservationFailedError });
  t.is(error?.state, 'failed');
  t.regex(error?.reason ?? '', /^web\[0\]: \w+ on web-1, and no other machine matching type=web was free within the queue timeout$/);
  t.is(error?.failureCode, (await view(env.api, timedOut.id)).allocations[1].failure?.code, "the original failure's code");

  await env.api.http().post('v1/machines/web-1/activate');
  const released = await env.paddock().reserve({ members: [{ role: 'web', spec: 'type=web' }], lease: '5m' });
  await until(
    () => view(env.api, released.id),
    (current) => waitingMember(current) !== undefined,
    'the member to wait',
  );
  await released.release();
  const ended = await until(
    () => view(env.api, released.id),
    (current) => current.state === 'released',
    'the release',
  );
  t.deepEqual(
    ended.allocations.map((allocation) => `${allocation.machine || '-'} ${allocation.state}`),
    ['- released', 'web-1 released'],
  );
  t.is((await machine(env.api, 'web-2')).reservationId, blocker.id);
  await blocker.release();
});

test('a member out of retries fails the reservation with its last failure', async (t) => {
  const env = await lab(t, '{ quarantineAfter: 1, retries: 1 }', ([a, b]) => [
    broken(a, 'web-1', { type: 'web' }),
    broken(a, 'web-2', { type: 'web' }),
    staticHostOn(b, 'web-3', { type: 'web' }),
  ]);
  const reservation = await env.paddock().reserve({ members: [{ role: 'web', spec: 'type=web' }], lease: '5m' });
  const error = await t.throwsAsync(reservation.ready({ timeout: 120 }), { instanceOf: ReservationFailedError });
  t.regex(error?.reason ?? '', /^web\[0\] on web-2 at \w+: \w+: .*cannot read the admin key/, 'the last failure, on the twin');
  const ended = await view(env.api, reservation.id);
  t.deepEqual(
    ended.allocations.map((allocation) => `${allocation.id.slice(reservation.id.length)} ${allocation.machine}`),
    ['.0-r1 web-2', '.0 web-1'],
  );
  t.is((await machine(env.api, 'web-3')).state, 'available', 'web-3 was never tried');
});

/** Runs the `paddock` command against the API as its admin and answers its output. */
function cli(api: TestApi, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const env = { ...process.env, PADDOCK_URL: api.url, PADDOCK_TOKEN: api.adminToken };
    execFile(process.execPath, [path.resolve('bin/paddock.js'), ...args], { env }, (error, stdout, stderr) =>
      error ? reject(new Error(stderr)) : resolve(stdout),
    );
  });
}
