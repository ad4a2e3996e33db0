// Benchmark (not a test): a simulated lab of 10,000 boards. Lab-host agents (the product's own)
// run in this process with the `sim` kind (bench/simlab/: boards as timers, log-normal boot times,
// a failure rate, power), each serving its boards to `paddock serve` run as deployed in a child
// process. At 100 boards (1 agent × 100) and at 10,000 (100 agents × 100), measured in the same run:
// - reserve+release cycles per second: many clients reserving one board with an idempotency key
//   and releasing it once granted (a cycle does not wait for the boot: that is the board's time,
//   not Paddock's; the boots go on under the cycles, aborted by the releases), beside jobs that
//   wait for ready, fetch credentials and hold their board a job's length;
// - the servers' CPU time per cycle, whose ratio 10,000 to 100 is the per-allocation cost ratio;
//   and, as bench/allocation.ts does, the median latency of one allocation, one at a time;
// - time in queue (request to grant, p50/p95, from the stored history), the jobs' time to ready,
//   the boot failures and the boards they quarantined, and the servers' resident memory;
// - the whole machine's CPU per cycle (server, benchmark, database, kernel): the benchmark runs on
//   the machine it measures, so that bounds the cycles/s it can show there.
// Afterwards the stored history of each lab is played back (simlab/replay.ts): a machine that was
// ever in two live reservations fails the benchmark.
//
//   npm run bench:simlab -- [--quick] [--json] [--time-scale 0.05] [--seconds 20] [--clients 64]
//                           [--jobs 16] [--hosts 100] [--boards 100] [--database URL] [--servers N]
//                           [--profile DIR] [--tmpfs]
//
// --database: the servers use that database (config `database:`; SQLite in their data directory
// when left out); both labs are made in it one after the other, so give it an empty one. --servers N
// starts N servers on it (needs --database); clients and agents are shared out among them.
// --tmpfs puts the servers' data directories (the SQLite file) on /dev/shm: what a cycle costs
// without the disk's flushes, which on a busy disk are most of it (see commit ms in the table).
// Aims: at least 1,000 cycles/s (PostgreSQL), a cost ratio of at most 2, no double allocation.
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { build as bundle } from 'esbuild';
import { agent as httpAgent, build, request, rssMiB, startServer, stopServer, type Server } from './server.js';
import { freePort } from '../test/helpers/ports.js';
import { startLab } from './simlab/lab.js';
import { allocationLatency, cycler, job, newTally, percentile, type Client } from './simlab/load.js';
import { counterDelta, readCounters } from './simlab/metrics.js';
import { queueTimes, readHistory, replayHistory, type Replay } from './simlab/replay.js';

class UsageError extends Error {}

function options() {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      json: { type: 'boolean', default: false },
      'time-scale': { type: 'string' },
      seconds: { type: 'string' },
      cycles: { type: 'string' },
      clients: { type: 'string' },
      jobs: { type: 'string' },
      hosts: { type: 'string' },
      boards: { type: 'string' },
      'boot-seconds': { type: 'string' },
      'failure-rate': { type: 'string' },
      database: { type: 'string' },
      servers: { type: 'string' },
      profile: { type: 'string' },
      tmpfs: { type: 'boolean', default: false },
    },
    strict: true,
  });
  const quick = values.quick;
  const number = (name: keyof typeof values, fallback: number, min: number, max: number, whole = true): number => {
    const text = values[name];
    if (text === undefined) return fallback;
    const value = Number(text);
    if (typeof text !== 'string' || text.trim() === '' || !Number.isFinite(value) || value < min || value > max || (whole && !Number.isInteger(value)))
      throw new UsageError(`--${name} ${JSON.stringify(text)}: a ${whole ? 'whole ' : ''}number from ${min} to ${max}`);
    return value;
  };
  const database = values.database;
  if (database !== undefined && !/^postgres(ql)?:\/\/\S+$/.test(database)) throw new UsageError('--database is a postgres://… URL (leave it out for SQLite)');
  const servers = number('servers', 1, 1, 16);
  if (values.tmpfs && !existsSync('/dev/shm')) throw new UsageError('--tmpfs: this system has no /dev/shm');
  if (servers > 1 && database === undefined)
    throw new UsageError(`--servers ${servers}: several servers share one database; give it with --database postgres://… (SQLite is one server's file)`);
  return {
    quick,
    json: values.json,
    timeScale: number('time-scale', quick ? 0.01 : 0.05, 0.0001, 10, false),
    seconds: number('seconds', 20, 1, 3600),
    /** With --quick: the cycles per lab, instead of a time. */
    cycles: number('cycles', quick ? 300 : 0, 0, 10_000_000),
    clients: number('clients', quick ? 8 : 64, 1, 1000),
    jobs: number('jobs', quick ? 2 : 16, 0, 1000),
    hosts: number('hosts', quick ? 2 : 100, 1, 1000),
    boards: number('boards', quick ? 5 : 100, 1, 10_000),
    bootSeconds: number('boot-seconds', 20, 0.1, 3600, false),
    failureRate: number('failure-rate', 0.02, 0, 1, false),
    database,
    servers,
    /** A folder for the servers' CPU profiles (node --cpu-prof), one per server and lab. */
    profile: values.profile,
    /** The servers' data (the SQLite file) on /dev/shm: a cycle without the disk's flushes. */
    tmpfs: values.tmpfs,
  };
}

