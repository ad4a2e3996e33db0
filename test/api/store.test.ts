// The store no input can stop, on SQLite and on PostgreSQL: a commit the database refuses fails that request alone and leaves nothing
// behind in memory; a database that refuses every write turns /healthz to 503 until it takes
// writes again; a NUL printed by a static host's cleanup is stored like any other text.
import { readFile, writeFile } from 'node:fs/promises';
import test from 'ava';
import type { MachineView, ReservationView } from '../../protocol/api.js';
import { startApi, staticMachinesYaml, testConfig, type TestApi } from '../helpers/api.js';
import { startSshd } from '../helpers/sshd.js';
import { openStoredData } from '../helpers/database.js';

/** Static machines no agent ever visits, each a login of its own. */
const nowhere = (name: string, index: number) =>
  `  - { name: ${name}, kind: static, labels: { type: t }, settings: { address: 127.0.0.${index + 2}, user: ci, adminKey: /nonexistent } }`;
const labYaml = (names: string[]) => `agent: { enabled: false }\nagents: { heartbeatTimeout: 1d }\nmachines:\n${names.map(nowhere).join('\n')}\n`;

const openDb = (api: TestApi) => openStoredData(api);

async function userToken(api: TestApi, name: string): Promise<string> {
  return ((await api.http().post('v1/tokens', { json: { name } })).body as { token: string }).token;
}

/** What the API shows and what the database holds must agree: live reservations and machine states. */
async function assertDatabaseMatches(t: import('ava').ExecutionContext, api: TestApi): Promise<void> {
  const db = await openDb(api);
  try {
    const live = ((await api.http().get('v1/reservations', { searchParams: { all: 1 } })).body as ReservationView[])
      .map((view) => `${view.id}:${view.state}`)
      .sort();
    const rows = await db.all<{ id: string; state: string }>(
      "SELECT id, state FROM reservations WHERE state IN ('queued','allocated','provisioning','ready','releasing') ORDER BY id",
    );
    t.deepEqual(rows.map((row) => `${row.id}:${row.state}`).sort(), live, 'live reservations: API and database agree');
    const machines = ((await api.http().get('v1/machines')).body as MachineView[]).map(
      (machine) => `${machine.name}:${machine.state}:${machine.reservationId ?? ''}`,
    );
    const machineRows = await db.all<{ name: string; state: string; reservationId: string | null }>(
      'SELECT name, state, "reservationId" FROM machines ORDER BY name',
    );
    t.deepEqual(
      machineRows.map((row) => `${row.name}:${row.state}:${row.reservationId ?? ''}`),
      machines,
      'machines: API and database agree',
    );
  } finally {
    await db.close();
  }
}

test('a commit the database refuses fails that request alone: nothing stays in memory, others keep writing', async (t) => {
  const api = await startApi(testConfig(labYaml(['m1'])));
  t.teardown(() => api.close());
  const mallory = api.http(await userToken(api, 'mallory'));
  const alice = api.http(await userToken(api, 'alice'));
  // A value the database refuses, for every row of one user: a deterministic failure.
  const db = await openDb(api);
  await db.refuse('refuse_mallory', 'INSERT', 'reservations', "NEW.owner = 'mallory'");
  await db.close();

  for (let round = 0; round < 3; round++) {
    const refused = await mallory.post('v1/reservations', { json: { members: [{ role: 'main', spec: 't' }] } });
    t.is(refused.statusCode, 503, JSON.stringify(refused.body));
    t.is((refused.body as { code: string }).code, 'store_failed');
    t.deepEqual((await mallory.get('v1/reservations')).body, [], 'the refused reservation is not live');
    t.is(((await api.http().get('v1/machines/m1')).body as MachineView).state, 'available', 'and holds no machine');

    const created = await alice.post('v1/reservations', { json: { members: [{ role: 'main', spec: 't' }] } });
    t.is(created.statusCode, 201, JSON.stringify(created.body));
    const view = created.body as ReservationView;
    t.is(view.state, 'allocated');
    t.is((await api.http().get('healthz')).statusCode, 200, 'a commit succeeded: healthy again');
    await assertDatabaseMatches(t, api);
    t.is((await alice.delete(`v1/reservations/${view.id}`)).statusCode, 200);
  }
  await assertDatabaseMatches(t, api);
});

