// Benchmark (not a test): a long queue. 100 users queue 10,000 requests (100 each) for boards an
// admin holds, then: the time of one page of the reservation list (everyone's, an admin's view, and
// one user's), /healthz latency while lists run back to back, reserve+release cycles per second on
// other machines with the queue there, against the same measured before the queue was made (the
// baseline, in the same run), the same once every queued request is starving (waited past
// queue.starvation), and the server's memory per queued request (its heap after a full garbage
// collection). The server runs as `paddock serve` in a child process with a real SQLite file, its
// agent off.
//
//   npm run bench:queue      (PADDOCK_BENCH_QUICK=1 for a short run)
//
// Aims: a page under 50 ms, /healthz under 50 ms, at least 1,000 cycles/s.
import { setTimeout as sleep } from 'node:timers/promises';
import { build, cyclesPerSecond, heapMiB, request, rssMiB, startServer, stopServer, type Server } from './server.js';

const quick = process.env.PADDOCK_BENCH_QUICK === '1';
const users = 100;
const perUser = 100;
const boards = 100;
const vms = 64;
/** What a reserve+release cycle asks for: one of the machines the queue does not want. */
const vm = { role: 'main', spec: 'type=vm', count: 1 };
/** Seconds a request waits before it is starving (queue.starvation): the whole queue is by the last measurement. */
const starvation = 60;

function configYaml(port: number): string {
  const machine = (name: string, type: string) =>
    `  - { name: ${name}, kind: static, labels: { type: ${type} }, capacities: { cpus: 2 }, settings: { address: ${name}.lab, user: ci, adminKey: /nonexistent } }`;
  return (
    [
      `listen: 127.0.0.1:${port}`,
      'dataDir: data',
      'agent: { enabled: false }',
      // No agent serves these machines: without this their lab host would be silent, and they offline.
      'agents: { heartbeatTimeout: 1d }',
      'lease: { default: 2h, max: 8h }',
      `queue: { timeout: 4h, starvation: ${starvation}s }`,
      'quotas: { default: { reservations: 1000, queued: 1000, machines: 1000 } }',
      'machines:',
      ...Array.from({ length: boards }, (_, index) => machine(`board-${index}`, 'board')),
      ...Array.from({ length: vms }, (_, index) => machine(`vm-${index}`, 'vm')),
    ].join('\n') + '\n'
  );
}

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
const max = (values: number[]) => values.reduce((a, b) => Math.max(a, b), 0);
const ms = (started: bigint) => Number(process.hrtime.bigint() - started) / 1e6;

async function timed(server: Server, token: string, pathname: string): Promise<{ ms: number; count: number; next?: string }> {
  const started = process.hrtime.bigint();
  const answer = await request(server.port, token, 'GET', pathname);
  if (answer.status !== 200) throw new Error(`${pathname}: ${answer.status} ${JSON.stringify(answer.body)}`);
  return { ms: ms(started), count: answer.body.length, next: answer.headers['paddock-next-cursor'] as string | undefined };
}

async function makeQueue(server: Server, tokens: string[]): Promise<number> {
  const started = Date.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: 32 }, async () => {
      while (next < users * perUser) {
        const index = next++;
        const created = await request(server.port, tokens[index % users], 'POST', '/v1/reservations', {
          members: [{ role: 'main', spec: 'type=board', count: 1 }],
        });
        if (created.status !== 201 || created.body.state !== 'queued') throw new Error(`queue ${index}: ${created.status} ${JSON.stringify(created.body)}`);
      }
    }),
  );
  return (users * perUser) / ((Date.now() - started) / 1000);
}

/** /healthz latencies measured one after another while `lists` list pages run back to back. */
async function healthDuringLists(server: Server, pathname: string, seconds: number, lists = 4): Promise<{ health: number[]; pages: number[] }> {
  const deadline = Date.now() + seconds * 1000;
  const health: number[] = [];
  const pages: number[] = [];
  await Promise.all([
    ...Array.from({ length: lists }, async () => {
      while (Date.now() < deadline) pages.push((await timed(server, server.token, pathname)).ms);
    }),
    (async () => {
      while (Date.now() < deadline) {
        health.push((await timed(server, '', '/healthz')).ms);
        await sleep(5);
      }
    })(),
  ]);
  return { health, pages };
}