type Options = ReturnType<typeof options>;

function configYaml(options: Options, hosts: number, port: number, metricsPort: number): string {
  const settings = `{ bootSeconds: ${options.bootSeconds}, failureRate: ${options.failureRate}, timeScale: ${options.timeScale} }`;
  return (
    [
      `listen: 127.0.0.1:${port}`,
      `metrics: { listen: 127.0.0.1:${metricsPort} }`,
      'dataDir: data',
      ...(options.database ? [`database: ${JSON.stringify(options.database)}`] : []),
      // No agent in the server: the lab's agents dial in.
      'agent: { enabled: false }',
      'lease: { default: 10m, max: 1h }',
      'queue: { timeout: 10m }',
      'quotas: { default: { reservations: 1000000, queued: 1000000, machines: 1000000 } }',
      'machines:',
      ...Array.from(
        { length: hosts },
        (_, index) =>
          `  - { name: sim-${index + 1}, kind: sim, count: ${options.boards}, labHost: host-${index + 1}, labels: { arch: arm64 }, capacities: { cpus: 4, ram: 2GiB }, settings: ${settings} }`,
      ),
    ].join('\n') + '\n'
  );
}

/** CPU seconds a process has used (user + system), from /proc. */
function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8')
    .replace(/^.*\) /, '')
    .split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** A new token named `name`; one left by an earlier lab in the same database (--database) is revoked first. */
async function freshToken(server: Server, name: string, role: 'user' | 'agent'): Promise<string> {
  const revoked = await request(server.port, server.token, 'DELETE', `/v1/tokens/${name}`);
  if (revoked.status !== 204 && revoked.status !== 404) throw new Error(`revoke ${name}: HTTP ${revoked.status} ${JSON.stringify(revoked.body)}`);
  const answer = await request(server.port, server.token, 'POST', '/v1/tokens', { name, role });
  if (answer.status !== 201) throw new Error(`token ${name}: HTTP ${answer.status} ${JSON.stringify(answer.body)}`);
  return answer.body.token;
}

/** How many machines are in `state`, over every page. */
async function countMachines(server: Server, state: string): Promise<{ count: number; minHealth: number; reasons: Map<string, number> }> {
  let count = 0;
  let minHealth = 1;
  const reasons = new Map<string, number>();
  let cursor: string | undefined;
  do {
    const answer = await request(server.port, server.token, 'GET', `/v1/machines?state=${state}&limit=1000${cursor ? `&cursor=${cursor}` : ''}`);
    if (answer.status !== 200) throw new Error(`machines: HTTP ${answer.status} ${JSON.stringify(answer.body)}`);
    const machines = answer.body as unknown as { health?: number; reason?: string }[];
    count += machines.length;
    for (const machine of machines) {
      minHealth = Math.min(minHealth, machine.health ?? 1);
      // The reason without the machine's own words (names, counts), so alike ones add up.
      const reason = (machine.reason ?? 'no reason').replace(/sim-\d+-\d+/g, 'BOARD').replace(/\d+(\.\d+)?/g, 'N');
      reasons.set(reason, (reasons.get(reason) ?? 0) + 1);
    }
    cursor = answer.headers['paddock-next-cursor'] as string | undefined;
  } while (cursor);
  return { count, minHealth, reasons };
}

