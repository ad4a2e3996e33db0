// Power and re-deploy during a lease on real QEMU guests, driven through the client library and the
// `paddock` command as a user would: a cycle keeps the disk and boots anew, off/on, a re-deploy
// boots another image, a bad image fails that member alone, and the other member of the gang works
// throughout. The hostile cases: another user's reservation, an unknown member, a bad action, a
// busy member, a static host, a released reservation, and a release in the middle of a cycle.
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import test from 'ava';
import {
  ForbiddenError,
  LeaseExpiredError,
  MemberBusyError,
  MemberFailedError,
  NotFoundError,
  Paddock,
  PowerNotSupportedError,
  type Reservation,
} from '../../client/index.js';
import { embeddedConfig } from '../../api/config.js';
import { vmProcessesUnder } from '../../provisioners/qemu/adapter.js';
import { startApi, staticMachinesYaml, testConfig, type TestApi } from '../helpers/api.js';
import { testImages } from '../helpers/images.js';
import type { TestSshd } from '../helpers/sshd.js';
import { startSshd } from '../helpers/sshd.js';
import { waitFor } from '../helpers/wait.js';

let api: TestApi;
let owner: Paddock;
let ownerToken: string;
let stranger: Paddock;
let strangerToken: string;
let sshd: TestSshd;
let scratch: string;

const bin = path.resolve('bin/paddock.js');

