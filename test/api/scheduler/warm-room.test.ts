// Warm machines in a pool that limits its machines at once (an OpenStack pool's maxInstances), at
// the scheduler's level (a real SQLite file; the test reports as the lab host's agent through the
// keeper, as the agent route does): warm machines take only the room reservations leave, so a
// member of another flavor granted while warm machines fill the pool has one of them given back.
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import test from 'ava';
import { openDatabase } from '../../../api/db/index.js';
import { Scheduler } from '../../../api/scheduler/scheduler.js';

const policy = {
  lease: { default: 600, max: 3600 },
  queue: { timeout: 600, aging: 60, starvation: 300 },
  health: { quarantineAfter: 3, retries: 2 },
  reaper: { interval: 3600 },
};

test('warm machines keep only the room reservations leave in a limited pool', async (t) => {
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'paddock-warm-room-'));
  const db = await openDatabase(dataDir);
  const warm = [{ image: 'tiny:latest', count: 2, idle: 3600 }];
  const machine = (flavor: string, slot: number) => ({
    name: `cloud-${flavor}-${slot}`,
    kind: 'openstack',
    labels: { pool: 'cloud', flavor },
    capacities: {},
    warm,
    warmPool: 'cloud',
  });
  const scheduler = new Scheduler(db, {
    machines: [machine('tiny', 1), machine('tiny', 2), machine('tiny', 3), machine('small', 1), machine('small', 2), machine('small', 3)],
    policy,
    poolLimits: new Map([['cloud', 3]]),
  });
  await scheduler.start();
  t.teardown(async () => {
    await scheduler.stop();
    rmSync(dataDir, { recursive: true, force: true });
  });
  const targets = (ready: string[]) =>
    scheduler.warm
      .report(
        'local',
        ready.map((name) => ({ machine: name, image: 'tiny:latest' })),
      )
      .targets.map((target) => target.machine.name);
  const reserve = async (flavor: string, image: string) => {
    const { reservation } = await scheduler.reservations.create(
      { name: 'alice', role: 'user' },
      { members: [{ role: 'vm', spec: `flavor=${flavor}`, image, count: 1 }], priority: 0 },
    );
    t.is(reservation.state, 'allocated');
    return reservation.allocations[0].machine;
  };

  t.deepEqual(targets([]), ['cloud-tiny-1', 'cloud-tiny-2'], 'the first machines of the pool, as many as asked');
  t.deepEqual(targets(['cloud-tiny-1', 'cloud-tiny-2']), ['cloud-tiny-1', 'cloud-tiny-2']);
  t.is(await reserve('tiny', 'tiny'), 'cloud-tiny-1', 'a warm machine of the image');
  t.deepEqual(targets(['cloud-tiny-2']), ['cloud-tiny-2', 'cloud-tiny-3'], 'the pool refills: 1 reserved and 2 warm fill its room');
  t.is(await reserve('small', 'other'), 'cloud-small-1');
  t.deepEqual(targets(['cloud-tiny-2', 'cloud-tiny-3']), ['cloud-tiny-2'], 'a warm machine is given back: 2 reserved leave room for 1');
  t.is(await reserve('small', 'other'), 'cloud-small-2', 'the pool’s last room goes to a reservation');
  t.deepEqual(targets(['cloud-tiny-2']), [], 'no room is left for a warm machine');
});
