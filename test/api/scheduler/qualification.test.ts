// Qualification at the lowest priority, at the scheduler's level (a real SQLite file; the test
// speaks for the lab host's agent through the scheduler's agent calls, as the agent routes do): in a
// pool that runs at most one machine at once, a user's request that arrives during a qualification
// boot waits for that boot only, and gets the pool's room before the next boot.
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import test from 'ava';
import { openDatabase } from '../../../api/db/index.js';
import { Scheduler } from '../../../api/scheduler/scheduler.js';
import type { AgentTask } from '../../../protocol/agent.js';

const policy = {
  lease: { default: 600, max: 3600 },
  queue: { timeout: 600, aging: 60, starvation: 300 },
  health: { quarantineAfter: 3, retries: 2 },
  reaper: { interval: 3600 },
};

test('a request waits for at most the one qualification boot under way in a limited pool', async (t) => {
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'paddock-qualify-pool-'));
  const db = await openDatabase(dataDir);
  const labels = { pool: 'small', type: 'vm' };
  const scheduler = new Scheduler(db, {
    machines: [
      { name: 'small-1', kind: 'static', labels, capacities: {} },
      { name: 'small-2', kind: 'static', labels, capacities: {}, qualify: { check: 'true', boots: 3, pass: 3 } },
    ],
    policy,
    poolLimits: new Map([['small', 1]]),
  });
  await scheduler.start();
  t.teardown(async () => {
    await scheduler.stop();
    rmSync(dataDir, { recursive: true, force: true });
  });
  const claim = async (): Promise<AgentTask[]> => scheduler.agents.claim('local', ['static'], false, 0);
  const bringUp = async (task: AgentTask) => {
    await scheduler.agents.report('local', task.id, { kind: 'stage', stage: 'sshReady' });
    if (task.check !== undefined) await scheduler.agents.report('local', task.id, { kind: 'stage', stage: 'probed' });
    await scheduler.agents.report('local', task.id, { kind: 'ready', host: '127.0.0.1', port: 22, user: 'ci', hostKey: 'ssh-ed25519 AAAA' });
  };

  // The first qualification boot takes the pool's one room.
  const [boot] = await claim();
  t.is(boot.machine.name, 'small-2');
  t.is(boot.check, 'true');
  t.is(boot.action, 'provision');

  // A user's request meanwhile waits: the room is the boot's.
  const { reservation: user } = await scheduler.reservations.create(
    { name: 'alice', role: 'user' },
    { members: [{ role: 'vm', spec: 'type=vm', count: 1 }], priority: 0 },
  );
  t.is(user.state, 'queued');

  // The boot passes and is released: the user's request gets the room, not the next boot.
  await bringUp(boot);
  const [release] = await claim();
  t.like(release, { action: 'release', id: boot.id });
  await scheduler.agents.report('local', release.id, { kind: 'released' });
  t.is(user.state, 'allocated');
  t.is(user.allocations[0].machine, 'small-1');
  const machine = scheduler.inventory.get('small-2')!;
  t.is(machine.state, 'qualifying');
  t.like(machine.qualification, { state: 'running', passed: 1, failed: 0 });
  t.is(machine.qualification!.current, undefined, 'no boot while the user holds the room');

  // Once the user is done, qualification goes on.
  const [provision] = await claim();
  t.is(provision.reservationId, user.id);
  t.is(provision.check, undefined, "a user's task carries no check");
  await bringUp(provision);
  await scheduler.reservations.release({ name: 'alice', role: 'user' }, user.id);
  const [userRelease] = await claim();
  await scheduler.agents.report('local', userRelease.id, { kind: 'released' });
  t.not(machine.qualification!.current, undefined, 'the next boot starts once the room is free');
});