function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const env = { ...process.env, PADDOCK_URL: api.url, PADDOCK_TOKEN: ownerToken };
    execFile(process.execPath, [bin, ...args], { env, timeout: 600_000 }, (error, stdout, stderr) => {
      resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

test.before(async (t) => {
  t.timeout(900_000);
  const images = await testImages();
  scratch = mkdtempSync(path.join(os.tmpdir(), 'paddock-qemu-power-'));
  sshd = await startSshd();
  const statics = staticMachinesYaml([
    { name: 'host-1', port: sshd.port, adminKeyPath: sshd.adminKey.path, authorizedKeysFile: sshd.authorizedKeysFile, labels: { type: 'static-host' } },
  ]);
  api = await startApi(testConfig(`${embeddedConfig}${statics.replace(/^machines:\n/, '')}\n`));
  const admin = new Paddock({ url: api.url, token: api.adminToken });
  ownerToken = (await admin.createToken('olga', 'user')).token;
  owner = new Paddock({ url: api.url, token: ownerToken });
  strangerToken = (await admin.createToken('mallory', 'user')).token;
  stranger = new Paddock({ url: api.url, token: strangerToken });
  await owner.images.upload(images.disk, { name: 'disk', tag: 'test', format: 'bundle', arch: 'x86_64' });
  await owner.images.upload(images.initramfs, { name: 'tiny', tag: 'test', format: 'bundle', arch: 'x86_64' });
  const broken = path.join(scratch, 'broken.tar');
  writeFileSync(broken, Buffer.alloc(64 * 1024, 'not a bundle'));
  await owner.images.upload(broken, { name: 'broken', tag: 'test', format: 'bundle', arch: 'x86_64' });
});

test.afterEach.always((t) => {
  if (!t.passed) t.log(api.logs.slice(-40).join('\n'));
});

test.after.always(async () => {
  await api?.close();
  await sshd?.stop();
  rmSync(scratch, { recursive: true, force: true });
});

const bootId = async (reservation: Reservation, target: string) => {
  const result = await reservation.run(target, 'cat /proc/sys/kernel/random/boot_id');
  if (result.code !== 0) throw new Error(`boot_id on ${target}: ${result.stderr}`);
  return result.stdout.trim();
};

const allocationOf = (reservation: Reservation, role: string) => reservation.view.allocations.find((allocation) => allocation.role === role)!;

// One gang for the first tests (serial, each a step of a developer's loop): `dev` is acted on, `peer` must not notice.
let reservation: Reservation;
let machine: string;
let peerBoot: string;

test.serial('a power cycle through the CLI keeps the disk and boots anew; the other member is untouched', async (t) => {
  t.timeout(900_000); // boots on a loaded machine
  reservation = await owner.reserve({
    members: [
      { role: 'dev', spec: 'arch=x86_64', image: 'disk:test' },
      { role: 'peer', spec: 'arch=x86_64', image: 'tiny:test' },
    ],
    lease: '20m',
  });
  await reservation.ready({ timeout: 600 });
  peerBoot = await bootId(reservation, 'peer');
  const firstBoot = await bootId(reservation, 'dev');
  t.is((await reservation.run('dev', 'echo kept > /marker && sync && cat /marker')).stdout.trim(), 'kept');
  machine = allocationOf(reservation, 'dev').machine;
  const actionAt = Date.now();

  // A cycle through the CLI: the member comes back ready with fresh stages, the disk kept.
  const cycled = await cli(['power', reservation.id, 'dev', 'cycle']);
  t.is(cycled.code, 0, cycled.stderr);
  t.regex(cycled.stdout, new RegExp(`^${reservation.id} dev\\.0 ${machine} ready \\S+@127\\.0\\.0\\.1:\\d+`));
  await reservation.refresh();
  t.is(reservation.state, 'ready');
  const dev = allocationOf(reservation, 'dev');
  t.is(dev.state, 'ready');
  t.deepEqual(Object.keys(dev.stages).sort(), ['addressKnown', 'bootSeen', 'powerConfirmed', 'sshReady']);
  t.true(
    Object.values(dev.stages).every((at) => Date.parse(at) >= actionAt - 1000),
    'the stages are those of the new boot',
  );
  t.not(await bootId(reservation, 'dev'), firstBoot, 'the guest booted again');
  t.is((await reservation.run('dev', 'cat /marker')).stdout.trim(), 'kept', 'the disk was kept');
  t.is(await bootId(reservation, 'peer'), peerBoot, 'the other member was not touched');

  // The history: the action, then the member leaving ready, its stages, ready again.
  const all = (await reservation.events()).filter((event) => event.machine === machine);
  const events = all.slice(all.findIndex((event) => event.type === 'action'));
  const story = events.map((event) => `${event.type}:${event.from ? `${event.from}>` : ''}${event.to}`);
  t.deepEqual(story.slice(0, 2), ['action:power cycle', 'allocation:ready>provisioning']);
  t.is(story.at(-1), 'allocation:provisioning>ready');
  t.true(story.includes('stage:powerConfirmed') && story.indexOf('stage:powerConfirmed') < story.indexOf('stage:sshReady'));
  t.regex(events[0].reason ?? '', /asked by olga/);
});

test.serial('off leaves the member off and without a login until on, which boots the same disk', async (t) => {
  t.timeout(900_000); // boots on a loaded machine
  // Off: not ready (no login offered) until on; on boots the same disk again.
  const off = await reservation.power('dev', 'off');
  t.is(off.allocations.find((allocation) => allocation.role === 'dev')!.state, 'off');
  t.false(
    (await reservation.credentials()).machines.some((each) => each.role === 'dev'),
    'an off member has no login',
  );
  t.is(await cli(['power', reservation.id, 'dev', 'off']).then((result) => result.code), 0, 'off again changes nothing');
  await reservation.power('dev', 'on');
  t.is(allocationOf(reservation, 'dev').state, 'ready');
  t.is((await reservation.run('dev', 'cat /marker')).stdout.trim(), 'kept');
});

test.serial('a re-deploy boots another image in the lease; a bad image fails that member alone, which boots again', async (t) => {
  t.timeout(900_000); // boots on a loaded machine
  // Re-deploy: another image on the same machine, the lease and the other member kept.
  const { expiresAt } = reservation.view;
  await reservation.boot('dev', 'tiny:test');
  t.is(allocationOf(reservation, 'dev').machine, machine);
  t.is(allocationOf(reservation, 'dev').image, 'tiny:test');
  t.is((await reservation.run('dev', 'test -e /marker; echo $?')).stdout.trim(), '1', 'the new image boots with its own disk');
  t.is(reservation.view.expiresAt && expiresAt && Date.parse(reservation.view.expiresAt) >= Date.parse(expiresAt), true, 'the lease goes on');

  // A bad image fails that member (the image is blamed), not the reservation nor the other member.
  const error = await t.throwsAsync(reservation.boot('dev', 'broken:test'), { instanceOf: MemberFailedError });
  t.is(error.failureCode, 'image_corrupt');
  await reservation.refresh();
  t.is(reservation.state, 'ready');
  t.is(allocationOf(reservation, 'dev').state, 'failed');
  t.is(await bootId(reservation, 'peer'), peerBoot, 'the other member was not touched');
  const image = await owner.images.show('broken:test');
  t.true(image.bootFailures >= 1, 'the image is blamed');
  // ...and the member can be booted again with a good one, through the CLI.
  const again = await cli(['boot', reservation.id, 'dev', '--image', 'disk:test']);
  t.is(again.code, 0, again.stderr);
  t.regex(again.stdout, / ready /);
  await reservation.refresh();
  t.is((await reservation.run('dev', 'echo $((6*7))')).stdout.trim(), '42');
});

test.serial('the console log keeps every boot of the lease, each after a line naming what started it', async (t) => {
  t.timeout(900_000); // boots on a loaded machine
  // The console log holds every boot of the lease, each after a line naming what started it.
  await reservation.release();
  await waitFor(async () => (await reservation.refresh()).state === 'released');
  const log = readFileSync(path.join(api.dataDir, 'consoles', reservation.id, `${machine}.log`), 'utf8');
  const notes = [...log.matchAll(/\[paddock: ([^\]]+?) at \d{4}-/g)].map((match) => match[1]);
  t.deepEqual(notes, ['power cycle', 'power off', 'power on', 'boot tiny:test', 'boot disk:test']);
  t.true((log.match(/paddock: ssh ready/g) ?? []).length >= 5, 'the boots are all in the log');
});

test.serial('hostile and racing requests get stable codes; a release during a cycle leaves nothing behind', async (t) => {
  t.timeout(900_000); // boots on a loaded machine
  const reservation = await owner.reserve({ members: [{ role: 'vm', spec: 'arch=x86_64', image: 'tiny:test' }], lease: '10m' });
  await reservation.ready({ timeout: 600 });
  await t.throwsAsync(stranger.reservation(reservation.id), { instanceOf: ForbiddenError });
  const anonymous = await api.http(null).post(`v1/reservations/${reservation.id}/power`, { json: { role: 'vm', action: 'cycle' } });
  t.is(anonymous.statusCode, 401);
  const http = api.http(ownerToken);
  const bad = await http.post(`v1/reservations/${reservation.id}/power`, { json: { role: 'vm', action: 'explode' } });
  t.is(bad.statusCode, 400);
  t.is((bad.body as { code: string }).code, 'invalid_request');
  const unknown = await http.post(`v1/reservations/${reservation.id}/power`, { json: { role: 'nope', action: 'cycle' } });
  t.is(unknown.statusCode, 404);
  await t.throwsAsync(reservation.power('vm.3', 'cycle'), { instanceOf: NotFoundError });
  const badCmdline = await http.post(`v1/reservations/${reservation.id}/boot`, { json: { role: 'vm', image: 'tiny:test', cmdline: 'console=ttyS0\u0007' } });
  t.is(badCmdline.statusCode, 400);
  const cliBad = await cli(['power', reservation.id, 'vm', 'sideways']);
  t.is(cliBad.code, 2);
  t.regex(cliBad.stderr, /not a power action/);

  // Two actions at once: the second is refused while the first runs.
  await reservation.power('vm', 'cycle', { wait: false });
  await t.throwsAsync(reservation.power('vm', 'off'), { instanceOf: MemberBusyError, message: /power cycle is under way/ });
  // A release in the middle of it wins: the reservation ends released and no VM is left.
  await reservation.release();
  await waitFor(async () => (await reservation.refresh()).state === 'released');
  await waitFor(async () => (await vmProcessesUnder(path.join(api.dataDir, 'qemu'))).length === 0);
  t.is(reservation.state, 'released');
  await t.throwsAsync(reservation.power('vm', 'on'), { instanceOf: LeaseExpiredError });
  await t.throwsAsync(reservation.boot('vm', 'tiny:test'), { instanceOf: LeaseExpiredError });
});

test.serial('another user gets 403 and a static host answers power_not_supported', async (t) => {
  t.timeout(900_000); // boots on a loaded machine
  const reservation = await owner.reserve({ members: [{ role: 'host', spec: 'static-host' }], lease: '10m' });
  await reservation.ready({ timeout: 300 });
  const mallory = await api.http(strangerToken).post(`v1/reservations/${reservation.id}/power`, { json: { role: 'host', action: 'cycle' } });
  t.is(mallory.statusCode, 403);
  t.is((mallory.body as { code: string }).code, 'forbidden');
  const malloryBoot = await api.http(strangerToken).post(`v1/reservations/${reservation.id}/boot`, { json: { role: 'host', image: 'tiny:test' } });
  t.is(malloryBoot.statusCode, 403);
  await t.throwsAsync(reservation.power('host', 'cycle'), { instanceOf: PowerNotSupportedError, message: /static machine/ });
  await t.throwsAsync(reservation.boot('host', 'tiny:test'), { instanceOf: PowerNotSupportedError });
  const viaCli = await cli(['power', reservation.id, 'cycle']);
  t.is(viaCli.code, 1);
  t.regex(viaCli.stderr, /\(power_not_supported\)/);
  t.is((await reservation.refresh()).allocations[0].state, 'ready', 'nothing changed');
  await reservation.release();
});
