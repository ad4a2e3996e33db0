// Boards booted for real on the emulated lab: arm64 boards running Debian's U-Boot, switched by a
// real pdudaemon, their consoles on serial lines, fetching the reservation's kernel and initrd
// from the real tftpd-hpa, and booting the arm64 test image built from Debian packages.
import { execFile, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, readSync, closeSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import test from 'ava';
import { Paddock, ReservationFailedError, type Reservation } from '../../client/index.js';
import { startApi, testConfig, type TestApi } from '../helpers/api.js';
import { testImages } from '../helpers/images.js';
import { powerScript, startLab, type Lab } from '../helpers/lab/index.js';
import { waitFor } from '../helpers/wait.js';

const tftpRoot = '/tmp/paddock-test-tftp';
let lab: Lab;
let api: TestApi;
let paddock: Paddock;
let scratch: string;

test.before(async () => {
  const images = await testImages();
  // Board 2 is switched by the lab's APC PDU over SNMP (state read back); board 3's console is on
  // TCP, as ser2net would offer it; the rest is pdudaemon and serial lines.
  lab = await startLab(4, { snmpOutlets: [2], tcpConsoles: [3], storageOutlets: [1], armv7Outlets: [4] });
  scratch = mkdtempSync(path.join(os.tmpdir(), 'paddock-board-test-'));
  api = await startApi(
    testConfig(
      [
        // The owner may telnet to a board's relay (after answering the console secret).
        'consoles: { telnet: true }',
        'machines:',
        lab.boardYaml(lab.boards[0], { tftpRoot, labels: { arch: 'arm64', type: 'qemu-virt', storage: 'virtio' } }),
        lab.boardYaml(lab.boards[1], { tftpRoot }),
        lab.boardYaml(lab.boards[2], { tftpRoot, name: 'console-board', labels: { arch: 'arm64', type: 'console-only' }, ssh: false }),
        lab.boardYaml(lab.boards[3], { tftpRoot, name: 'armv7-board', labels: { arch: 'armv7', subarch: 'neon', type: 'qemu-virt-a15' } }),
      ].join('\n'),
    ),
  );
  paddock = new Paddock({ url: api.url, token: api.adminToken });
  await paddock.images.upload(images.arm64, { name: 'arm', format: 'bundle', arch: 'arm64' });
  await paddock.images.upload(images.armv7, { name: 'arm32', format: 'bundle', arch: 'armv7' });

  // The same system as a raw disk image to flash: an ext4 file system holding /boot/kernel,
  // /boot/initrd and /boot/env.txt (the kernel command line as U-Boot environment text).
  execFileSync('tar', ['-xf', images.arm64, '-C', scratch]);
  const flashRoot = path.join(scratch, 'flash-root');
  mkdirSync(path.join(flashRoot, 'boot'), { recursive: true });
  copyFileSync(path.join(scratch, 'kernel'), path.join(flashRoot, 'boot', 'kernel'));
  copyFileSync(path.join(scratch, 'initrd'), path.join(flashRoot, 'boot', 'initrd'));
  writeFileSync(path.join(flashRoot, 'boot', 'env.txt'), `bootargs=${readFileSync(path.join(scratch, 'cmdline'), 'utf8').trim()} paddock.flashed=1\n`);
  execFileSync('mkfs.ext4', ['-q', '-F', '-L', 'flashed', '-d', flashRoot, path.join(scratch, 'flash.img'), '24M']);
  await paddock.images.upload(path.join(scratch, 'flash.img'), { name: 'arm-disk', format: 'raw', arch: 'arm64' });

  // The same system without a network (console only), and one whose initrd is junk (the kernel panics).
  writeFileSync(path.join(scratch, 'cmdline'), `${readFileSync(path.join(scratch, 'cmdline'), 'utf8').trim()} paddock.network=off`);
  execFileSync('tar', ['-cf', path.join(scratch, 'nonet.tar'), '-C', scratch, 'kernel', 'initrd', 'cmdline']);
  await paddock.images.upload(path.join(scratch, 'nonet.tar'), { name: 'arm-nonet', format: 'bundle', arch: 'arm64' });
  writeFileSync(path.join(scratch, 'initrd'), randomBytes(256 * 1024));
  execFileSync('tar', ['-cf', path.join(scratch, 'panic.tar'), '-C', scratch, 'kernel', 'initrd', 'cmdline']);
  await paddock.images.upload(path.join(scratch, 'panic.tar'), { name: 'arm-panic', format: 'bundle', arch: 'arm64' });
});

test.after.always(async () => {
  await api?.close();
  await lab?.stop();
  rmSync(scratch, { recursive: true, force: true });
});

const outletState = (outlet: number) => execFileSync(powerScript, [lab.dir, 'status', String(outlet)], { encoding: 'utf8' }).trim();

/**
 * Connects to a console relay as telnet would, answers the reservation's console secret (from its
 * credentials), and returns what it printed once `until` shows up (after sending `input`).
 */
async function relaySession(reservation: Reservation, input: string, until: RegExp, mode: 'write' | 'read' = 'write', timeoutMs = 30_000): Promise<string> {
  const { console } = await reservation.credentials();
  if (!console) throw new Error('the credentials carry no console secret');
  return new Promise((resolve, reject) => {
    const socket = net.connect(console.relays[0]);
    let seen = '';
    let answered = false;
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`relay: ${until} not seen; got ${JSON.stringify(seen.slice(-300))}`));
    }, timeoutMs);
    socket.on('connect', () => socket.write(`${console.secret} ${mode}\r\n`));
    socket.on('data', (chunk: Buffer) => {
      seen += chunk.toString('latin1');
      if (!answered && /\[paddock: /.test(seen)) {
        answered = true;
        socket.write(input);
      }
      if (until.test(seen)) {
        clearTimeout(timer);
        socket.destroy();
        resolve(seen);
      }
    });
    socket.on('error', reject);
  });
}

