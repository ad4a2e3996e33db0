// Power and re-deploy during a lease on an emulated board (Debian's U-Boot on qemu-system-aarch64,
// switched by a real pdudaemon, booting over the real tftpd-hpa), through the client library: a
// cycle goes through the PDU and keeps the board's minimum off-time, off leaves the outlet off and
// the member not ready until on, a re-deploy boots another bundle (and a kernel command line given
// with it), a panicking image fails that member alone, and the console relay and log live on.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import test from 'ava';
import { MemberFailedError, Paddock, type Reservation } from '../../client/index.js';
import { startApi, testConfig, type TestApi } from '../helpers/api.js';
import { testImages } from '../helpers/images.js';
import { powerScript, startLab, type Lab } from '../helpers/lab/index.js';
import { waitFor } from '../helpers/wait.js';
import { samples, scrape, value } from '../helpers/metrics.js';

const tftpRoot = '/tmp/paddock-test-tftp';
let lab: Lab;
let api: TestApi;
let paddock: Paddock;
let scratch: string;
let cmdline: string;

test.before(async (t) => {
  t.timeout(900_000);
  const images = await testImages();
  lab = await startLab(1);
  scratch = mkdtempSync(path.join(os.tmpdir(), 'paddock-board-power-'));
  api = await startApi(testConfig(["metrics: { listen: '127.0.0.1:0' }", 'machines:', lab.boardYaml(lab.boards[0], { tftpRoot })].join('\n')));
  paddock = new Paddock({ url: api.url, token: api.adminToken });
  await paddock.images.upload(images.arm64, { name: 'arm', format: 'bundle', arch: 'arm64' });
  // The same system with a word of its own on the kernel command line, and one that panics.
  execFileSync('tar', ['-xf', images.arm64, '-C', scratch]);
  cmdline = readFileSync(path.join(scratch, 'cmdline'), 'utf8').trim();
  writeFileSync(path.join(scratch, 'cmdline'), `${cmdline} paddock.build=two`);
  execFileSync('tar', ['-cf', path.join(scratch, 'two.tar'), '-C', scratch, 'kernel', 'initrd', 'cmdline']);
  await paddock.images.upload(path.join(scratch, 'two.tar'), { name: 'arm-two', format: 'bundle', arch: 'arm64' });
  writeFileSync(path.join(scratch, 'initrd'), Buffer.alloc(256 * 1024, 'junk'));
  execFileSync('tar', ['-cf', path.join(scratch, 'panic.tar'), '-C', scratch, 'kernel', 'initrd', 'cmdline']);
  await paddock.images.upload(path.join(scratch, 'panic.tar'), { name: 'arm-panic', format: 'bundle', arch: 'arm64' });
});

test.after.always(async () => {
  await api?.close();
  await lab?.stop();
  rmSync(scratch, { recursive: true, force: true });
});

const outletState = (outlet: number) => execFileSync(powerScript, [lab.dir, 'status', String(outlet)], { encoding: 'utf8' }).trim();

const run = async (reservation: Reservation, command: string) => {
  const result = await reservation.run('board', command);
  if (result.code !== 0) throw new Error(`${command}: ${result.stderr}`);
  return result.stdout.trim();
};

// One reservation for the tests (serial, each a step of a developer's loop).
let reservation: Reservation;
let board: string;

