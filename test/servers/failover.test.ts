// Two API servers on one PostgreSQL database, and the leader killed with -9 in the middle of a burst
// of reservations from 50 clients while two lab-host agents provision static hosts and a runner host
// runs a job. The follower leads; the clients, the agents and the runner host (all given both URLs)
// carry on without a restart; the interrupted requests, retried by the client library with their
// idempotency keys, land once; and the stored history, replayed, shows every acknowledged
// reservation and release and no machine in two live reservations.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import test from 'ava';
import { Paddock } from '../../client/index.js';
import type { ReservationView } from '../../protocol/api.js';
import { staticMachinesYaml } from '../helpers/api.js';
import { openStoredData } from '../helpers/database.js';
import { replayAllocations, type AllocationEvent } from '../helpers/replay.js';
import { freePort } from '../helpers/ports.js';
import { postgresDatabase } from '../helpers/postgres.js';
import { killHard, startAgentProcess, startServerProcess, stopGracefully, type AgentProcess } from '../helpers/server.js';
import { startSshd, type TestSshd } from '../helpers/sshd.js';
import { textSink } from '../helpers/text-sink.js';
import { waitFor } from '../helpers/wait.js';

const bin = path.resolve(import.meta.dirname, '../../bin/paddock.js');
const clients = 50;
const cyclesPerClient = 6;