/**
 * The server that leads (several servers on one PostgreSQL database elect one; /healthz/leader
 * answers 200 on it): tokens are made and machines counted there. A build without leaders has no
 * such route: its one server is the leader.
 */
async function leaderOf(servers: Server[]): Promise<Server> {
  for (let attempt = 0; attempt < 600; attempt++) {
    for (const server of servers) {
      const answer = await request(server.port, '', 'GET', '/healthz/leader');
      if (answer.status === 200 || answer.status === 404) return server;
    }
    await sleep(100);
  }
  throw new Error('no server became the leader within a minute');
}

async function waitForMachines(server: Server, total: number, what: string): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    if ((await countMachines(server, 'available')).count === total) return;
    if (attempt > 600) throw new Error(`not every machine became available ${what}`);
    await sleep(200);
  }
}

/** Seconds of CPU the whole machine spent busy and in all, every core summed (os.cpus()). */
function machineCpu(): { busy: number; total: number } {
  let busy = 0;
  let total = 0;
  for (const cpu of os.cpus()) {
    const { user, nice, sys, irq, idle } = cpu.times;
    busy += user + nice + sys + irq;
    total += user + nice + sys + irq + idle;
  }
  return { busy: busy / 1000, total: total / 1000 };
}

/** The benchmark's own CPU (its clients and agents) per cycle, in ms. */
const benchMsPerCycle = (result: LabResult) => (result.benchCpuShare * 1000) / result.cyclesPerSecond;

interface LabResult {
  machines: number;
  hosts: number;
  cycles: number;
  seconds: number;
  cyclesPerSecond: number;
  serverCpuMsPerCycle: number;
  benchCpuShare: number;
  /** CPU time of the whole machine (every process, the kernel's work too) per cycle, and the share of its cores busy. */
  machineCpuMsPerCycle: number;
  machineBusyShare: number;
  allocationMs: number;
  commitsPerCycle: number;
  commitMs: number;
  /** Requests the servers answered per cycle, by route (the agents' and the jobs' included). */
  requestsPerCycle: Record<string, number>;
  queueMs: { p50: number; p95: number; count: number };
  readySeconds: { p50: number; p95: number; count: number };
  boots: number;
  bootFailures: number;
  jobsFailed: number;
  quarantined: number;
  /** Why, by reason with the numbers and board names left out. */
  quarantineReasons: Record<string, number>;
  rssMiB: number[];
  replay: Pick<Replay, 'events' | 'grants' | 'releases'> & { doubleAllocations: number; strayReleases: number; held: number };
}

/** The admin token of the database the labs share (--database): written to a file by the first server only. */
let sharedAdminToken: string | undefined;

