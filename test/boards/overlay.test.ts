// A board image with no Paddock code in it (busybox + dropbear -R, no authorized_keys, no key hook:
// images/recipes/arm64-plain-initramfs.sh), stored with access `overlay`, booted for real on the
// emulated lab: Paddock appends an initramfs overlay with the reservation's key and a host key of
// its own to the initrd it stages, readiness pins that host key, and the owner logs in over real
// SSH (the client library and `paddock ssh`, both checking the pinned key). Hostile checks: the
// per-reservation initrd is not listable and is gone after release, the next reservation gets
// another host key and the first one's key does not log in, and the same bundle as `hook` gives
// no login at all (there is no hook in it).
import { execFile, execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync, existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { gunzipSync } from 'node:zlib';
import test from 'ava';
import { Paddock, ReservationFailedError, type Reservation } from '../../client/index.js';
import { startApi, testConfig, type TestApi } from '../helpers/api.js';
import { testImages } from '../helpers/images.js';
import { startLab, type Lab } from '../helpers/lab/index.js';
import { waitFor } from '../helpers/wait.js';

const run = promisify(execFile);
const tftpRoot = '/tmp/paddock-test-tftp';
let lab: Lab;
let api: TestApi;
let paddock: Paddock;
let scratch: string;

test.before(async () => {
  const images = await testImages();
  lab = await startLab(1);
  scratch = mkdtempSync(path.join(os.tmpdir(), 'paddock-overlay-board-'));
  api = await startApi(testConfig(['machines:', lab.boardYaml(lab.boards[0], { tftpRoot, extra: '      timeouts: { login: 45 }' })].join('\n')));
  paddock = new Paddock({ url: api.url, token: api.adminToken });
  await paddock.images.upload(images.arm64Plain, { name: 'plain', format: 'bundle', arch: 'arm64', access: 'overlay' });
  await paddock.images.upload(images.arm64Plain, { name: 'plain-as-hook', format: 'bundle', arch: 'arm64', access: 'hook' });
});

test.after.always(async () => {
  await api?.close();
  await lab?.stop();
  rmSync(scratch, { recursive: true, force: true });
});

/** Reservations a test made: released after it, whatever its outcome, so the board is free for the next. */
const held: Reservation[] = [];
const reserve = async (image: string) => {
  const reservation = await paddock.reserve({ members: [{ role: 'board', spec: 'arch=arm64', image }], lease: '10m' });
  held.push(reservation);
  return reservation;
};
test.afterEach.always(async () => {
  for (const reservation of held.splice(0)) await reservation.release().catch(() => undefined);
});

const staged = (reservationId: string, machine: string) => path.join(tftpRoot, 'paddock', `${reservationId}-${machine}`);

/** The public line of the dropbear host key in a staged initrd's overlay (the last archive in it). */
function overlayHostKey(initrd: string): string {
  const bytes = readFileSync(initrd);
  const at = bytes.lastIndexOf(Buffer.from([0x1f, 0x8b, 0x08]));
  const dir = mkdtempSync(path.join(scratch, 'unpacked-'));
  execFileSync('cpio', ['-id', '--quiet', '--no-absolute-filenames'], { input: gunzipSync(bytes.subarray(at)), cwd: dir });
  const line = execFileSync('dropbearkey', ['-y', '-f', path.join(dir, 'etc/dropbear/dropbear_ed25519_host_key')], { encoding: 'utf8' });
  return /^(ssh-ed25519 \S+)/m.exec(line)![1];
}

/** OpenSSH as a user would run it, with a private key and a known_hosts file of their choosing. */
async function ssh(key: string, knownHosts: string | undefined, command: string): Promise<{ code: number; stderr: string; stdout: string }> {
  const keyFile = path.join(scratch, `key-${Math.random().toString(36).slice(2)}`);
  writeFileSync(keyFile, key, { mode: 0o600 });
  const hosts = path.join(scratch, `known-${Math.random().toString(36).slice(2)}`);
  writeFileSync(hosts, knownHosts ?? '');
  const pinning = knownHosts === undefined ? ['-o', 'StrictHostKeyChecking=no'] : ['-o', 'StrictHostKeyChecking=yes'];
  try {
    const { stdout, stderr } = await run('ssh', [
      ...['-i', keyFile, '-o', 'IdentitiesOnly=yes', '-o', 'BatchMode=yes', '-o', `UserKnownHostsFile=${hosts}`, '-o', 'GlobalKnownHostsFile=/dev/null'],
      ...pinning,
      ...['-o', 'ConnectTimeout=20', '-p', String(lab.boards[0].sshPort), 'root@127.0.0.1', command],
    ]);
    return { code: 0, stdout, stderr };
  } catch (error) {
    const failed = error as { code: number; stdout: string; stderr: string };
    return { code: failed.code, stdout: failed.stdout, stderr: failed.stderr };
  }
}

test.serial('an image with no hook boots with the overlay: SSH with the host key pinned before the first login, then the overlay is gone', async (t) => {
  const reservation = await reserve('plain');
  await reservation.ready({ timeout: 300 });
  const allocation = reservation.view.allocations[0];
  t.regex(allocation.hostKey ?? '', /^ssh-ed25519 /);

  // What the board fetched: an initrd under a name nobody can guess, in a folder nobody can list.
  const dir = staged(reservation.id, allocation.machine);
  t.is(statSync(dir).mode & 0o777, 0o711, 'the staged folder can be entered, not listed');
  const names = readdirSync(dir).sort();
  t.deepEqual(names.length, 2, names.join(' '));
  t.regex(names[0], /^initrd-[0-9a-f]{32}$/);
  t.is(names[1], 'kernel', 'the plain initrd is not staged beside it');
  t.is(overlayHostKey(path.join(dir, names[0]!)), allocation.hostKey ?? '', 'readiness pinned the host key Paddock made and staged');

  // The client library pins the host key from the credentials.
  const inside = await reservation.run(
    'board',
    'cat /proc/cmdline; stat -c "%a %u:%g %n" / /root /root/.ssh /root/.ssh/authorized_keys; cat /root/.ssh/authorized_keys',
  );
  t.is(inside.code, 0, inside.stderr);
  t.notRegex(inside.stdout.split('\n')[0] ?? '', /paddock/, 'no key on the command line');
  // / keeps the mode the kernel gave the initramfs root (1777): a `.` entry packed from a private
  // temporary folder would have made it 0700.
  t.regex(inside.stdout, /^1777 0:0 \/$/m, "the overlay left / as it was (no '.' entry)");
  t.regex(inside.stdout, /^700 0:0 \/root$/m);
  t.regex(inside.stdout, /^700 0:0 \/root\/\.ssh$/m);
  t.regex(inside.stdout, /^600 0:0 \/root\/\.ssh\/authorized_keys$/m);
  const credentials = await reservation.credentials();
  t.true(inside.stdout.includes(credentials.publicKey.trim()), "the reservation's key is root's authorized key");

  // `paddock ssh` runs OpenSSH with StrictHostKeyChecking=yes against the pinned key.
  const cli = await run(process.execPath, [path.resolve('bin/paddock.js'), 'ssh', reservation.id, 'board', '--', 'uname', '-m'], {
    env: { ...process.env, PADDOCK_URL: api.url, PADDOCK_TOKEN: api.adminToken },
  }).catch((error: unknown) => error as { stdout: string; stderr: string });
  t.is(cli.stdout.trim(), 'aarch64', cli.stderr);

  t.log(api.logs.filter((line) => line.includes('initrd overlay')).join('\n'));

  await reservation.release();
  await waitFor(async () => (await reservation.refresh()).state === 'released', 120_000, 'the release');
  t.false(existsSync(dir), 'the per-reservation initrd (with its host key) is gone from the TFTP root');
  const leftovers = readdirSync(path.join(tftpRoot, 'paddock')).filter((name) => name.startsWith(reservation.id));
  t.deepEqual(leftovers, []);
  t.false(
    api.logs.some((line) => /PRIVATE KEY|dropbear_ed25519_host_key/.test(line)),
    'no private key in the logs',
  );
});

test.serial("the next reservation gets another host key, and the first reservation's key does not log in", async (t) => {
  const first = await reserve('plain');
  await first.ready({ timeout: 300 });
  const firstCredentials = await first.credentials();
  await first.release();
  await waitFor(async () => (await first.refresh()).state === 'released', 120_000, 'the release');

  const second = await reserve('plain');
  await second.ready({ timeout: 300 });
  const secondCredentials = await second.credentials();
  t.not(secondCredentials.machines[0].hostKey, firstCredentials.machines[0].hostKey, 'a host key per reservation');

  const own = await ssh(secondCredentials.privateKey, secondCredentials.knownHosts, 'echo in');
  t.is(own.code, 0, own.stderr);
  t.is(own.stdout.trim(), 'in');
  const oldKey = await ssh(firstCredentials.privateKey, undefined, 'echo in');
  t.not(oldKey.code, 0);
  t.regex(oldKey.stderr, /Permission denied/, 'the first reservation key is not authorized any more');
  const oldHostKey = await ssh(secondCredentials.privateKey, firstCredentials.knownHosts, 'echo in');
  t.not(oldHostKey.code, 0);
  t.regex(oldHostKey.stderr, /REMOTE HOST IDENTIFICATION HAS CHANGED|Host key verification failed/, 'the old pinned host key does not match');

  await second.release();
  await waitFor(async () => (await second.refresh()).state === 'released', 120_000, 'the release');
});

test.serial('the same bundle stored as access hook gives no login: there is no hook in it', async (t) => {
  const reservation = await reserve('plain-as-hook');
  const failed = await t.throwsAsync(reservation.ready({ timeout: 300 }), { instanceOf: ReservationFailedError });
  t.is((await reservation.refresh()).state, 'failed');
  // The image ran (its init started dropbear) but nothing in it took the key from the command line,
  // and it printed none of the hook's markers, so readiness never saw it reach user space.
  t.regex(failed.message, /kernel_timeout|boot_timeout/);
  t.regex(failed.message, /board: dropbear started/);
  t.notRegex(failed.message, /paddock: /);
});
