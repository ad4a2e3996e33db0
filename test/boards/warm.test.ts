// A warm board on the emulated lab (an arm64 board running Debian's U-Boot, switched by pdudaemon,
// booted from tftpd-hpa): the agent keeps it booted from the pool's image with its own key (a warm
// boot that fails is in the board's health history); a reservation for that image gets it without
// a power-on (the lab's PDU log says so) with its key swapped in (the agent's refused), its own
// console relay and a console log that starts at the hand-over; after release the board is
// switched off and the refill is a fresh boot from TFTP (the first user's file gone, another boot
// id; a reboot in the lease stages it for the reservation). A warm board put in maintenance is
// switched off and not warmed again.
import { execFile } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import test from 'ava';
import { ensureTftpd } from '../../boards/boot/tftpd.js';
import { NotFoundError, Paddock, type Reservation } from '../../client/index.js';
import { sshHandshake } from '../../protocol/ssh.js';
import { startApi, testConfig } from '../helpers/api.js';
import { testImages } from '../helpers/images.js';
import { powerScript, startLab } from '../helpers/lab/index.js';
import { textSink } from '../helpers/text-sink.js';
import { waitFor } from '../helpers/wait.js';
import { warmKey, warmRecords } from '../helpers/warm.js';

const run = promisify(execFile);
const tftpRoot = '/tmp/paddock-test-tftp';