async function runLab(options: Options, hosts: number, hook: { url: string; registry: string }, say: (line: string) => void): Promise<LabResult> {
  const machines = hosts * options.boards;
  const servers: Server[] = [];
  let lab: ReturnType<typeof startLab> | undefined;
  try {
    const metricsPorts: number[] = [];
    for (let index = 0; index < options.servers; index++) {
      const metricsPort = await freePort();
      metricsPorts.push(metricsPort);
      servers.push(
        await startServer((port) => configYaml(options, hosts, port, metricsPort), {
          nodeFlags: [`--import=${hook.url}`, ...(options.profile ? ['--cpu-prof', `--cpu-prof-dir=${path.resolve(options.profile)}`] : [])],
          env: { PADDOCK_SIMLAB_REGISTRY: hook.registry },
          logFile: true,
          ...(options.tmpfs ? { baseDir: '/dev/shm' } : {}),
          ...(sharedAdminToken === undefined ? {} : { adminToken: sharedAdminToken }),
        }),
      );
      if (options.database) sharedAdminToken ??= servers[0].token;
    }
    const first = await leaderOf(servers);
    const names = Array.from({ length: hosts }, (_, index) => `host-${index + 1}`);
    const agentTokens: string[] = [];
    for (const name of names) agentTokens.push(await freshToken(first, name, 'agent'));
    const users = Math.min(8, options.clients + options.jobs);
    const userTokens: string[] = [];
    for (let index = 0; index < users; index++) userTokens.push(await freshToken(first, `ci-${index}`, 'user'));
    lab = startLab({ url: (index) => `http://127.0.0.1:${servers[index % servers.length].port}`, tokens: agentTokens, names, boards: options.boards });
    await waitForMachines(first, machines, 'once their agents were heard');
    say(`${machines} boards on ${hosts} lab host${hosts === 1 ? '' : 's'} ready to reserve`);

    const client = (index: number): Client => ({ server: servers[index % servers.length], token: userTokens[index % users] });
    const tally = newTally();
    let stopping = false;
    const done = () => stopping || (options.cycles > 0 && tally.cycles >= options.cycles);
    const holdMs = 60_000 * options.timeScale;
    const jobs = Array.from({ length: options.jobs }, (_, index) => job(client(index), `job-${hosts}-${index}`, tally, holdMs, () => stopping));
    // Awaited after the cycles; a job that fails before then must not end the process unhandled
    // while the cycles' own error is reported and the servers stop.
    for (const running of jobs) running.catch(() => {});
    // A warm-up: the servers' code optimised and the jobs' boards booting before the measurement.
    const warm = newTally();
    let warming = true;
    await Promise.all([
      ...Array.from({ length: options.clients }, (_, index) => cycler(client(index), `warm-${hosts}-${index}`, warm, () => !warming)),
      sleep(options.quick ? 500 : 3000).then(() => (warming = false)),
    ]);
    const cpuBefore = servers.reduce((sum, server) => sum + cpuSeconds(server.child.pid!), 0);
    const benchBefore = process.cpuUsage();
    const machineBefore = machineCpu();
    const countersBefore = await readCounters(metricsPorts);
    const started = Date.now();
    const timer = options.cycles > 0 ? undefined : setTimeout(() => (stopping = true), options.seconds * 1000);
    await Promise.all(Array.from({ length: options.clients }, (_, index) => cycler(client(index), `cycle-${hosts}-${index}`, tally, done)));
    clearTimeout(timer);
    const seconds = (Date.now() - started) / 1000;
    const serverCpu = servers.reduce((sum, server) => sum + cpuSeconds(server.child.pid!), 0) - cpuBefore;
    const benchCpu = process.cpuUsage(benchBefore);
    const machineAfter = machineCpu();
    const rss = servers.map((server) => rssMiB(server.child.pid!));
    const counters = counterDelta(countersBefore, await readCounters(metricsPorts));
    const allocationMs = await allocationLatency(client(0), `probe-${hosts}`, options.quick ? 30 : 300);
    stopping = true;
    await Promise.all(jobs);
    const quarantine = await countMachines(first, 'quarantined');
    // Every release through its agent before the history is read.
    await waitForMachines(first, machines - quarantine.count, 'after the last release');
    await lab.stop();
    lab = undefined;
    for (const server of servers) await stopServer(server, { keep: true });

    const history = await readHistory(options.database ? { url: options.database } : { sqliteFile: path.join(first.dir, 'data', 'paddock.sqlite') });
    const replay = replayHistory(history);
    const waited = queueTimes(history, tally.reservations);
    const ours = history.filter((event) => event.type === 'allocation' && tally.reservations.has(event.reservationId));
    const result: LabResult = {
      machines,
      hosts,
      cycles: tally.cycles,
      seconds,
      cyclesPerSecond: tally.cycles / seconds,
      serverCpuMsPerCycle: (serverCpu * 1000) / tally.cycles,
      benchCpuShare: (benchCpu.user + benchCpu.system) / 1e6 / seconds,
      machineCpuMsPerCycle: ((machineAfter.busy - machineBefore.busy) * 1000) / tally.cycles,
      machineBusyShare: (machineAfter.busy - machineBefore.busy) / (machineAfter.total - machineBefore.total),
      allocationMs,
      commitsPerCycle: counters.commits / tally.cycles,
      commitMs: (counters.commitSeconds * 1000) / counters.commits,
      requestsPerCycle: Object.fromEntries([...counters.requests].sort((a, b) => b[1] - a[1]).map(([route, count]) => [route, count / tally.cycles])),
      queueMs: { p50: percentile(waited, 0.5), p95: percentile(waited, 0.95), count: waited.length },
      readySeconds: { p50: percentile(tally.readySeconds, 0.5), p95: percentile(tally.readySeconds, 0.95), count: tally.readySeconds.length },
      boots: ours.filter((event) => event.to === 'ready').length,
      bootFailures: ours.filter((event) => event.reason?.includes('boot_timeout')).length,
      jobsFailed: tally.jobsFailed,
      quarantined: quarantine.count,
      quarantineReasons: Object.fromEntries(quarantine.reasons),
      rssMiB: rss,
      replay: {
        events: replay.events,
        grants: replay.grants,
        releases: replay.releases,
        doubleAllocations: replay.doubleAllocations.length,
        strayReleases: replay.strayReleases.length,
        held: replay.held.size,
      },
    };
    for (const conflict of replay.doubleAllocations.slice(0, 20))
      say(`DOUBLE ALLOCATION: ${conflict.machine} granted to ${conflict.reservationId} (event ${conflict.eventId}) while ${conflict.holder} held it`);
    for (const conflict of replay.strayReleases.slice(0, 20))
      say(`stray release: ${conflict.machine} released by ${conflict.reservationId} (event ${conflict.eventId}), held by ${conflict.holder ?? 'none'}`);
    return result;
  } finally {
    await lab?.stop();
    for (const server of servers) await stopServer(server);
  }
}