test.serial('a board is cycled through its PDU with its minimum off-time, keeping its console relay', async (t) => {
  t.timeout(900_000); // boots on a loaded machine
  reservation = await paddock.reserve({ members: [{ role: 'board', spec: 'arch=arm64', image: 'arm' }], lease: '30m' });
  await reservation.ready({ timeout: 900 });
  board = reservation.view.allocations[0].machine;
  const relay = reservation.view.allocations[0].console;
  const firstBoot = await run(reservation, 'cat /proc/sys/kernel/random/boot_id');

  // A cycle: off through the PDU, at least minOffTime (1 s in the lab) off, on, U-Boot, the kernel, SSH.
  const asked = Date.now();
  const cycled = await reservation.power('board', 'cycle');
  const allocation = cycled.allocations[0];
  t.is(allocation.state, 'ready');
  t.not(await run(reservation, 'cat /proc/sys/kernel/random/boot_id'), firstBoot, 'the board booted again');
  const { boards } = JSON.parse(readFileSync(path.join(api.dataDir, 'boards', board, 'power.json'), 'utf8')) as {
    boards: Record<string, { lastOffAt: string }>;
  };
  const offAt = Date.parse(boards[board].lastOffAt);
  t.true(offAt >= asked - 1000, 'the PDU switched it off for the cycle');
  t.true(Date.parse(allocation.stages.powerConfirmed!) - offAt >= 1000, 'it stayed off for its minimum off-time');
  t.deepEqual(allocation.console, relay, "the owner's console relay is kept");
  // The embedded agent counted its PDU commands (on at the first boot, off and on for the cycle), and the API each stage's time.
  const metrics = await scrape(api.server.metrics!.url);
  const commands = samples(metrics).filter((sample) => sample.name === 'paddock_pdu_operations_total' && sample.labels.outcome === 'ok');
  t.true(
    commands.some((sample) => sample.labels.operation === 'off' && sample.value >= 1),
    'off for the cycle',
  );
  t.true(commands.some((sample) => sample.labels.operation === 'on' && sample.value >= 2));
  // The first boot and the cycle, each recorded with its stages.
  t.is(value(metrics, 'paddock_provisioning_stage_duration_seconds_count', { kind: 'board', stage: 'powerConfirmed' }), 2);
  t.is(value(metrics, 'paddock_provisioning_stage_duration_seconds_count', { kind: 'board', stage: 'bootSeen' }), 2);
});

test.serial('off leaves the outlet off and the member not ready until on', async (t) => {
  t.timeout(900_000); // boots on a loaded machine
  // Off: the outlet is off and the member not ready; on boots it again.
  const off = await reservation.power('board', 'off');
  t.is(off.allocations[0].state, 'off');
  t.is(outletState(lab.boards[0].outlet), 'off');
  await reservation.power('board', 'on');
  t.is(reservation.view.allocations[0].state, 'ready');
  t.is(outletState(lab.boards[0].outlet), 'on');
});

test.serial('a re-deploy boots another bundle, or the first with a command line of the owner', async (t) => {
  t.timeout(900_000); // boots on a loaded machine
  // Re-deploy: another bundle, then the first again with a kernel command line of the owner's.
  await reservation.boot('board', 'arm-two');
  t.regex(await run(reservation, 'cat /proc/cmdline'), /paddock\.build=two/);
  await reservation.boot('board', 'arm', { cmdline: `${cmdline} paddock.mine=1` });
  const proc = await run(reservation, 'cat /proc/cmdline');
  t.regex(proc, /paddock\.mine=1/);
  t.notRegex(proc, /paddock\.build=two/);
});

test.serial('a panicking image fails that member alone; the board boots a good one again; the log keeps every boot', async (t) => {
  t.timeout(900_000); // boots on a loaded machine
  // A panicking image fails that member with the image blamed; the reservation lives on, and the
  // board boots a good image again (the old panic on its console is not taken for the new boot's).
  const failed = await t.throwsAsync(reservation.boot('board', 'arm-panic'), { instanceOf: MemberFailedError });
  t.is(failed.failureCode, 'image_unbootable');
  t.is((await reservation.refresh()).state, 'ready');
  t.true((await paddock.images.show('arm-panic')).bootFailures >= 1);
  await reservation.boot('board', 'arm-two');
  t.regex(await run(reservation, 'cat /proc/cmdline'), /paddock\.build=two/);

  await reservation.release();
  await waitFor(async () => (await reservation.refresh()).state === 'released');
  t.is(outletState(lab.boards[0].outlet), 'off', 'released boards are switched off');
  const log = readFileSync(path.join(api.dataDir, 'consoles', reservation.id, `${board}.log`), 'latin1');
  const notes = [...log.matchAll(/\[paddock: ([^\]]+?) at \d{4}-/g)].map((match) => match[1]);
  t.deepEqual(notes, ['power cycle', 'power off', 'power on', 'boot arm-two', 'boot arm', 'boot arm-panic', 'boot arm-two']);
  t.regex(log, /Kernel panic/, 'the failed boot is in the log too');
});
