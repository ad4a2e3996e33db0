// Benchmark (not a test) of warm pools, in two parts.
//
// (a) On real QEMU, in one run: reserve→ready of the initramfs test image on a slot kept warm
//     (`warm: [{image: tiny, count: 1}]`) against a cold boot of the same image on a slot of
//     another entry with no warm pool, rounds interleaved (the order alternates); before each
//     timing the warm slot's refill has finished, so neither boot runs beside another. Prints the
//     medians and the ratio. Aim: warm under 1 s, at least 20 times faster than cold.
// (b) The warm-hit rate and the mean wait under a stream of requests (Poisson arrivals, exponential
//     hold times) for a pool of slots of which N are kept warm: a discrete-event model of what the
//     keeper does (api/scheduler/warm.ts, lab-host/warm.ts), with the boot and hand-over times
//     measured in (a). A request takes a warm VM of its image when one is ready, else a free slot
//     that is not warm (cold boot), else a warm one of another state (its warm VM stopped, cold
//     boot), else waits first in first out; a freed slot refills warm (a fresh boot) while fewer
//     than N are warm or warming.
//
//   node --import tsx bench/warm.ts [ROUNDS]      (default 5)
import { setTimeout as sleep } from 'node:timers/promises';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseConfig } from '../api/config.js';
import { serve } from '../cli/serve.js';
import { Paddock } from '../client/index.js';
import { stopVm, vmProcessesUnder } from '../provisioners/qemu/adapter.js';
import { silentLog } from '../protocol/log.js';

const rounds = Number(process.argv[2] ?? 5);
const root = path.resolve(import.meta.dirname, '..');
const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];

