// 50 concurrent clients make 500 gang requests (1 to 3 members) against 10 real sshd hosts. The
// stored history must then show no machine in two live reservations at once, and every request
// ended: granted then released, or expired from the queue. None may hang (deadlock). How many are
// granted depends on how busy the machine is, so the test asks only what the scheduler decides: no
// request expired before its queue timeout, and every machine was handed out.
import test from 'ava';
import type { ReservationView } from '../../protocol/api.js';
import { startApi, staticMachinesYaml, testConfig } from '../helpers/api.js';
import { startSshd } from '../helpers/sshd.js';
import { openStoredData } from '../helpers/database.js';
import { replayAllocations, type AllocationEvent } from '../helpers/replay.js';

const clients = 50;
const requests = 500;

/** A small deterministic generator, so a failure can be replayed. */
function random(seed: number) {
  return () => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return seed / 2147483648;
  };
}

test('500 gang requests from 50 clients on 10 machines: no double booking, every request ends', async (t) => {
  t.timeout(900_000);
  const hosts = await Promise.all(Array.from({ length: 10 }, () => startSshd()));
  const yaml = `
queue: { timeout: 40s, aging: 2s, starvation: 5s }
lease: { default: 60, max: 600 }
${staticMachinesYaml(
  hosts.map((host, index) => ({
    name: `m${String(index).padStart(2, '0')}`,
    port: host.port,
    adminKeyPath: host.adminKey.path,
    authorizedKeysFile: host.authorizedKeysFile,
    labels: { type: 'static-host', arch: 'x86_64', ...(index % 3 === 0 ? { disk: 'ssd' } : {}) },
    capacities: { cpus: index < 5 ? 2 : 8, ram: index < 5 ? '2GiB' : '16GiB' },
  })),
)}`;
  const api = await startApi(testConfig(yaml));
  const specs = ['static-host', 'cpus>=4', 'disk=ssd', 'ram<=4GiB', 'arch=x86_64 cpus>=2'];
  const next = random(7);
  const plans = Array.from({ length: requests }, (_, index) => ({
    index,
    members: Array.from({ length: 1 + Math.floor(next() * 3) }, (_, member) => ({ role: `r${member}`, spec: specs[Math.floor(next() * specs.length)] })),
    priority: Math.floor(next() * 3),
    useMachines: next() < 1 / 3,
  }));
  const outcomes: string[] = [];
  try {
    let cursor = 0;
    const http = api.http();
    await Promise.all(
      Array.from({ length: clients }, async () => {
        while (cursor < plans.length) {
          const plan = plans[cursor++];
          const created = await http.post('v1/reservations', { json: { members: plan.members, priority: plan.priority, lease: 60 } });
          t.is(created.statusCode, 201, JSON.stringify(created.body));
          const id = (created.body as ReservationView).id;
          let view = created.body as ReservationView;
          // A third of the jobs use their machines (wait until SSH is ready); the others give them
          // back as soon as they are granted, often while the agent is still provisioning them.
          const until = plan.useMachines ? ['ready'] : ['allocated', 'provisioning', 'ready'];
          while (!until.includes(view.state) && !['expired', 'failed', 'cancelled', 'released'].includes(view.state)) {
            const wait = plan.useMachines ? 'ready' : 'granted';
            view = (await http.get(`v1/reservations/${id}`, { searchParams: { wait, timeout: 30 } })).body as ReservationView;
          }
          const granted = until.includes(view.state);
          if (granted) await http.delete(`v1/reservations/${id}`);
          outcomes.push(granted ? 'granted' : view.state === 'failed' ? `failed: ${view.reason}` : view.state);
        }
      }),
    );
    // Wait for the releases to finish on the hosts.
    const deadline = Date.now() + 180_000;
    for (;;) {
      const live = (await http.get('v1/reservations', { searchParams: { all: 1 } })).body as ReservationView[];
      if (live.length === 0 || Date.now() > deadline) break;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  } finally {
    await api.server.close();
    await Promise.all(hosts.map((host) => host.stop()));
  }
  t.is(outcomes.length, requests);
  t.true(
    outcomes.every((state) => state === 'granted' || state === 'expired'),
    JSON.stringify(outcomes.filter((state) => state !== 'granted' && state !== 'expired')),
  );

  const db = await openStoredData(api);
  const all = <T>(sql: string) => db.all<T>(sql);
  if (db.dialect === 'sqlite') {
    const [{ journal_mode: journal }] = await all<{ journal_mode: string }>('PRAGMA journal_mode');
    t.is(journal, 'wal', 'the database is in WAL mode');
  }
  const reservations = await all<{ id: string; state: string; createdAt: string | Date }>('SELECT id, state, "createdAt" FROM reservations');
  const expiries = await all<{ reservationId: string; at: string | Date }>(`SELECT "reservationId", at FROM events WHERE type = 'state' AND "to" = 'expired'`);
  const events = await all<AllocationEvent>('SELECT id, "reservationId", type, "from", "to", machine FROM events ORDER BY id');
  await db.close();
  t.is(reservations.length, requests);
  t.true(
    reservations.every((reservation) => reservation.state === 'released' || reservation.state === 'expired'),
    'every request ended',
  );
  // Replay the history in commit order (test/helpers/replay.ts).
  const replay = replayAllocations(events);
  t.deepEqual(replay.doubleAllocations, [], 'no machine in two live reservations');
  t.deepEqual(replay.strayReleases, []);
  t.is(replay.held.size, 0, 'no machine is left held');
  t.true(replay.grants > 0);
  // Every machine matches some spec of every kind of request: a scheduler that works hands each out.
  t.deepEqual(
    [...replay.handedOut].sort(),
    hosts.map((_, index) => `m${String(index).padStart(2, '0')}`),
  );
  // A request leaves the queue unserved only once its queue timeout (40 s) has passed.
  const created = new Map(reservations.map((reservation) => [reservation.id, new Date(reservation.createdAt).getTime()]));
  t.is(expiries.length, outcomes.filter((state) => state === 'expired').length);
  for (const expiry of expiries) {
    const waited = new Date(expiry.at).getTime() - (created.get(expiry.reservationId) ?? Number.NaN);
    t.true(waited >= 40_000, `${expiry.reservationId} expired after ${waited} ms in the queue`);
  }
  await api.close();
});
