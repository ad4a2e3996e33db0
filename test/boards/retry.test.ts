// Retry on another machine on the emulated lab: a board whose relay sticks (its power switch's
// `on` command fails) fails to power on; the reservation is served by its twin, a real arm64 board
// running Debian's U-Boot, switched by pdudaemon and booting the test image over tftpd-hpa.
import test from 'ava';
import { Paddock } from '../../client/index.js';
import { ensureTftpd } from '../../boards/boot/tftpd.js';
import type { EventView } from '../../protocol/api.js';
import { startApi, testConfig, type TestApi } from '../helpers/api.js';
import { testImages } from '../helpers/images.js';
import { startLab, type Lab } from '../helpers/lab/index.js';
import { waitFor } from '../helpers/wait.js';

const tftpRoot = '/tmp/paddock-test-tftp';
let lab: Lab | undefined;
let api: TestApi | undefined;

test.after.always(async () => {
  await api?.close();
  await lab?.stop();
});

test('a reservation whose board fails to power on is served by its twin', async (t) => {
  t.timeout(600_000);
  const images = await testImages();
  lab = await startLab(2);
  await ensureTftpd(tftpRoot, '127.0.0.1:69');
  // board-1's relay is stuck: switching it on fails (its off works, so its teardown does).
  const stuck = lab
    .boardYaml(lab.boards[0], { tftpRoot })
    .replace(/^ {6}power: .*$/m, '      power: { driver: command, on: "echo relay stuck >&2; exit 1", off: "true", pdu: stuck-relay }');
  api = await startApi(testConfig(`agent: { checkInterval: 0 }\nmachines:\n${stuck}\n${lab.boardYaml(lab.boards[1], { tftpRoot })}\n`));
  const paddock = new Paddock({ url: api.url, token: api.adminToken });
  await paddock.images.upload(images.arm64, { name: 'arm', format: 'bundle', arch: 'arm64' });

  const reservation = await paddock.reserve({ members: [{ role: 'board', spec: 'arch=arm64', image: 'arm' }], lease: '10m' });
  t.is(reservation.view.allocations[0]?.machine, 'board-1', 'the first board is tried first');
  const progress: EventView[] = [];
  await reservation.ready({ timeout: 400, onProgress: (update) => 'type' in update && progress.push(update) });
  t.is((await reservation.run('board', 'uname -m')).stdout.trim(), 'aarch64', 'the twin booted and answers');

  const start = Date.parse(progress[0]?.at ?? new Date().toISOString());
  t.log(progress.map((event) => `+${((Date.parse(event.at) - start) / 1000).toFixed(1)}s ${event.machine ?? ''} ${event.to}`).join('\n'));
  const [current, failed] = reservation.view.allocations;
  t.like(current, { machine: 'board-2', state: 'ready', retries: 1, failedOn: ['board-1'] });
  t.like(failed, { machine: 'board-1', replacedBy: current.id });
  t.is(failed.failure?.code, 'power_failed');
  t.is(failed.failure?.stage, 'powerConfirmed');
  t.regex(failed.failure?.reason ?? '', /relay stuck/);
  const steps = progress.filter((event) => event.type === 'allocation').map((event) => `${event.machine} ${event.to}`);
  t.true(steps.indexOf('board-1 failed') < steps.indexOf('board-2 pending'), steps.join(', '));
  t.regex(
    progress.find((event) => event.machine === 'board-2' && event.to === 'pending')?.reason ?? '',
    /^board\[0\]: retrying on board-2 after power_failed on board-1$/,
  );
  t.false(
    progress.some((event) => event.type === 'state' && ['releasing', 'failed'].includes(event.to)),
    'the script saw no failure',
  );
  await waitFor(async () => (await paddock.machine('board-1')).reservationId === undefined);
  t.is((await paddock.machine('board-1')).failures, 1, 'the failure counts against the stuck board');
  await reservation.release();
});
