// Benchmark (not a test): re-deploying within a lease (`paddock boot`: another boot of an image on a
// machine the reservation holds) against a fresh reservation of the same image (reserve→ready), on a
// QEMU slot and on the test lab's emulated arm64 board, in the same run. Each round reserves afresh
// (timed), then re-deploys the same image in that reservation (timed), then releases. The fresh
// reservation pays for the scheduling and the agent's pick-up; the re-deploy for taking down what
// runs (the VM stopped, the board switched off for its minimum off-time). Aim: a re-deploy is no
// slower than a fresh reservation (ratio ≤ 1.00). The first reservation of each, which also
// downloads the image into the agent's cache and unpacks the bundle, is not counted.
//
//   node --import tsx bench/redeploy.ts [ROUNDS]      (default 5)
import { setTimeout as sleep } from 'node:timers/promises';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseConfig } from '../api/config.js';
import { serve } from '../cli/serve.js';
import { Paddock } from '../client/index.js';
import { startLab } from '../test/helpers/lab/index.js';
import { silentLog } from '../protocol/log.js';

const rounds = Number(process.argv[2] ?? 5);
const root = path.resolve(import.meta.dirname, '..');
const built = execFileSync('bash', [path.join(root, 'images/recipes/build-test-images.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
const imageDir = (name: string) =>
  built
    .split('\n')
    .find((line) => line.startsWith(`${name} `))!
    .split(' ')[1];
const dir = mkdtempSync(path.join(os.tmpdir(), 'paddock-bench-redeploy-'));
const lab = await startLab(1);
const config = {
  ...parseConfig(
    [
      'machines:',
      '  - { name: vm, kind: qemu, count: 1, labels: { arch: x86_64 } }',
      // The same TFTP root as the board tests: one tftpd-hpa serves a host's port 69.
      lab.boardYaml(lab.boards[0], { tftpRoot: '/tmp/paddock-test-tftp' }),
    ].join('\n'),
  ),
  listen: { host: '127.0.0.1', port: 0 },
  dataDir: path.join(dir, 'data'),
};
const server = await serve({ config, log: silentLog() });
const seconds = (since: bigint) => Number(process.hrtime.bigint() - since) / 1e9;
const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];

try {
  const paddock = new Paddock({ url: server.url, token: readFileSync(server.adminTokenFile, 'utf8').trim() });
  await paddock.images.upload(path.join(imageDir('x86-initramfs'), 'bundle.tar'), { name: 'tiny', format: 'bundle', arch: 'x86_64' });
  await paddock.images.upload(path.join(imageDir('arm64-initramfs'), 'bundle.tar'), { name: 'arm', format: 'bundle', arch: 'arm64' });

  /** One round: a fresh reservation's reserve→ready, then a re-deploy of the same image in it. */
  const round = async (spec: string, image: string) => {
    const started = process.hrtime.bigint();
    const reservation = await paddock.reserve({ members: [{ role: 'm', spec, image }], lease: '10m' }, { renew: false });
    await reservation.ready({ timeout: 600 });
    const fresh = seconds(started);
    const again = process.hrtime.bigint();
    await reservation.boot('m', image, { timeout: 600 });
    const redeploy = seconds(again);
    await reservation.release();
    while ((await paddock.machines()).some((machine) => machine.state !== 'available')) await sleep(50);
    return { fresh, redeploy };
  };

  for (const [what, spec, image] of [
    ['QEMU VM', 'arch=x86_64', 'tiny'],
    ['emulated board', 'arch=arm64', 'arm'],
  ] as const) {
    const first = await round(spec, image);
    console.log(`${what}: first reservation (image download and unpack included) ${first.fresh.toFixed(2)} s, its re-deploy ${first.redeploy.toFixed(2)} s`);
    const times: { fresh: number; redeploy: number }[] = [];
    for (let index = 0; index < rounds; index++) {
      const time = await round(spec, image);
      times.push(time);
      console.log(`${what} round ${index + 1}: fresh reservation ${time.fresh.toFixed(2)} s, re-deploy ${time.redeploy.toFixed(2)} s`);
    }
    const fresh = median(times.map((time) => time.fresh));
    const redeploy = median(times.map((time) => time.redeploy));
    console.log(
      `${what}: re-deploy ${redeploy.toFixed(2)} s vs fresh reservation ${fresh.toFixed(2)} s (medians of ${rounds}): ratio ${(redeploy / fresh).toFixed(3)} (aim: at most 1.00)`,
    );
  }
} finally {
  await server.close();
  await lab.stop();
  rmSync(dir, { recursive: true, force: true });
}
