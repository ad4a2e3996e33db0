// Initramfs overlays built with the real tools (ssh-keygen, dropbearconvert, cpio) on the real
// initrds of the test images: what the kernel will unpack (order, owners, modes, no `.`), the
// padding, the host key in the format the image's SSH server reads, and one key per reservation.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { gunzipSync } from 'node:zlib';
import test from 'ava';
import { Paddock, PaddockError } from '../../client/index.js';
import { OverlayError, sshServersOf, writeOverlayInitrd } from '../../images/initrd-overlay.js';
import { startApi, testConfig } from '../helpers/api.js';
import { testImages } from '../helpers/images.js';

let scratch: string;
let plainInitrd: string;
let hookInitrd: string;
const authorizedKeys = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq2Yk3oT7cYbN1dZ1tdQ0t5m2m3yFv8o0m4uJm0Y5pP reservation-1';

test.before(async () => {
  const images = await testImages();
  scratch = mkdtempSync(path.join(os.tmpdir(), 'paddock-overlay-test-'));
  for (const [name, bundle] of [
    ['plain', images.arm64Plain],
    ['hook', images.arm64],
  ]) {
    execFileSync('mkdir', ['-p', path.join(scratch, name)]);
    execFileSync('tar', ['-xf', bundle, '-C', path.join(scratch, name), 'initrd']);
  }
  plainInitrd = path.join(scratch, 'plain', 'initrd');
  hookInitrd = path.join(scratch, 'hook', 'initrd');
});

test.after.always(() => rmSync(scratch, { recursive: true, force: true }));

const overlayOf = (target: string, base: string): Buffer => {
  const size = statSync(base).size;
  const padded = size + ((4 - (size % 4)) % 4);
  const whole = readFileSync(target);
  return whole.subarray(padded);
};

test('the overlay holds authorized_keys and a dropbear host key, parents first, root-owned, private modes, after a 4-byte-aligned base', async (t) => {
  t.deepEqual(await sshServersOf(plainInitrd), ['dropbear'], 'dropbear is found in the initrd listing');
  const target = path.join(scratch, 'initrd-1');
  const overlay = await writeOverlayInitrd({ base: plainInitrd, target, mode: 0o644, authorizedKeys, workDir: path.join(scratch, 'work') });
  t.regex(overlay.hostKey, /^ssh-ed25519 [A-Za-z0-9+/=]+$/);
  t.is(statSync(target).mode & 0o777, 0o644);
  const base = readFileSync(plainInitrd);
  const whole = readFileSync(target);
  t.true(whole.subarray(0, base.length).equals(base), 'the base comes first, unchanged');
  const padding = whole.subarray(base.length, base.length + ((4 - (base.length % 4)) % 4));
  t.true(
    padding.every((byte) => byte === 0),
    'zeros pad the base to 4 bytes',
  );
  t.deepEqual([...whole.subarray(base.length + padding.length, base.length + padding.length + 2)], [0x1f, 0x8b], 'a gzip archive starts at a 4-byte offset');

  const archive = gunzipSync(overlayOf(target, plainInitrd));
  const listing = execFileSync('cpio', ['-itv', '--quiet', '--numeric-uid-gid'], { input: archive, encoding: 'utf8' })
    .trim()
    .split('\n')
    .map((line) => {
      const fields = line.split(/\s+/);
      return `${fields[0]} ${fields[2]}:${fields[3]} ${fields.slice(8).join(' ')}`;
    });
  t.deepEqual(listing, [
    'drwx------ 0:0 root',
    'drwx------ 0:0 root/.ssh',
    '-rw------- 0:0 root/.ssh/authorized_keys',
    'drwxr-xr-x 0:0 etc',
    'drwxr-xr-x 0:0 etc/dropbear',
    '-rw------- 0:0 etc/dropbear/dropbear_ed25519_host_key',
  ]);

  const unpacked = path.join(scratch, 'unpacked-1');
  execFileSync('mkdir', ['-p', unpacked]);
  execFileSync('cpio', ['-id', '--quiet', '--no-absolute-filenames'], { input: archive, cwd: unpacked });
  t.is(readFileSync(path.join(unpacked, 'root/.ssh/authorized_keys'), 'utf8'), `${authorizedKeys}\n`);
  // dropbear reads its own format only: dropbearkey prints the same public key from the file.
  const fromDropbear = execFileSync('dropbearkey', ['-y', '-f', path.join(unpacked, 'etc/dropbear/dropbear_ed25519_host_key')], { encoding: 'utf8' });
  t.true(fromDropbear.includes(overlay.hostKey), 'the staged key is the pinned one, in dropbear format');
  t.log(
    `overlay: ${overlayOf(target, plainInitrd).length} bytes gzipped, ${archive.length} raw; built in ${overlay.timings.total.toFixed(1)} ms (host key ${overlay.timings.key.toFixed(1)} ms, archive ${overlay.timings.archive.toFixed(1)} ms)`,
  );
});

test('every overlay has a host key of its own, and the build time per reservation is measured', async (t) => {
  const keys = new Set<string>();
  const totals: number[] = [];
  for (let index = 0; index < 10; index += 1) {
    const overlay = await writeOverlayInitrd({
      base: plainInitrd,
      target: path.join(scratch, `initrd-many-${index}`),
      mode: 0o644,
      authorizedKeys,
      workDir: path.join(scratch, 'work'),
    });
    keys.add(overlay.hostKey);
    totals.push(overlay.timings.total);
  }
  t.is(keys.size, 10);
  totals.sort((a, b) => a - b);
  t.log(`per-reservation initrd (3 MB base + overlay), n=10: median ${totals[5].toFixed(1)} ms, min ${totals[0].toFixed(1)}, max ${totals[9].toFixed(1)}`);
  t.deepEqual(execFileSync('ls', ['-A', path.join(scratch, 'work')], { encoding: 'utf8' }), '', 'nothing of the keys is left in the work folder');
});