test('a grant undone by a failed commit leaves its request queued, and the next machine freed goes to it', async (t) => {
  const api = await startApi(testConfig(labYaml(['m1'])));
  t.teardown(() => api.close());
  const alice = api.http(await userToken(api, 'alice'));
  const bob = api.http(await userToken(api, 'bob'));
  const held = (await alice.post('v1/reservations', { json: { members: [{ role: 'main', spec: 't' }] } })).body as ReservationView;
  t.is(held.state, 'allocated');
  const waiting = (await bob.post('v1/reservations', { json: { members: [{ role: 'main', spec: 't' }] } })).body as ReservationView;
  t.is(waiting.state, 'queued');

  // The release commits together with the grant it makes: refuse the grant, and both are undone.
  const db = await openDb(api);
  await db.refuse('refuse_grant', 'UPDATE', 'reservations', "NEW.owner = 'bob' AND NEW.state = 'allocated'");
  const refused = await alice.delete(`v1/reservations/${held.id}`);
  t.is(refused.statusCode, 503, JSON.stringify(refused.body));
  t.is(((await alice.get(`v1/reservations/${held.id}`)).body as ReservationView).state, 'allocated');
  t.is(((await bob.get(`v1/reservations/${waiting.id}`)).body as ReservationView).state, 'queued');
  await db.allow('refuse_grant', 'reservations');
  await db.close();

  t.is((await alice.delete(`v1/reservations/${held.id}`)).statusCode, 200);
  t.is(((await bob.get(`v1/reservations/${waiting.id}`)).body as ReservationView).state, 'allocated', 'the queued request is tried again');
  await assertDatabaseMatches(t, api);
});

test('while the database refuses every write, /healthz is 503 and requests fail without a trace; then it recovers', async (t) => {
  t.timeout(120_000);
  const api = await startApi(testConfig(labYaml(['m1', 'm2'])));
  t.teardown(() => api.close());
  const alice = api.http(await userToken(api, 'alice'));
  const kept = (await alice.post('v1/reservations', { json: { members: [{ role: 'main', spec: 't' }] } })).body as ReservationView;

  // Another process holds the write lock longer than the store waits for it.
  const locker = await openDb(api);
  await locker.lock(['reservations', 'machines', 'events']);
  const refused = await alice.post('v1/reservations', { json: { members: [{ role: 'main', spec: 't' }] } });
  t.is(refused.statusCode, 503, JSON.stringify(refused.body));
  t.is((refused.body as { code: string }).code, 'store_failed');
  const health = await api.http(null).get('healthz');
  t.is(health.statusCode, 503);
  t.is((health.body as { code: string }).code, 'store_failing');
  const released = await alice.delete(`v1/reservations/${kept.id}`);
  t.is(released.statusCode, 503, 'a release that cannot be stored is refused too');
  t.is(((await alice.get(`v1/reservations/${kept.id}`)).body as ReservationView).state, 'allocated', 'and changed nothing');
  await locker.unlock();
  await locker.close();

  const deadline = Date.now() + 180_000;
  while ((await api.http(null).get('healthz')).statusCode !== 200 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 250));
  t.is((await api.http(null).get('healthz')).statusCode, 200, 'healthy again without any request');
  const mine = ((await alice.get('v1/reservations')).body as ReservationView[]).map((view) => view.id);
  t.deepEqual(mine, [kept.id], 'only the reservation whose commit succeeded exists');
  const again = await alice.post('v1/reservations', { json: { members: [{ role: 'main', spec: 't' }] } });
  t.is(again.statusCode, 201);
  t.is((again.body as ReservationView).state, 'allocated', 'the second machine was never held by the failed request');
  await assertDatabaseMatches(t, api);
});