test('a warm board is handed over without a power-on, its key swapped; after release it is warmed by a fresh boot', async (t) => {
  t.timeout(900_000);
  const images = await testImages();
  await ensureTftpd(tftpRoot, '127.0.0.1:69');
  const lab = await startLab(1);
  t.teardown(() => lab.stop());

  // The pool's image is in the store before the board is configured warm.
  const first = testConfig('machines: []\n');
  const empty = await startApi(first);
  await new Paddock({ url: empty.url, token: empty.adminToken }).images.upload(images.arm64, { name: 'arm', format: 'bundle', arch: 'arm64' });
  await empty.server.close();
  // The board's first power-on leaves its console silent: that warm boot fails, and the next comes up.
  writeFileSync(path.join(lab.boards[0].dir, 'fail-boots'), '1');
  const board = lab.boardYaml(lab.boards[0], { tftpRoot, extra: '      timeouts: { bootloader: 6 }\n    warm: [{ image: arm, count: 1 }]' });
  const api = await startApi(testConfig(`agent: { checkInterval: 0 }\nmachines:\n${board}\n`, first.dataDir));
  t.teardown(() => api.close());
  const paddock = new Paddock({ url: api.url, token: api.adminToken });

  const powerOns = () =>
    readFileSync(path.join(lab.dir, 'power.log'), 'utf8')
      .split('\n')
      .filter((line) => / on 1$/.test(line)).length;
  const warmBoot = async (other?: string) => {
    await waitFor(async () => warmRecords(api.dataDir).some((record) => record.id !== other), 300_000, 'board-1 warm');
    return warmRecords(api.dataDir)[0];
  };
  const reserve = async () => {
    const reservation = await paddock.reserve({ members: [{ role: 'board', spec: 'arch=arm64', image: 'arm' }], lease: '10m' });
    await reservation.ready({ timeout: 300 });
    return reservation;
  };
  const released = async (reservation: Reservation) => {
    await reservation.release();
    await waitFor(async () => (await reservation.refresh()).state === 'released', 120_000, 'released');
  };
  const bootId = async (reservation: Reservation) => (await reservation.run('board', 'cat /proc/sys/kernel/random/boot_id')).stdout.trim();

  const warm = await warmBoot();
  // The warm boot that came up ends the run of failures (reported a moment after the agent wrote it down).
  await waitFor(async () => (await paddock.machine('board-1')).failures === 0, 30_000, 'the failures reset');
  const history = await paddock.machine('board-1');
  t.deepEqual(
    history.provisionings!.map((run) => [run.owner, run.reservationId.startsWith('warm-'), run.outcome, run.code, run.stage, run.counted]),
    [['paddock', true, 'failed', 'bootloader_timeout', 'bootSeen', true]],
    'the failed warm boot is in the board’s history and counts',
  );
  const ons = powerOns();
  const asked = Date.now();
  const reservation = await reserve();
  t.log(`warm boot ${warm.bootSeconds.toFixed(1)} s; reserve→ready from it ${((Date.now() - asked) / 1000).toFixed(1)} s`);
  const [allocation] = reservation.view.allocations;
  t.is(allocation.machine, 'board-1');
  t.is(allocation.hostKey, warm.hostKey, 'the warm boot’s host key, pinned by the client');
  t.is(powerOns(), ons, 'no power-on after the grant: the board was booted already');
  t.deepEqual(Object.keys(allocation.stages).sort(), ['addressKnown', 'bootSeen', 'powerConfirmed', 'sshReady']);

  const keys = await reservation.run('board', 'echo first > /root/mark && cat /root/.ssh/authorized_keys');
  t.is(keys.code, 0, keys.stderr);
  t.is(keys.stdout.trim().split('\n').length, 1, "authorized_keys holds the reservation's key alone");
  const refused = await t.throwsAsync(
    sshHandshake({ host: '127.0.0.1', port: lab.boards[0].sshPort, user: 'root', privateKey: warmKey(api.dataDir), timeoutMs: 10_000 }),
  );
  t.regex(refused?.message ?? '', /refused|authentication/i, "the agent's key no longer logs in");
  const firstBoot = await bootId(reservation);

  // The console relay is the reservation's (its secret), and its log starts at the hand-over.
  const session = await reservation.openConsole({ write: true });
  let seen = '';
  session.on('data', (bytes: Buffer) => (seen += bytes.toString('latin1')));
  session.write('echo warm-$((6*7))\n');
  await waitFor(async () => seen.includes('warm-42'), 60_000, 'the board answering on the relay');
  session.close();
  // The agent ships the log to the API as it grows: none there yet is a 404.
  let log = textSink();
  await waitFor(
    async () => {
      log = textSink();
      return reservation.console(log).then(
        () => log.text.includes('warm-42'),
        (error: unknown) => (error instanceof NotFoundError ? false : Promise.reject(error as Error)),
      );
    },
    60_000,
    'the console log',
  );
  t.notRegex(log.text, /U-Boot|Starting kernel/, 'no bootloader in the reservation’s console: the board was not booted for it');

  await released(reservation);
  const refill = await warmBoot(warm.id);
  t.true(powerOns() > ons, 'the refill is a new power-on');
  const second = await reserve();
  t.is(second.view.allocations[0].machine, 'board-1');
  t.is((await second.run('board', 'test -e /root/mark')).code, 1, 'the first reservation’s file is gone');
  const secondBoot = await bootId(second);
  t.not(secondBoot, firstBoot, 'a fresh boot from TFTP');
  t.is(second.view.allocations[0].hostKey, refill.hostKey);
  t.not(refill.hostKey, warm.hostKey, 'the refill made its own host key');
  // A reboot in the lease boots the board for the reservation, staged under its own name.
  const staged = (id: string) => existsSync(path.join(tftpRoot, 'paddock', `${id}-board-1`));
  t.true(staged(refill.id));
  await second.power('board', 'cycle');
  t.not(await bootId(second), secondBoot, 'booted again');
  t.false(staged(refill.id), 'the warm boot’s folder went with the reboot');
  t.true(staged(second.id));
  await released(second);

  // In maintenance, a warm board (or one being warmed) is switched off and not warmed again.
  await paddock.maintenance('board-1', 'cleaning');
  await new Promise((resolve) => setTimeout(resolve, 2000));
  const state = async () => (await run(powerScript, [lab.dir, 'status', '1'])).stdout.trim();
  await waitFor(async () => (await state()) === 'off' && warmRecords(api.dataDir).length === 0, 120_000, 'board-1 off');
  const settled = powerOns();
  await new Promise((resolve) => setTimeout(resolve, 4000));
  t.is(await state(), 'off');
  t.is(powerOns(), settled, 'no warm boot in maintenance');
  for (const id of [history.provisionings![0].reservationId, warm.id, refill.id, reservation.id, second.id])
    t.false(staged(id), `nothing staged for ${id} is left`);
});
