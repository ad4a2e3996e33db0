// `npm run demo`: Paddock on its embedded defaults, and a real job against it. `paddock serve`
// without a config file runs the API, the SQLite file and a local agent with a pool of two QEMU
// VM slots. The demo builds the x86 test image if it is not cached (images/recipes), uploads it
// with `paddock images upload`, and runs examples/two-hosts.ts: two VMs booted from that image
// as one gang, commands on both in parallel, a file copied from one to the other, released.
import { setTimeout as sleep } from 'node:timers/promises';
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freeLoopbackPort } from '../provisioners/qemu/adapter.js';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const dir = mkdtempSync(path.join(os.tmpdir(), 'paddock-demo-'));
const port = await freeLoopbackPort();
const url = `http://127.0.0.1:${port}`;
const bin = path.join(root, 'bin/paddock.js');

console.error('demo: building the x86 test image (cached after the first time)');
const built = execFileSync('bash', [path.join(root, 'images/recipes/build-test-images.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
const imageDir = built
  .split('\n')
  .find((line) => line.startsWith('x86-initramfs '))!
  .split(' ')[1];

const server = spawn(process.execPath, [bin, 'serve', '--log-format', 'text', '--listen', `127.0.0.1:${port}`, '--data', path.join(dir, 'data')], {
  stdio: 'inherit',
});
let code = 1;
try {
  for (let attempt = 0; ; attempt++) {
    try {
      if ((await fetch(`${url}/healthz`)).ok) break;
    } catch {
      if (attempt > 300 || server.exitCode !== null) throw new Error('paddock serve did not start');
    }
    await sleep(100);
  }
  const token = readFileSync(path.join(dir, 'data', 'admin-token'), 'utf8').trim();
  const env = { ...process.env, PADDOCK_URL: url, PADDOCK_TOKEN: token };
  const run = (command: string, args: string[], extra: Record<string, string> = {}) =>
    new Promise<number>((resolve) => spawn(command, args, { stdio: 'inherit', env: { ...env, ...extra } }).once('exit', (status) => resolve(status ?? 1)));

  code = await run(process.execPath, [
    bin,
    'images',
    'upload',
    path.join(imageDir, 'bundle.tar'),
    '--name',
    'debian-tiny',
    '--format',
    'bundle',
    '--arch',
    'x86_64',
    '--expires',
    '1h',
  ]);
  if (code === 0) {
    code = await run(process.execPath, ['--import', 'tsx', path.join(root, 'examples/two-hosts.ts')], {
      PADDOCK_EXAMPLE_SPEC: 'arch=x86_64',
      PADDOCK_EXAMPLE_IMAGE: 'debian-tiny',
    });
  }
  console.error(code === 0 ? 'demo: the job passed' : `demo: the job failed with exit code ${code}`);
} finally {
  server.kill('SIGTERM');
  await new Promise((resolve) => server.once('exit', resolve));
  rmSync(dir, { recursive: true, force: true });
}
process.exit(code);