function table(results: LabResult[]): string[] {
  const fixed = (value: number, digits: number) => (Number.isFinite(value) ? value.toFixed(digits) : '-');
  const rows = [
    [
      'machines',
      'agents',
      'cycles',
      'cycles/s',
      'server CPU ms/cycle',
      'commits/cycle',
      'commit ms',
      'requests/cycle',
      'allocation ms (p50)',
      'queue ms p50/p95',
      'ready s p50/p95',
      'boots',
      'boot failures',
      'quarantined',
      'server RSS MiB',
    ],
    ...results.map((result) => [
      String(result.machines),
      String(result.hosts),
      String(result.cycles),
      fixed(result.cyclesPerSecond, 0),
      fixed(result.serverCpuMsPerCycle, 3),
      fixed(result.commitsPerCycle, 2),
      fixed(result.commitMs, 2),
      fixed(
        Object.values(result.requestsPerCycle).reduce((sum, count) => sum + count, 0),
        1,
      ),
      fixed(result.allocationMs, 2),
      `${fixed(result.queueMs.p50, 0)} / ${fixed(result.queueMs.p95, 0)}`,
      `${fixed(result.readySeconds.p50, 2)} / ${fixed(result.readySeconds.p95, 2)}`,
      String(result.boots),
      String(result.bootFailures),
      String(result.quarantined),
      result.rssMiB.map((rss) => rss.toFixed(0)).join(' + '),
    ]),
  ];
  const widths = rows[0].map((_, column) => Math.max(...rows.map((row) => row[column].length)));
  return rows.map((row) => row.map((cell, column) => cell.padStart(widths[column])).join('  '));
}