test('kill -9 of the leader during a burst from 50 clients: the follower leads, nothing acknowledged is lost, nothing is handed out twice', async (t) => {
  t.timeout(1_200_000);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'paddock-failover-'));
  chmodSync(dir, 0o711); // the runner host's run users pass through to their work folders
  const database = postgresDatabase(dir);
  const hosts: TestSshd[] = await Promise.all(Array.from({ length: 10 }, () => startSshd()));
  const [portA, portB] = [await freePort(), await freePort()];
  const urlA = `http://127.0.0.1:${portA}`;
  const urlB = `http://127.0.0.1:${portB}`;
  const urls = `${urlA},${urlB}`;
  const repo = path.join(dir, 'jobs.git');
  mkdirSync(path.join(repo, 'ci'), { recursive: true });
  writeFileSync(path.join(repo, 'ci', 'long.sh'), '#!/bin/sh\necho before\nsleep 8\necho after\n');
  chmodSync(path.join(repo, 'ci', 'long.sh'), 0o755);
  execFileSync('git', ['init', '-q', '-b', 'main', repo]);
  execFileSync('git', ['-C', repo, 'add', '.']);
  execFileSync('git', ['-C', repo, '-c', 'user.name=ci', '-c', 'user.email=ci@example.com', 'commit', '-q', '-m', 'long']);
  // The two servers differ in their address only: the data directory (images, logs) is shared, as
  // it is on a shared file system between hosts.
  const machines = staticMachinesYaml(
    hosts.map((host, index) => ({
      name: `m${index}`,
      port: host.port,
      adminKeyPath: host.adminKey.path,
      authorizedKeysFile: host.authorizedKeysFile,
      labHost: index % 2 === 0 ? 'lab-1' : 'lab-2',
    })),
  );
  const configOf = (port: number) => {
    const file = path.join(dir, `paddock-${port}.yaml`);
    writeFileSync(
      file,
      [
        `listen: 127.0.0.1:${port}`,
        `dataDir: ${path.join(dir, 'data')}`,
        `database: ${database}`,
        'agent: { enabled: false }',
        'agents: { heartbeatTimeout: 60 }',
        'queue: { timeout: 10m }',
        'runners: { heartbeatTimeout: 60 }',
        `repositories: { localRoots: [${JSON.stringify(dir)}] }`,
        machines,
      ].join('\n'),
    );
    return file;
  };
  const roleOf = async (url: string) => ((await (await fetch(`${url}/healthz`)).json()) as { role: string }).role;
  let outputA = '';
  let outputB = '';
  let serverA: ChildProcess | undefined;
  const started: { serverB?: ChildProcess; runner?: ChildProcess } = {};
  const agents: AgentProcess[] = [];
  t.teardown(async () => {
    await stopGracefully(started.runner);
    for (const agent of agents) await stopGracefully(agent.child);
    if (serverA) await killHard(serverA);
    if (started.serverB) await killHard(started.serverB);
    await Promise.all(hosts.map((host) => host.stop()));
    rmSync(dir, { recursive: true, force: true });
  });

  serverA = await startServerProcess(['--config', configOf(portA)], urlA, (chunk) => (outputA += chunk));
  // /healthz answers as soon as a server listens, as a follower first: A leads once it has taken the lock and loaded.
  await waitFor(async () => (await roleOf(urlA)) === 'leader', 120_000, 'A leads');
  const admin = new Paddock({ url: urls, token: readFileSync(path.join(dir, 'data', 'admin-token'), 'utf8').trim() });
  started.serverB = await startServerProcess(['--config', configOf(portB)], urlB, (chunk) => (outputB += chunk));
  t.is(await roleOf(urlA), 'leader');
  await waitFor(async () => /following the leader/.test(outputB), 60_000, 'B follows');
  t.is(await roleOf(urlB), 'follower');
  const redirect = await fetch(`${urlB}/v1/machines`, { redirect: 'manual' });
  t.is(redirect.status, 307, 'a follower sends clients to the leader');
  t.is(redirect.headers.get('paddock-leader'), urlA);
  t.is((await fetch(`${urlB}/healthz/leader`)).status, 503, 'a load balancer checking /healthz/leader skips the follower');

  for (const name of ['lab-1', 'lab-2']) {
    const token = (await admin.createToken(name, 'agent')).token;
    agents.push(startAgentProcess({ url: urls, name, token, dir }));
  }
  const runnerToken = (await admin.createToken('runner-1', 'runner')).token;
  const runner = spawn(process.execPath, [bin, 'runner', '--work', path.join(dir, 'work'), '--heartbeat', '0.5'], {
    env: { ...process.env, PADDOCK_URL: urls, PADDOCK_TOKEN: runnerToken },
    stdio: 'ignore',
  });
  started.runner = runner;
  const agentPids = agents.map((agent) => agent.child.pid);
  const runnerPid = runner.pid;
  await admin.jobs.add({ name: 'long', repository: repo, script: 'ci/long.sh' });
  const run = await admin.jobs.run('long');
  const logOf = async () => {
    const sink = textSink();
    await admin.jobs.log(run.id, sink);
    return sink.text;
  };
  await waitFor(async () => /before/.test(await logOf()), 180_000, 'the job has started');

  // The burst: each client reserves with an idempotency key of its own per cycle; every other
  // cycle waits for its machine to be ready (the agents at work), the rest give it back once granted.
  const users = await Promise.all(
    Array.from({ length: 5 }, async (_, index) => new Paddock({ url: urls, token: (await admin.createToken(`user-${index}`, 'user')).token })),
  );
  const acknowledged = new Map<string, string>(); // idempotency key → reservation id, as answered
  const released = new Set<string>(); // reservation ids whose release was answered
  const readyAfterKill: string[] = [];
  let killedAt = 0;
  let killing: Promise<void> | undefined;
  const failures: string[] = [];
  await Promise.all(
    Array.from({ length: clients }, async (_, client) => {
      const paddock = users[client % users.length];
      for (let cycle = 0; cycle < cyclesPerClient; cycle++) {
        const idempotencyKey = `c${client}-${cycle}`;
        try {
          const reservation = await paddock.reserve({ members: [{ role: 'main', spec: 'static-host' }], lease: 600, idempotencyKey }, { renew: false });
          acknowledged.set(idempotencyKey, reservation.id);
          // A third of the way in, the leader dies.
          if (killing === undefined && acknowledged.size >= (clients * cyclesPerClient) / 3) {
            killedAt = Date.now();
            killing = killHard(serverA!).then(() => (serverA = undefined));
          }
          if (cycle % 2 === 0) {
            await reservation.ready({ timeout: 600 });
            if (killedAt > 0) readyAfterKill.push(reservation.id);
          } else {
            await waitFor(async () => (await paddock.reservation(reservation.id)).state !== 'queued', 600_000, 'granted');
          }
          await reservation.release();
          released.add(reservation.id);
        } catch (error) {
          failures.push(`${idempotencyKey}: ${(error as Error).message}`);
        }
      }
    }),
  );
  await killing;
  t.deepEqual(failures, [], 'every client got through every cycle');
  t.true(killedAt > 0, 'the leader was killed during the burst');

  // B leads, and said when.
  t.is(await roleOf(urlB), 'leader');
  const led = /"time":"([^"]+)"[^\n]*leading: followers send clients here/.exec(outputB);
  t.truthy(led, outputB.slice(-2000));
  t.log(`the follower led ${((Date.parse(led![1]) - killedAt) / 1000).toFixed(1)} s after the kill -9 of the leader`);

  // The job started before the kill ends passed, its log whole; the runner host takes the next run.
  const ended = await admin.jobs.wait(run.id, { timeoutSeconds: 600 });
  t.is(ended.state, 'passed', await logOf());
  t.regex(await logOf(), /before\n(.|\n)*after\n/);
  t.is((await admin.jobs.wait((await admin.jobs.run('long')).id, { timeoutSeconds: 600 })).state, 'passed', 'the runner host takes the next run');
  // The agents and the runner host are the processes started before the kill: none restarted.
  t.deepEqual(
    agents.map((agent) => (agent.child.exitCode === null ? agent.child.pid : -1)),
    agentPids,
  );
  t.is(runner.exitCode, null);
  t.is(runner.pid, runnerPid);
  t.true(readyAfterKill.length > 0, 'the agents provisioned machines for reservations after the kill');

  // Wait until every release is done on the hosts, then replay what was stored.
  await waitFor(async () => (await admin.list({ all: true })).length === 0, 300_000, 'every reservation ended');
  const stored = await openStoredData({ dataDir: dir, database });
  const rows = await stored.all<{ id: string; state: string; idempotencyKey: string | null }>('SELECT id, state, "idempotencyKey" FROM reservations');
  const events = await stored.all<AllocationEvent>('SELECT id, "reservationId", type, "from", "to", machine FROM events ORDER BY id');
  await stored.close();
  const byKey = new Map<string, string[]>();
  for (const row of rows) if (row.idempotencyKey) byKey.set(row.idempotencyKey, [...(byKey.get(row.idempotencyKey) ?? []), row.id]);
  t.is(acknowledged.size, clients * cyclesPerClient);
  for (const [key, id] of acknowledged) t.deepEqual(byKey.get(key), [id], `${key}: stored once, as acknowledged`);
  t.is(rows.length, acknowledged.size, 'no reservation beyond the acknowledged ones');
  const states = new Map(rows.map((row) => [row.id, row.state]));
  for (const id of released) t.is(states.get(id), 'released', `${id}: its acknowledged release is stored`);
  // Replay the history in commit order (test/helpers/replay.ts).
  const replay = replayAllocations(events);
  t.deepEqual(replay.doubleAllocations, [], 'no machine in two live reservations');
  t.deepEqual(replay.strayReleases, []);
  t.is(replay.held.size, 0, 'no machine is left held');
  t.true(replay.grants >= acknowledged.size);
  const view: ReservationView[] = await admin.list({ all: true });
  t.deepEqual(view, []);
});