test('an OpenSSH-based initrd gets the key in OpenSSH format; one with no SSH server is refused', async (t) => {
  // A tiny initrd with an sshd (cpio of a tree), gzip-compressed, of odd length.
  const tree = path.join(scratch, 'openssh-tree');
  execFileSync('mkdir', ['-p', path.join(tree, 'usr/sbin'), path.join(tree, 'etc/ssh')]);
  writeFileSync(path.join(tree, 'usr/sbin/sshd'), 'not really sshd\n');
  const list = 'usr\nusr/sbin\nusr/sbin/sshd\netc\netc/ssh\n';
  const archive = execFileSync('cpio', ['-o', '-H', 'newc', '-R', '0:0', '--quiet'], { input: list, cwd: tree });
  const base = path.join(scratch, 'openssh-initrd');
  writeFileSync(base, execFileSync('gzip', ['-9n'], { input: archive }));
  t.deepEqual(await sshServersOf(base), ['openssh']);
  const target = path.join(scratch, 'openssh-target');
  const overlay = await writeOverlayInitrd({ base, target, mode: 0o644, authorizedKeys, workDir: path.join(scratch, 'work') });
  const names = execFileSync('cpio', ['-it', '--quiet'], { input: gunzipSync(overlayOf(target, base)), encoding: 'utf8' })
    .trim()
    .split('\n');
  t.deepEqual(names, ['root', 'root/.ssh', 'root/.ssh/authorized_keys', 'etc', 'etc/ssh', 'etc/ssh/ssh_host_ed25519_key', 'etc/ssh/ssh_host_ed25519_key.pub']);
  const unpacked = path.join(scratch, 'openssh-unpacked');
  execFileSync('mkdir', ['-p', unpacked]);
  execFileSync('cpio', ['-id', '--quiet'], { input: gunzipSync(overlayOf(target, base)), cwd: unpacked });
  const fromKey = execFileSync('ssh-keygen', ['-y', '-f', path.join(unpacked, 'etc/ssh/ssh_host_ed25519_key')], { encoding: 'utf8' });
  t.is(fromKey.trim().split(' ').slice(0, 2).join(' '), overlay.hostKey);

  const empty = path.join(scratch, 'empty-initrd');
  writeFileSync(empty, execFileSync('gzip', ['-9n'], { input: execFileSync('cpio', ['-o', '-H', 'newc', '--quiet'], { input: 'usr\n', cwd: tree }) }));
  const refused = await t.throwsAsync(writeOverlayInitrd({ base: empty, target: path.join(scratch, 'x'), mode: 0o644, authorizedKeys, workDir: scratch }), {
    instanceOf: OverlayError,
  });
  t.is(refused.code, 'image_invalid');
  t.regex(refused.message, /no SSH server/);
  const junk = path.join(scratch, 'junk-initrd');
  writeFileSync(junk, Buffer.from('this is not an initrd at all'));
  const unreadable = await t.throwsAsync(sshServersOf(junk), { instanceOf: OverlayError });
  t.is(unreadable.code, 'image_invalid');
});

test("Paddock's own hook image is found to have dropbear too (the listing reads a real initrd)", async (t) => {
  t.deepEqual(await sshServersOf(hookInitrd), ['dropbear']);
});

test("an upload detects a bundle's access where it can: Paddock's hook, an SSH server without it, or neither", async (t) => {
  const images = await testImages();
  const api = await startApi(testConfig(''));
  try {
    const paddock = new Paddock({ url: api.url, token: api.adminToken });
    const upload = (file: string, name: string, access?: 'hook' | 'overlay') =>
      paddock.images.upload(file, { name, format: 'bundle', arch: 'arm64', ...(access ? { access } : {}) });
    t.is((await upload(images.arm64, 'hooked')).access, 'hook', 'the initrd names paddock.authorized_key');
    t.is((await upload(images.arm64Plain, 'plain')).access, 'overlay', 'dropbear and no hook');
    t.is((await upload(images.arm64Plain, 'plain-hook', 'hook')).access, 'hook', 'what the uploader says wins');
    // A bundle whose initrd cannot be read (or has no SSH server) stays hook, the default.
    writeFileSync(path.join(scratch, 'initrd'), 'not an archive');
    writeFileSync(path.join(scratch, 'kernel'), 'not a kernel');
    execFileSync('tar', ['-cf', path.join(scratch, 'junk.tar'), '-C', scratch, 'kernel', 'initrd']);
    t.is((await upload(path.join(scratch, 'junk.tar'), 'junk')).access, 'hook');
    // A link named initrd is not followed to a file of the API's host.
    execFileSync('ln', ['-sf', '/etc/passwd', path.join(scratch, 'initrd')]);
    execFileSync('tar', ['-cf', path.join(scratch, 'link.tar'), '-C', scratch, 'kernel', 'initrd']);
    t.is((await upload(path.join(scratch, 'link.tar'), 'link')).access, 'hook');

    const refused = await t.throwsAsync(upload(images.arm64, 'hooked-as-overlay', 'overlay'), { instanceOf: PaddockError });
    t.is(refused.code, 'invalid_request');
    t.regex(refused.message, /reads the key from the kernel command line/);
    t.false(
      (await paddock.images.list()).some((image) => image.name === 'hooked-as-overlay'),
      'nothing was stored',
    );
  } finally {
    await api.close();
  }
});