async function measure(): Promise<{ warm: number; cold: number }> {
  const built = execFileSync('bash', [path.join(root, 'images/recipes/build-test-images.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  const imageDir = built
    .split('\n')
    .find((line) => line.startsWith('x86-initramfs '))!
    .split(' ')[1];
  const dir = mkdtempSync(path.join(os.tmpdir(), 'paddock-bench-warm-'));
  const slot = 'kind: qemu, capacities: { cpus: 1, ram: 256MiB }';
  const config = {
    ...parseConfig(`machines:
  - { name: warm, ${slot}, labels: { arch: x86_64, bench: warm }, warm: [{ image: tiny, count: 1 }] }
  - { name: cold, ${slot}, labels: { arch: x86_64, bench: cold } }
`),
    listen: { host: '127.0.0.1', port: 0 },
    dataDir: path.join(dir, 'data'),
  };
  const server = await serve({ config, log: silentLog() });
  const records = path.join(config.dataDir, 'agent', 'provisioning', 'warm');
  const warmReady = () =>
    readdirSync(records, { withFileTypes: true })
      .filter((entry) => entry.name.startsWith('warm-'))
      .some((entry) => (JSON.parse(readFileSync(path.join(records, entry.name), 'utf8')) as { ready: boolean }).ready);
  const untilWarm = async () => {
    while (
      !(await Promise.resolve()
        .then(warmReady)
        .catch(() => false))
    )
      await sleep(100);
  };
  try {
    const paddock = new Paddock({ url: server.url, token: readFileSync(server.adminTokenFile, 'utf8').trim() });
    await paddock.images.upload(path.join(imageDir, 'bundle.tar'), { name: 'tiny', format: 'bundle' });
    const reserveToReady = async (pool: 'warm' | 'cold') => {
      await untilWarm();
      const started = process.hrtime.bigint();
      const reservation = await paddock.reserve({ members: [{ role: 'vm', spec: `bench=${pool}`, image: 'tiny' }], lease: '60m' }, { renew: false });
      await reservation.ready({ timeout: 300 });
      const elapsed = Number(process.hrtime.bigint() - started) / 1e9;
      await reservation.release();
      while ((await paddock.machines()).some((machine) => machine.state !== 'available')) await sleep(50);
      return elapsed;
    };
    // The first cold boot also fetches the image into the agent's cache: not counted.
    console.log(`first cold boot (image fetched and unpacked): ${(await reserveToReady('cold')).toFixed(2)} s`);
    const times: { warm: number; cold: number }[] = [];
    for (let round = 0; round < rounds; round++) {
      const time = { warm: 0, cold: 0 };
      for (const pool of round % 2 === 0 ? (['warm', 'cold'] as const) : (['cold', 'warm'] as const)) time[pool] = await reserveToReady(pool);
      times.push(time);
      console.log(`round ${round + 1}: warm ${time.warm.toFixed(3)} s, cold ${time.cold.toFixed(2)} s`);
    }
    const warm = median(times.map((time) => time.warm));
    const cold = median(times.map((time) => time.cold));
    console.log(
      `reserve→ready: warm ${warm.toFixed(3)} s vs cold ${cold.toFixed(2)} s (medians of ${rounds}): cold/warm ${(cold / warm).toFixed(1)}× ` +
        `(aim: warm under 1 s, at least 20×)`,
    );
    return { warm, cold };
  } finally {
    const qemuRoot = path.join(config.dataDir, 'qemu');
    await server.close();
    // The warm VM outlives its agent by design (a restart takes it back): it goes with the benchmark.
    for (const { pid } of await vmProcessesUnder(qemuRoot)) await stopVm(pid, qemuRoot);
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The model's parameters (seconds). */
interface Stream {
  slots: number;
  warm: number;
  arrivalsPerSecond: number;
  meanHold: number;
  /** Share of requests for the warm image; the others ask for other images. */
  warmShare: number;
  coldBoot: number;
  handOver: number;
  requests: number;
}

type Slot = { state: 'cold' } | { state: 'warming'; until: number } | { state: 'warm' } | { state: 'busy'; until: number };

/** A seeded generator (mulberry32), so every row of the table sees the same stream. */
function random(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let value = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    value = (value + Math.imul(value ^ (value >>> 7), 61 | value)) ^ value;
    return ((value ^ (value >>> 14)) >>> 0) / 4294967296;
  };
}

/** Runs the stream through the model of the keeper; the warm-hit rate among requests for the warm image, and the mean wait of all. */
export function simulate(stream: Stream, seed = 1): { hitRate: number; meanWait: number } {
  const next = random(seed);
  const exponential = (mean: number) => -Math.log(1 - next()) * mean;
  const slots: Slot[] = Array.from({ length: stream.slots }, () => ({ state: 'cold' }));
  const queue: { at: number; warmImage: boolean }[] = [];
  let now = 0;
  let nextArrival = exponential(1 / stream.arrivalsPerSecond);
  let arrived = 0;
  let hits = 0;
  let asked = 0;
  let waited = 0;
  let served = 0;
  const refill = () => {
    let warming = slots.filter((slot) => slot.state === 'warm' || slot.state === 'warming').length;
    for (const [index, slot] of slots.entries()) {
      if (warming >= stream.warm) break;
      if (slot.state === 'cold') {
        slots[index] = { state: 'warming', until: now + stream.coldBoot };
        warming++;
      }
    }
  };
  /** Serves a request now if a slot is free; false when none is. */
  const serve = (request: { at: number; warmImage: boolean }): boolean => {
    const pick = (state: Slot['state']) => slots.findIndex((slot) => slot.state === state);
    let index = request.warmImage ? pick('warm') : -1;
    let boot = stream.handOver;
    if (index < 0) {
      boot = stream.coldBoot;
      // A cold free slot first; a warming one next (its warm boot aborted); a warm one of another image last.
      for (const state of ['cold', 'warming', 'warm'] as const) if (index < 0) index = pick(state);
    }
    if (index < 0) return false;
    if (request.warmImage) {
      asked++;
      if (boot === stream.handOver) hits++;
    }
    const ready = now + boot;
    waited += ready - request.at;
    served++;
    slots[index] = { state: 'busy', until: ready + exponential(stream.meanHold) };
    return true;
  };
  refill();
  while (served < stream.requests) {
    const timed = slots.flatMap((slot, index) => (slot.state === 'busy' || slot.state === 'warming' ? [{ index, until: slot.until }] : []));
    const soonest = timed.reduce((best, each) => (each.until < best.until ? each : best), { index: -1, until: Infinity });
    if (arrived < stream.requests && nextArrival <= soonest.until) {
      now = nextArrival;
      arrived++;
      nextArrival = now + exponential(1 / stream.arrivalsPerSecond);
      const request = { at: now, warmImage: next() < stream.warmShare };
      if (queue.length > 0 || !serve(request)) queue.push(request);
    } else {
      now = soonest.until;
      const slot = slots[soonest.index];
      // A used slot never goes back warm as it is: it is free and cold, and a refill boots fresh.
      slots[soonest.index] = slot.state === 'warming' ? { state: 'warm' } : { state: 'cold' };
      while (queue.length > 0 && serve(queue[0])) queue.shift();
    }
    refill();
  }
  return { hitRate: asked === 0 ? 0 : hits / asked, meanWait: waited / served };
}

const measured = await measure();
const base: Stream = {
  slots: 8,
  warm: 0,
  arrivalsPerSecond: 1 / 30,
  meanHold: 120,
  warmShare: 0.8,
  coldBoot: measured.cold,
  handOver: measured.warm,
  requests: 20_000,
};
console.log(
  `\nsimulated stream: ${base.slots} slots, a request every ${1 / base.arrivalsPerSecond} s on average (Poisson), held ${base.meanHold} s on average ` +
    `(exponential), ${base.warmShare * 100}% for the warm image; cold boot ${base.coldBoot.toFixed(2)} s, hand-over ${base.handOver.toFixed(3)} s (measured above); ` +
    `${base.requests} requests`,
);
for (const arrivalsPerSecond of [1 / 30, 1 / 20]) {
  console.log(
    `\narrivals: one per ${(1 / arrivalsPerSecond).toFixed(0)} s (load ${((arrivalsPerSecond * base.meanHold) / base.slots).toFixed(2)} of the slots)`,
  );
  console.log('warm  hit rate  mean wait');
  for (const warm of [0, 1, 2, 4, 6]) {
    const { hitRate, meanWait } = simulate({ ...base, warm, arrivalsPerSecond });
    console.log(`${String(warm).padStart(4)}  ${(hitRate * 100).toFixed(1).padStart(7)}%  ${meanWait.toFixed(2).padStart(8)} s`);
  }
}
