// `paddock migrate --from sqlite FILE --to postgres://…`: a lab that ran on SQLite moves to
// PostgreSQL and goes on there as it was: its tokens, its machines' states and reasons, its live and
// ended reservations with their events. A second move into the filled database is refused and
// changes nothing; a password in the URL is never printed.
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import test from 'ava';
import type { MachineView, ReservationView } from '../../protocol/api.js';
import { startApi, testConfig } from '../helpers/api.js';
import { openStoredData } from '../helpers/database.js';
import { postgresDatabase } from '../helpers/postgres.js';
import { runPaddock } from '../helpers/server.js';

/** Static machines no agent ever visits: their states are the scheduler's alone. */
const lab = `agent: { enabled: false }\nagents: { heartbeatTimeout: 1d }\nmachines:\n${['m1', 'm2', 'm3']
  .map(
    (name, index) => `  - { name: ${name}, kind: static, labels: { type: t }, settings: { address: 127.0.0.${index + 2}, user: ci, adminKey: /nonexistent } }`,
  )
  .join('\n')}\n`;

test('a lab moved from SQLite to PostgreSQL goes on there as it was; a second move into it is refused', async (t) => {
  t.timeout(600_000);
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'paddock-move-'));
  t.teardown(() => rmSync(dataDir, { recursive: true, force: true }));
  const sqlite = testConfig(lab, dataDir);
  delete sqlite.database; // the lab as it was: on its SQLite file, whatever the pass
  const before = await startApi(sqlite);
  const aliceToken = ((await before.http().post('v1/tokens', { json: { name: 'alice' } })).body as { token: string }).token;
  const alice = before.http(aliceToken);
  const ended = (await alice.post('v1/reservations', { json: { members: [{ role: 'main', spec: 't' }] } })).body as ReservationView;
  t.is((await alice.delete(`v1/reservations/${ended.id}`)).statusCode, 200);
  const live = (await alice.post('v1/reservations', { json: { members: [{ role: 'main', spec: 't' }], idempotencyKey: 'job-41' } })).body as ReservationView;
  t.is(live.state, 'allocated');
  t.is((await before.http().post('v1/machines/m3/maintenance', { json: { reason: 'fan noise' } })).statusCode, 200);
  const shown = async (api: typeof before) => ({
    machines: ((await api.http().get('v1/machines')).body as MachineView[]).map((machine) => `${machine.name}:${machine.state}:${machine.reason ?? ''}`),
    live: ((await api.http().get('v1/reservations', { searchParams: { all: 1 } })).body as ReservationView[]).map((view) => `${view.id}:${view.state}`),
    events: ((await api.http().get(`v1/reservations/${ended.id}/events`)).body as { type: string; to: string }[]).map((event) => `${event.type}:${event.to}`),
  });
  const was = await shown(before);
  const adminToken = before.adminToken;
  await before.server.close();

  const database = postgresDatabase();
  const migrate = (...args: string[]) => runPaddock('http://127.0.0.1:1', adminToken, ['migrate', ...args]);
  const file = path.join(dataDir, 'paddock.sqlite');
  const withPassword = database.replace('postgres@', 'postgres:hunter2-secret@'); // trust authentication ignores it
  const moved = await migrate('--from', 'sqlite', file, '--to', withPassword, '--json');
  t.is(moved.code, 0, moved.stderr);
  const result = JSON.parse(moved.stdout) as { rows: Record<string, number>; to: string };
  t.is(result.rows.reservations, 2);
  t.is(result.rows.machines, 3);
  t.true(result.rows.events > 0);
  t.false(moved.stdout.includes('hunter2') || moved.stderr.includes('hunter2'), 'the password is never printed');

  // The lab on PostgreSQL: the same tokens, states, reservations and history.
  const after = await startApi({ ...testConfig(lab, dataDir), database });
  t.teardown(() => after.close());
  t.deepEqual(await shown(after), was);
  // Alice's token works, and her idempotency key still names her reservation.
  const aliceAfter = after.http(aliceToken);
  t.is(((await aliceAfter.get(`v1/reservations/${live.id}`)).body as ReservationView).state, 'allocated');
  const repeated = await aliceAfter.post('v1/reservations', { json: { members: [{ role: 'main', spec: 't' }], idempotencyKey: 'job-41' } });
  t.is((repeated.body as ReservationView).id, live.id);
  const stored = await openStoredData({ dataDir, database });
  t.deepEqual(await stored.all(`SELECT count(*)::int AS n FROM reservations`), [{ n: 2 }]);
  await stored.close();

  // A second move into the filled database is refused, says why, and changes nothing.
  const refused = await migrate('--from', 'sqlite', file, '--to', withPassword);
  t.is(refused.code, 1);
  t.regex(refused.stderr, /holds data already \(tokens, machines, reservations, events\): a move goes into an empty database only/);
  t.false(refused.stderr.includes('hunter2'));
  t.deepEqual(await shown(after), was);

  // Bad input: no such file, a URL that is not PostgreSQL's, an engine it does not know.
  const missing = await migrate('--from', 'sqlite', path.join(dataDir, 'nope.sqlite'), '--to', database);
  t.is(missing.code, 1);
  t.regex(missing.stderr, /no SQLite database at .*nope\.sqlite/);
  const notPostgres = await migrate('--from', 'sqlite', file, '--to', 'mysql://u:pw@h/db');
  t.not(notPostgres.code, 0);
  t.regex(notPostgres.stderr, /database is a PostgreSQL URL/);
  t.false(notPostgres.stderr.includes('pw@'));
  const engine = await migrate('--from', 'mysql', 'x', '--to', database);
  t.is(engine.code, 2);
});
