// Benchmark (not a test): reserve+release cycles per second and allocation latency at 100, 1,000
// and 10,000 machines, the ratio of per-allocation cost at 10,000 to that at 100 (the baseline,
// measured in the same run), and the server's resident memory at 10,000 machines with 1,000 live
// reservations. The server runs as `paddock serve` in a child process with a real SQLite file; its
// agent is off, so a cycle measures the API, the scheduler and the database, not SSH.
//
//   npm run bench            (PADDOCK_BENCH_QUICK=1 for a short run)
import { agent, build, cycle, cyclesPerSecond, request, rssMiB, startServer as start, stopServer, type Server } from './server.js';

const quick = process.env.PADDOCK_BENCH_QUICK === '1';
const sizes = [100, 1000, 10_000];

/** A lab of `count` machines in 24 shapes (arch × ram × cpus), as a real lab has few board types. */
function configYaml(count: number, port: number): string {
  const lines = [
    `listen: 127.0.0.1:${port}`,
    'dataDir: data',
    'agent: { enabled: false }',
    'agents: { heartbeatTimeout: 1d }' /* no agent: keep the machines online */,
    'lease: { default: 1h, max: 8h }',
    'machines:',
  ];
  const arches = ['x86_64', 'armv7', 'arm64'];
  const rams = ['2GiB', '4GiB', '8GiB', '16GiB'];
  for (let index = 0; index < count; index++) {
    const arch = arches[index % 3];
    const ram = rams[Math.floor(index / 3) % 4];
    const cpus = index % 2 === 0 ? 2 : 4;
    lines.push(
      `  - { name: m${index}, kind: static, labels: { type: bench, arch: ${arch} }, capacities: { ram: ${ram}, cpus: ${cpus} }, settings: { address: bench-${index}.lab, user: ci, adminKey: /nonexistent } }`,
    );
  }
  return lines.join('\n') + '\n';
}

const startServer = (count: number): Promise<Server> => start((port) => configYaml(count, port));

const member = { role: 'main', spec: 'arch=x86_64 ram>=4GiB cpus>=2', count: 1 };

/** Any machine of the lab: 64 clients at once must all find a free one, even among 100. */
const anyMachine = { role: 'main', spec: 'bench', count: 1 };

/** Median latency of one allocation (POST answered `allocated`), sequential, release outside the timing. */
async function allocationLatency(server: Server, samples: number): Promise<number> {
  const times: number[] = [];
  for (let index = 0; index < samples; index++) {
    const started = process.hrtime.bigint();
    const created = await request(server.port, server.token, 'POST', '/v1/reservations', { members: [member], lease: 600 });
    times.push(Number(process.hrtime.bigint() - started) / 1e6);
    await request(server.port, server.token, 'DELETE', `/v1/reservations/${created.body.id}`);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)];
}

async function main(): Promise<void> {
  build();
  const results: { machines: number; latencyMs: number; cyclesPerSecond: number }[] = [];
  for (const size of sizes) {
    const server = await startServer(size);
    try {
      for (let warm = 0; warm < 200; warm++) await cycle(server, anyMachine);
      const latencyMs = await allocationLatency(server, quick ? 200 : 1000);
      const rate = await cyclesPerSecond(server, quick ? 3 : 10, 64, anyMachine);
      results.push({ machines: size, latencyMs, cyclesPerSecond: rate });
      console.log(`${String(size).padStart(6)} machines: allocation ${latencyMs.toFixed(3)} ms (median), ${rate.toFixed(0)} reserve+release cycles/s`);
    } finally {
      await stopServer(server);
    }
  }
  // Memory on a fresh server, so the figure is what 1,000 live reservations hold, not the garbage
  // the throughput run left behind.
  const server = await startServer(10_000);
  try {
    for (let index = 0; index < 1000; index++) {
      const created = await request(server.port, server.token, 'POST', '/v1/reservations', { members: [anyMachine], lease: 3600 });
      if (created.body.state !== 'allocated') throw new Error(`live reservation ${index}: ${JSON.stringify(created.body)}`);
    }
    const listed = await request(server.port, server.token, 'GET', '/v1/reservations?limit=1000');
    console.log(
      `server resident memory at 10,000 machines with ${listed.body.length} live reservations: ${rssMiB(server.child.pid!).toFixed(1)} MiB (aim: under 200 MB)`,
    );
  } finally {
    await stopServer(server);
  }
  const baseline = results[0];
  const largest = results[results.length - 1];
  console.log(`ratio of per-allocation cost, 10,000 machines to 100 (baseline): ${(largest.latencyMs / baseline.latencyMs).toFixed(2)} (aim: at most 2)`);
  console.log(
    `ratio of cycles/s, 10,000 machines to 100: ${(largest.cyclesPerSecond / baseline.cyclesPerSecond).toFixed(2)}; best ${Math.max(...results.map((r) => r.cyclesPerSecond)).toFixed(0)} cycles/s (aim: at least 1,000)`,
  );
  agent.destroy();
}

await main();
