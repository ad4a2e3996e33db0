// The qemu kind against real QEMU guests (TCG) booted from the test images built by
// images/recipes: images uploaded to a real server, reservations made with the client library,
// commands run over SSH with the pinned host key, and what is left on the host checked afterwards.
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import test from 'ava';
import { Paddock, ReservationFailedError } from '../../client/index.js';
import { vmProcessesUnder } from '../../provisioners/qemu/adapter.js';
import { embeddedConfig } from '../../api/config.js';
import { startApi, testConfig, type TestApi } from '../helpers/api.js';
import { waitFor } from '../helpers/wait.js';
import { testImages, type TestImages } from '../helpers/images.js';

let api: TestApi;
let paddock: Paddock;
let images: TestImages;
let scratch: string;

const sha256 = (file: string) => createHash('sha256').update(readFileSync(file)).digest('hex');

test.before(async () => {
  images = await testImages();
  scratch = mkdtempSync(path.join(os.tmpdir(), 'paddock-qemu-test-'));
  api = await startApi(testConfig(embeddedConfig)); // the embedded defaults: two VM slots

  paddock = new Paddock({ url: api.url, token: api.adminToken });
  await paddock.images.upload(images.initramfs, { name: 'tiny', tag: 'test', format: 'bundle', arch: 'x86_64' });
  await paddock.images.upload(images.disk, { name: 'disk', tag: 'test', format: 'bundle', arch: 'x86_64' });
});

test.after.always(async () => {
  await api?.close();
  rmSync(scratch, { recursive: true, force: true });
});

const qemuRoot = () => path.join(api.dataDir, 'qemu');

test.serial('a VM from a stored image: uname over SSH with the pinned host key, copies both ways, nothing left after release', async (t) => {
  const reservation = await paddock.reserve({ members: [{ role: 'vm', spec: 'arch=x86_64 ram>=256MiB', image: 'tiny:test' }], lease: '10m' });
  await reservation.ready({ timeout: 300 });
  const allocation = reservation.view.allocations[0];
  t.deepEqual(Object.keys(allocation.stages).sort(), ['addressKnown', 'bootSeen', 'powerConfirmed', 'sshReady']);
  t.is(allocation.host, '127.0.0.1');
  t.regex(allocation.hostKey ?? '', /^ssh-ed25519 /);

  const uname = await reservation.run('vm', 'uname -a');
  t.is(uname.code, 0, uname.stderr);
  t.regex(uname.stdout, /^Linux \S+ 6\.\d+\.\d+.* x86_64/);

  const local = path.join(scratch, 'payload.bin');
  writeFileSync(local, randomBytes(200_000));
  await reservation.copyTo('vm', local, '/tmp/payload.bin');
  const back = path.join(scratch, 'back.bin');
  await reservation.copyFrom('vm', '/tmp/payload.bin', back);
  t.is(sha256(back), sha256(local));

  const runDir = path.join(qemuRoot(), allocation.machine, reservation.id);
  t.true(existsSync(runDir), 'the run directory exists while the VM runs');
  t.is((await vmProcessesUnder(qemuRoot())).length, 1);
  const console = path.join(api.dataDir, 'consoles', reservation.id, `${allocation.machine}.log`);

  await reservation.release();
  await waitFor(async () => (await reservation.refresh()).state === 'released');
  t.false(existsSync(runDir), 'the overlay and run directory are gone');
  t.deepEqual(await vmProcessesUnder(qemuRoot()), [], 'no QEMU process is left');
  t.regex(readFileSync(console, 'utf8'), /paddock: ssh ready/, 'the console log is kept with the reservation');
  t.false(existsSync(path.join(api.dataDir, 'agent', 'consoles', reservation.id)), "the lab host's copy went once the API had it all");
});

