// How fast the `paddock` command starts, run as users run it (bin/paddock.js, the compiled code in
// dist/): the median start-to-exit of `paddock --help` and `paddock ls` against `node -e 0` in the
// same run, rounds interleaved so each sees the same machine; and how long `paddock serve` on its
// embedded defaults takes from its start to its first answer on /healthz. Aims: `paddock ls` within
// 0.25 s of bare Node; serve ready in under 1 s.
import { setTimeout as sleep } from 'node:timers/promises';
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort } from '../test/helpers/ports.js';
import { build, request, startServer, stopServer } from './server.js';

const rounds = Number(process.env.ROUNDS ?? 15);
const bin = path.resolve('bin/paddock.js');
build();

const server = await startServer((port) => `listen: 127.0.0.1:${port}\ndataDir: data\nagent: { enabled: false }\nmachines: []\n`);
const env = { ...process.env, PADDOCK_URL: `http://127.0.0.1:${server.port}`, PADDOCK_TOKEN: server.token };

function timed(args: string[]): number {
  const started = process.hrtime.bigint();
  execFileSync(process.execPath, args, { env, stdio: 'ignore' });
  return Number(process.hrtime.bigint() - started) / 1e9;
}

const commands: Record<string, string[]> = {
  'node -e 0': ['-e', '0'],
  'paddock --help': [bin, '--help'],
  'paddock ls': [bin, 'ls'],
};
const times: Record<string, number[]> = Object.fromEntries(Object.keys(commands).map((name) => [name, []]));
for (let round = 0; round < rounds; round++) {
  const order = Object.keys(commands);
  if (round % 2 === 1) order.reverse();
  for (const name of order) times[name].push(timed(commands[name]));
}
await stopServer(server);

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
const bare = median(times['node -e 0']);
for (const name of Object.keys(commands)) {
  const value = median(times[name]);
  console.log(
    `${name.padEnd(16)} median ${value.toFixed(3)} s over ${rounds} runs: ${(value - bare).toFixed(3)} s over bare Node, ratio ${(value / bare).toFixed(2)}`,
  );
}
console.log(`aim: paddock ls within 0.250 s of bare Node: ${(median(times['paddock ls']) - bare).toFixed(3)} s`);

// `paddock serve` on the embedded defaults, from spawn to the first answer: the first start on an
// empty data directory (it creates the database), then a restart on the same directory.
async function serveOnce(dir: string): Promise<number> {
  const port = await freePort();
  const started = process.hrtime.bigint();
  const child = spawn(process.execPath, [bin, 'serve', '--listen', `127.0.0.1:${port}`, '--data', dir], { stdio: 'ignore' });
  for (;;) {
    const answer = await request(port, '', 'GET', '/healthz').catch(() => undefined);
    if (answer?.status === 200) break;
    await sleep(5);
  }
  const elapsed = Number(process.hrtime.bigint() - started) / 1e9;
  readFileSync(path.join(dir, 'admin-token'), 'utf8');
  child.kill('SIGTERM');
  await new Promise((resolve) => child.once('exit', resolve));
  return elapsed;
}
const firstStarts: number[] = [];
const restarts: number[] = [];
for (let round = 0; round < Math.min(rounds, 7); round++) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'paddock-bench-serve-'));
  firstStarts.push(await serveOnce(dir));
  restarts.push(await serveOnce(dir));
  rmSync(dir, { recursive: true, force: true });
}
for (const [what, values] of [
  ['first start', firstStarts],
  ['restart', restarts],
] as const) {
  console.log(
    `paddock serve (embedded defaults), ${what}: ready in ${median(values).toFixed(3)} s median over ${values.length} (bare Node ${bare.toFixed(3)} s, ratio ${(median(values) / bare).toFixed(1)}; aim: under 1 s)`,
  );
}