test.serial(
  'an arm64 board boots a stored bundle over TFTP: SSH with the pinned host key, the console relay, then release powers it off and unstages',
  async (t) => {
    const reservation = await paddock.reserve({ members: [{ role: 'board', spec: 'arch=arm64 type=qemu-virt', image: 'arm' }], lease: '10m' });
    // `paddock console ID -f` follows the boot live, from before power-on until the reservation ends.
    let followed = '';
    const follower = execFile(process.execPath, [path.resolve('bin/paddock.js'), 'console', reservation.id, '-f'], {
      env: { ...process.env, PADDOCK_URL: api.url, PADDOCK_TOKEN: api.adminToken },
    });
    follower.stdout!.on('data', (chunk: string) => (followed += chunk));
    const followerDone = new Promise<number | null>((resolve) => follower.once('exit', resolve));

    await reservation.ready({ timeout: 300 });
    const allocation = reservation.view.allocations[0];
    t.deepEqual(Object.keys(allocation.stages).sort(), ['addressKnown', 'bootSeen', 'powerConfirmed', 'sshReady']);
    t.regex(allocation.hostKey ?? '', /^ssh-ed25519 /);
    const board = lab.boards.find((each) => `board-${each.outlet}` === allocation.machine)!;
    t.is(outletState(board.outlet), 'on');
    const uname = await reservation.run('board', 'uname -m; cat /proc/cmdline');
    t.is(uname.code, 0, uname.stderr);
    t.regex(uname.stdout, /^aarch64\n/);
    t.regex(uname.stdout, /paddock\.authorized_key=/, 'the key came on the kernel command line');
    t.true(existsSync(path.join(tftpRoot, 'paddock', `${reservation.id}-${allocation.machine}`, 'kernel')), 'the files are staged while reserved');

    // The console relay: a shell on the board's serial console.
    t.truthy(allocation.console);
    const shell = await relaySession(reservation, 'echo relay-$((20+22))\n', /relay-42/);
    t.regex(shell, /relay-42/);
    await waitFor(async () => /relay-42/.test(followed), 120_000, 'the followed console showing the relay session');

    await reservation.release();
    await waitFor(async () => (await reservation.refresh()).state === 'released', 120_000, 'the release');
    t.is(outletState(board.outlet), 'off', 'release powered the board off');
    t.false(existsSync(path.join(tftpRoot, 'paddock', `${reservation.id}-${allocation.machine}`)), 'the staged files are gone');
    t.is(await followerDone, 0, 'paddock console -f ends with the reservation');
    t.regex(followed, /U-Boot 20\d\d/);
    t.regex(followed, /Starting kernel/);
    t.regex(followed, /paddock: ssh ready/);
  },
);

test.serial('two boards in one gang boot in parallel, one on pdudaemon, one on an APC PDU over SNMP', async (t) => {
  const gang = await paddock.reserve({
    members: [
      { role: 'a', spec: 'type=qemu-virt', image: 'arm' },
      { role: 'b', spec: 'type=qemu-virt', image: 'arm' },
    ],
    lease: '10m',
  });
  await gang.ready({ timeout: 300 });
  const [a, b] = gang.view.allocations;
  t.not(a.machine, b.machine);
  t.true(a.stages.powerConfirmed! < b.stages.sshReady! && b.stages.powerConfirmed! < a.stages.sshReady!, 'both booted at the same time');
  const answers = await Promise.all([gang.run('a', 'uname -m'), gang.run('b', 'uname -m')]);
  t.deepEqual(
    answers.map((answer) => answer.stdout.trim()),
    ['aarch64', 'aarch64'],
  );
  t.deepEqual([outletState(1), outletState(2)], ['on', 'on']);
  await gang.release();
  await waitFor(async () => (await gang.refresh()).state === 'released', 120_000, 'the release');
  t.deepEqual([outletState(1), outletState(2)], ['off', 'off'], 'both switched off, the SNMP one read back');
});