async function main(): Promise<void> {
  let chosen: Options;
  try {
    chosen = options();
  } catch (error) {
    if (error instanceof UsageError || (error as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      console.error(`simlab: ${(error as Error).message}`);
      process.exit(2);
    }
    throw error;
  }
  const say = (line: string) => (chosen.json ? console.error(line) : console.log(line));
  build();
  const work = mkdtempSync(path.join(os.tmpdir(), 'paddock-simlab-'));
  try {
    const hookFile = path.join(work, 'sim-hook.mjs');
    await bundle({
      entryPoints: ['bench/simlab/server-hook.ts'],
      bundle: true,
      platform: 'node',
      format: 'esm',
      target: 'node20',
      outfile: hookFile,
      logLevel: 'warning',
    });
    const hook = { url: pathToFileURL(hookFile).href, registry: pathToFileURL(path.resolve('dist/provisioners/registry.js')).href };
    const results: LabResult[] = [];
    for (const hosts of [1, chosen.hosts]) results.push(await runLab(chosen, hosts, hook, say));
    const [baseline, large] = results;
    const ratios = {
      cpuPerCycle: large.serverCpuMsPerCycle / baseline.serverCpuMsPerCycle,
      allocationLatency: large.allocationMs / baseline.allocationMs,
      cyclesPerSecond: large.cyclesPerSecond / baseline.cyclesPerSecond,
    };
    const doubles = results.reduce((sum, result) => sum + result.replay.doubleAllocations, 0);
    for (const line of table(results)) say(line);
    say(
      `per-allocation cost, ${large.machines} machines to ${baseline.machines} (baseline, same run): server CPU per cycle ${ratios.cpuPerCycle.toFixed(2)}, allocation latency ${ratios.allocationLatency.toFixed(2)} (aim: at most 2)`,
    );
    say(
      `cycles/s, ${large.machines} to ${baseline.machines}: ${ratios.cyclesPerSecond.toFixed(2)}; best ${Math.max(baseline.cyclesPerSecond, large.cyclesPerSecond).toFixed(0)} cycles/s (aim: at least 1,000 on PostgreSQL)`,
    );
    // The leader does a cycle's work on one core (Node's one thread): what that core could carry at
    // most, whatever the benchmark's own clients and agents take of the machine beside it.
    say(
      `one server core at the measured CPU per cycle carries at most ${results.map((result) => `${(1000 / result.serverCpuMsPerCycle).toFixed(0)} cycles/s (${result.machines} machines)`).join(', ')}; the benchmark's clients and agents took ${results.map((result) => `${benchMsPerCycle(result).toFixed(2)} ms`).join(', ')} of CPU per cycle beside it`,
    );
    // The benchmark runs on the machine it measures: what every process took together bounds the figure.
    say(
      `the whole machine (${os.cpus().length} cores) while measuring: ${results
        .map(
          (result) =>
            `${(result.machineBusyShare * 100).toFixed(0)} % busy at ${result.machines} machines, ${result.machineCpuMsPerCycle.toFixed(2)} ms of CPU per cycle (server ${result.serverCpuMsPerCycle.toFixed(2)}, benchmark ${benchMsPerCycle(result).toFixed(2)}, the database and the rest ${Math.max(0, result.machineCpuMsPerCycle - result.serverCpuMsPerCycle - benchMsPerCycle(result)).toFixed(2)}): at most ${((os.cpus().length * 1000) / result.machineCpuMsPerCycle).toFixed(0)} cycles/s here`,
        )
        .join('; ')}`,
    );
    say(
      `replayed history: ${results.map((result) => `${result.replay.grants} grants, ${result.replay.releases} releases of ${result.machines} machines`).join('; ')}: ${doubles === 0 ? 'no machine was ever in two live reservations' : `${doubles} DOUBLE ALLOCATIONS`}`,
    );
    for (const result of results) {
      const routes = Object.entries(result.requestsPerCycle).map(([route, count]) => `${route} ${count.toFixed(2)}`);
      say(`requests per cycle at ${result.machines} machines: ${routes.join(', ')}`);
    }
    for (const result of results) {
      for (const [reason, count] of Object.entries(result.quarantineReasons)) say(`quarantined at ${result.machines} machines: ${count} × ${reason}`);
    }
    say(
      `bench process CPU while measuring: ${results.map((result) => `${(result.benchCpuShare * 100).toFixed(0)} %`).join(', ')} of one core (agents and clients)`,
    );
    if (chosen.json) console.log(JSON.stringify({ options: chosen, labs: results, ratios, doubleAllocations: doubles }));
    if (doubles > 0) {
      console.error(`simlab: FAILED: ${doubles} double allocation${doubles === 1 ? '' : 's'} in the stored history`);
      process.exitCode = 1;
    }
  } catch (error) {
    console.error(`simlab: ${(error as Error).message}`);
    process.exitCode = 1;
  } finally {
    rmSync(work, { recursive: true, force: true });
    httpAgent.destroy();
  }
}

await main();