async function main(): Promise<void> {
  build();
  const server = await startServer(configYaml, { heap: true });
  try {
    const tokens: string[] = [];
    for (let index = 0; index < users; index++) {
      tokens.push((await request(server.port, server.token, 'POST', '/v1/tokens', { name: `user-${index}` })).body.token);
    }
    const hold = await request(server.port, server.token, 'POST', '/v1/reservations', { members: [{ role: 'all', spec: 'type=board', count: boards }] });
    if (hold.body.state !== 'allocated') throw new Error(`hold: ${JSON.stringify(hold.body)}`);
    await cyclesPerSecond(server, 1, 64, vm);
    const baselineRate = await cyclesPerSecond(server, quick ? 3 : 10, 64, vm);
    const emptyPage = median(
      await Promise.all(Array.from({ length: 5 }, () => timed(server, server.token, '/v1/reservations?all=1&limit=100'))).then((all) =>
        all.map((each) => each.ms),
      ),
    );
    await sleep(1000);
    const heapBefore = await heapMiB(server);
    const rssBefore = rssMiB(server.child.pid!);

    const createRate = await makeQueue(server, tokens);
    const queuedAt = Date.now();
    await sleep(1000);
    const heapAfter = await heapMiB(server);
    const rssAfter = rssMiB(server.child.pid!);
    console.log(`queued ${users * perUser} requests from ${users} users at ${createRate.toFixed(0)} requests/s`);
    console.log(
      `memory per queued request: ${(((heapAfter - heapBefore) * 1024) / (users * perUser)).toFixed(2)} KiB of heap after a full GC (heap ${heapBefore.toFixed(1)} → ${heapAfter.toFixed(1)} MiB; resident ${rssBefore.toFixed(1)} → ${rssAfter.toFixed(1)} MiB)`,
    );

    const rounds = quick ? 10 : 30;
    const samples = { first: [] as number[], deep: [] as number[], user: [] as number[], thousand: [] as number[] };
    let cursor: string | undefined;
    for (let page = 0; page < 60; page++)
      cursor = (await timed(server, server.token, `/v1/reservations?all=1&limit=100${cursor ? `&cursor=${cursor}` : ''}`)).next;
    for (let round = 0; round < rounds; round++) {
      samples.first.push((await timed(server, server.token, '/v1/reservations?all=1&limit=100')).ms);
      samples.deep.push((await timed(server, server.token, `/v1/reservations?all=1&limit=100&cursor=${cursor}`)).ms);
      samples.user.push((await timed(server, tokens[round % users], '/v1/reservations?limit=100')).ms);
      samples.thousand.push((await timed(server, server.token, '/v1/reservations?all=1&limit=1000')).ms);
    }
    console.log(
      `one page of 100 of everyone's ${users * perUser + 1} reservations: ${median(samples.first).toFixed(1)} ms median, ${max(samples.first).toFixed(1)} ms max (empty queue: ${emptyPage.toFixed(1)} ms) (aim: under 50 ms)`,
    );
    console.log(
      `the 61st page of 100: ${median(samples.deep).toFixed(1)} ms median; one user's page of their 100: ${median(samples.user).toFixed(1)} ms median; a page of 1,000: ${median(samples.thousand).toFixed(1)} ms median`,
    );

    for (const lists of [1, 4]) {
      const during = await healthDuringLists(server, '/v1/reservations?all=1&limit=100', quick ? 3 : 10, lists);
      console.log(
        `/healthz while ${lists === 1 ? 'one list runs' : `${lists} lists run`} back to back (${during.pages.length} pages, page median ${median(during.pages).toFixed(1)} ms): ${median(during.health).toFixed(1)} ms median, ${max(during.health).toFixed(1)} ms max over ${during.health.length} probes${lists === 1 ? ' (aim: under 50 ms)' : ''}`,
      );
    }
    const rate = await cyclesPerSecond(server, quick ? 3 : 10, 64, vm);
    console.log(
      `reserve+release cycles/s from 64 clients with the queue there: ${rate.toFixed(0)} (no queue, same run: ${baselineRate.toFixed(0)}; ratio ${(rate / baselineRate).toFixed(2)}) (aim: at least 1,000)`,
    );
    await sleep(queuedAt + (starvation + 1) * 1000 - Date.now());
    const starvingRate = await cyclesPerSecond(server, quick ? 3 : 10, 64, vm);
    console.log(
      `reserve+release cycles/s with every queued request starving: ${starvingRate.toFixed(0)} (ratio to no queue ${(starvingRate / baselineRate).toFixed(2)}) (aim: at least 1,000)`,
    );
    const still = await timed(server, server.token, '/v1/reservations?all=1&limit=1000');
    if (still.count !== 1000) throw new Error('the queue should still be there');
  } finally {
    await stopServer(server);
  }
}

await main();