test.serial('an armv7 board (zImage, bootz) is matched by arch=armv7 and boots its image', async (t) => {
  const reservation = await paddock.reserve({ members: [{ role: 'board', spec: 'arch=armv7 subarch=neon ram>=512MiB', image: 'arm32' }], lease: '10m' });
  await reservation.ready({ timeout: 300 });
  t.is(reservation.view.allocations[0].machine, 'armv7-board');
  const uname = await reservation.run('board', 'uname -m');
  t.is(uname.stdout.trim(), 'armv7l');
  await reservation.release();
});

test.serial(
  'a console-only board (an image without network, console on TCP) is reached through the telnet relay; a second connection watches read-only',
  async (t) => {
    const reservation = await paddock.reserve({ members: [{ role: 'board', spec: 'type=console-only', image: 'arm-nonet' }], lease: '10m' });
    await reservation.ready({ timeout: 300 });
    const allocation = reservation.view.allocations[0];
    t.is(allocation.host, undefined, 'no SSH');
    t.truthy(allocation.console);
    const watcher = relaySession(reservation, '', /done-42/, 'read');
    await new Promise((resolve) => setTimeout(resolve, 200));
    const shell = await relaySession(reservation, 'cat /proc/cmdline; echo done-$((6*7))\n', /done-42/);
    t.regex(shell, /paddock\.network=off/);
    t.regex(await watcher, /done-42/, 'a second connection sees the same console');
    await t.throwsAsync(reservation.run('board', 'true'), { message: /no ready member/ });
    // The CLI shows where to telnet to, in text and in --json.
    const cli = (args: string[]) =>
      new Promise<string>((resolve, reject) =>
        execFile(
          process.execPath,
          [path.resolve('bin/paddock.js'), ...args],
          { env: { ...process.env, PADDOCK_URL: api.url, PADDOCK_TOKEN: api.adminToken } },
          (error, stdout) => (error ? reject(error) : resolve(stdout)),
        ),
      );
    t.regex(await cli(['show', reservation.id]), new RegExp(`console-board ready console telnet ${allocation.console!.host} ${allocation.console!.port}`));
    await reservation.release();
  },
);

test.serial("flash mode: a raw disk image is written to the board's storage through U-Boot, and the board boots from it", async (t) => {
  const reservation = await paddock.reserve({ members: [{ role: 'board', spec: 'arch=arm64 storage', image: 'arm-disk' }], lease: '10m' });
  await reservation.ready({ timeout: 300 });
  const allocation = reservation.view.allocations[0];
  t.is(allocation.machine, 'board-1', 'only board 1 has storage');
  const cmdline = await reservation.run('board', 'cat /proc/cmdline');
  t.regex(cmdline.stdout, /paddock\.flashed=1/, 'the kernel command line came from the flashed env.txt');
  t.regex(cmdline.stdout, /paddock\.authorized_key=/);
  await reservation.release();
  await waitFor(async () => (await reservation.refresh()).state === 'released', 120_000, 'the release');
  // The board's storage now holds the image, byte for byte.
  const image = readFileSync(path.join(scratch, 'flash.img'));
  const disk = Buffer.alloc(image.length);
  const fd = openSync(path.join(lab.boards[0].dir, 'disk.img'), 'r');
  readSync(fd, disk, 0, disk.length, 0);
  closeSync(fd);
  t.true(disk.equals(image), 'the storage holds the flashed image');
});

test.serial("a kernel that panics fails the reservation as the image's fault, with the console tail", async (t) => {
  const reservation = await paddock.reserve({ members: [{ role: 'board', spec: 'type=qemu-virt', image: 'arm-panic' }], lease: '10m' });
  const error = await t.throwsAsync(reservation.ready({ timeout: 300 }), { instanceOf: ReservationFailedError });
  t.is(error?.failureCode, 'image_unbootable');
  const failure = error?.view.allocations[0].failure;
  t.is(failure?.fault, 'request');
  t.regex(failure?.reason ?? '', /Kernel panic - not syncing/);
  t.true(
    (await paddock.machines()).every((machine) => machine.failures === 0),
    'an image fault does not count against the board',
  );
  const image = await paddock.images.show('arm-panic');
  t.is(image.bootFailures, 1, 'it counts against the image');
  t.regex(image.lastBootFailure ?? '', /^image_unbootable on board-\d: /);
});