test("a NUL in a static host's cleanup output is stored as text; later writes and a restart work", async (t) => {
  t.timeout(600_000);
  const [host, spare] = await Promise.all([startSshd(), startSshd()]);
  t.teardown(() => Promise.all([host.stop(), spare.stop()]).then(() => undefined));
  const config = testConfig(
    `health: { quarantineAfter: 3 }\n${staticMachinesYaml([
      {
        name: 'h1',
        port: host.port,
        adminKeyPath: host.adminKey.path,
        authorizedKeysFile: host.authorizedKeysFile,
        labels: { type: 'static-host', slot: '1' },
      },
      {
        name: 'h2',
        port: spare.port,
        adminKeyPath: spare.adminKey.path,
        authorizedKeysFile: spare.authorizedKeysFile,
        labels: { type: 'static-host', slot: '2' },
      },
    ])}`,
  );
  let api = await startApi(config);
  t.teardown(() => api.close());
  const mallory = api.http(await userToken(api, 'mallory'));
  const bob = api.http(await userToken(api, 'bob'));
  // PostgreSQL's text cannot hold a NUL: it is stored as U+FFFD there (api/scheduler/store.ts).
  const stored = (text: string) => (api.database === undefined ? text : text.replaceAll('\u0000', '\uFFFD'));

  const created = (await mallory.post('v1/reservations', { json: { members: [{ role: 'main', spec: 'slot=1' }] } })).body as ReservationView;
  const ready = (await mallory.get(`v1/reservations/${created.id}`, { searchParams: { wait: 'ready', timeout: 300 } })).body as ReservationView;
  t.is(ready.state, 'ready');
  // A cleanup that prints a NUL and fails: a forced command on the line of the key Paddock cleans
  // up with (only root on the host can put it there now; the tenant's keys live in another file).
  const keys = await readFile(host.adminAuthorizedKeysFile, 'utf8');
  await writeFile(
    host.adminAuthorizedKeysFile,
    keys.replace(host.adminKey.publicKey, `command="printf 'cleanup\\000failed' >&2; exit 3" ${host.adminKey.publicKey}`),
  );
  await new Promise((resolve) => setTimeout(resolve, 7000)); // Paddock's open admin login idles out
  t.is((await mallory.delete(`v1/reservations/${created.id}`)).statusCode, 200);

  // The agent tries the cleanup five times, backing off, before it gives up: minutes on a busy machine.
  const deadline = Date.now() + 300_000;
  let machine = (await api.http().get('v1/machines/h1')).body as MachineView;
  while (machine.state === 'reserved' && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 500));
    machine = (await api.http().get('v1/machines/h1')).body as MachineView;
  }
  t.is(machine.state, 'quarantined', `a failed cleanup takes the host out of service: ${JSON.stringify(machine)}`);
  t.true(machine.reason?.includes('cleanup\u0000failed'), JSON.stringify(machine.reason));
  const events = (await mallory.get(`v1/reservations/${created.id}/events`)).body as { reason?: string }[];
  t.true(
    events.some((event) => event.reason?.includes(stored('cleanup\u0000failed'))),
    'the event keeps the text whole (it is read from the database)',
  );

  // Other users' writes go on, and the rows hold the NUL.
  const other = (await bob.post('v1/reservations', { json: { members: [{ role: 'main', spec: 'static-host' }] } })).body as ReservationView;
  t.is(((await bob.get(`v1/reservations/${other.id}`, { searchParams: { wait: 'ready', timeout: 300 } })).body as ReservationView).state, 'ready');
  const db = await openDb(api);
  const [row] = await db.all<{ reason: string }>("SELECT reason FROM machines WHERE name = 'h1'");
  await db.close();
  t.true(row.reason.includes(stored('cleanup\u0000failed')), 'the database holds the whole text');
  t.is((await api.http(null).get('healthz')).statusCode, 200);

  // A restart reads it back and keeps writing.
  await api.server.close();
  api = await startApi(config);
  t.is(((await api.http().get('v1/machines/h1')).body as MachineView).reason, stored(machine.reason!));
  t.is((await api.http().delete(`v1/reservations/${other.id}`)).statusCode, 200);
  await assertDatabaseMatches(t, api);
});