test.serial('a gang of two boots in parallel from a disk image overlay; a third request queues until one is released', async (t) => {
  const storedBefore = readdirSync(path.join(api.dataDir, 'images'), { recursive: true }).length;
  const gang = await paddock.reserve({
    members: [
      { role: 'build', spec: 'arch=x86_64', image: 'disk:test' },
      { role: 'test', spec: 'arch=x86_64', image: 'tiny:test' },
    ],
    lease: '10m',
  });
  const third = await paddock.reserve({ members: [{ role: 'extra', spec: 'arch=x86_64', image: 'tiny:test' }], lease: '10m' });
  t.is(third.state, 'queued');
  await gang.ready({ timeout: 300 });
  const [build, testing] = gang.view.allocations;
  // Booted side by side, not one after the other in the gang's order: the second member was started
  // before the first was ready. (The disk image is fetched into the agent's cache first, so on a busy
  // machine the initramfs VM may be ready before the disk VM has even started: no order is asked there.)
  t.true(testing.stages.powerConfirmed! < build.stages.sshReady!);

  const written = await gang.run('build', 'echo hello > /root/mark && sync && cat /proc/mounts | grep " / "');
  t.is(written.code, 0, written.stderr);
  t.regex(written.stdout, /^\/dev\/vda \/ ext4/m, 'the disk image is the root file system');
  t.is((await third.refresh()).state, 'queued', 'the third waits while both slots are taken');

  await gang.release();
  await third.ready({ timeout: 300 });
  t.is((await third.run('extra', 'true')).code, 0);
  await third.release();
  t.is(readdirSync(path.join(api.dataDir, 'images'), { recursive: true }).length, storedBefore, 'the stored images are unchanged');

  // Nothing persists between reservations: a fresh boot of the disk image has no mark.
  const again = await paddock.reserve({ members: [{ role: 'build', spec: 'arch=x86_64', image: 'disk:test' }], lease: '10m' });
  await again.ready({ timeout: 300 });
  t.is((await again.run('build', 'test -e /root/mark')).code, 1);
  await again.release();
  await waitFor(async () => (await vmProcessesUnder(qemuRoot())).length === 0).catch(() => undefined);
  t.deepEqual(await vmProcessesUnder(qemuRoot()), [], 'no VM is left after the releases');
});

test.serial('a corrupt image fails the reservation with image_corrupt and leaves the slot available', async (t) => {
  const junk = path.join(scratch, 'junk.qcow2');
  writeFileSync(junk, randomBytes(1024 * 1024));
  await paddock.images.upload(junk, { name: 'junk', tag: 'test', format: 'qcow2', arch: 'x86_64' });
  const reservation = await paddock.reserve({ members: [{ role: 'vm', spec: 'arch=x86_64', image: 'junk:test' }], lease: '10m' });
  const error = await t.throwsAsync(reservation.ready({ timeout: 300 }), { instanceOf: ReservationFailedError });
  t.is(error?.failureCode, 'image_corrupt');
  t.regex(error?.reason ?? '', /image junk:test cannot be used/);
  const machines = await paddock.machines();
  t.true(
    machines.every((machine) => machine.failures === 0),
    'a bad image does not count against the slot',
  );
  t.is((await paddock.images.show('junk:test')).bootFailures, 1, 'it counts against the image');
  await waitFor(async () => (await paddock.machines()).every((machine) => machine.state === 'available'));
  t.deepEqual(await vmProcessesUnder(qemuRoot()), []);
});

test.serial('an image that does not exist fails with image_not_found, not retried on the other slot', async (t) => {
  const reservation = await paddock.reserve({ members: [{ role: 'vm', spec: 'arch=x86_64', image: 'nothing-here:test' }], lease: '10m' });
  const error = await t.throwsAsync(reservation.ready({ timeout: 300 }), { instanceOf: ReservationFailedError });
  t.is(error?.failureCode, 'image_not_found');
  // A request fault: another machine would fail the same, so the member does not move.
  t.is(error?.view.allocations.length, 1);
  t.false((await reservation.events()).some((event) => /retrying/.test(event.reason ?? '')));
});

test.serial('QEMU dying mid-lease fails the reservation with an event', async (t) => {
  const reservation = await paddock.reserve({ members: [{ role: 'vm', spec: 'arch=x86_64', image: 'tiny:test' }], lease: '10m' });
  await reservation.ready({ timeout: 300 });
  const [vm] = await vmProcessesUnder(qemuRoot());
  process.kill(vm.pid, 'SIGKILL');
  await waitFor(async () => (await reservation.refresh()).state === 'failed');
  const view = reservation.view;
  t.is(view.allocations[0].failure?.code, 'machine_lost');
  t.regex(view.reason ?? '', /QEMU process \d+ ended/);
  const events = await reservation.events();
  t.true(events.some((event) => event.type === 'state' && event.to === 'failed' && /machine_lost/.test(event.reason ?? '')));
  const runDir = path.join(qemuRoot(), view.allocations[0].machine, view.id);
  await waitFor(async () => !existsSync(runDir)).catch(() => undefined);
  t.false(existsSync(runDir), "the dead VM's overlay and run directory are cleaned up");
});
