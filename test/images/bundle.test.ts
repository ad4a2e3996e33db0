// Boot bundles read from real tar archives: a kernel command line that could steer the bootloader
// (a newline, ^C, any control character or non-ASCII byte) is refused with a stable code.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import test from 'ava';
import { BundleError, unpackBundle } from '../../images/bundle.js';

let scratch: string;

test.before(() => {
  scratch = mkdtempSync(path.join(os.tmpdir(), 'paddock-bundle-test-'));
});

test.after.always(() => rmSync(scratch, { recursive: true, force: true }));

/** A bundle archive holding a kernel and `cmdline`, as a user would upload it. */
function bundle(name: string, cmdline: string | Buffer): string {
  const dir = path.join(scratch, `${name}-src`);
  execFileSync('mkdir', ['-p', dir]);
  writeFileSync(path.join(dir, 'kernel'), 'not really a kernel');
  writeFileSync(path.join(dir, 'cmdline'), cmdline);
  const archive = path.join(scratch, `${name}.tar`);
  execFileSync('tar', ['-cf', archive, '-C', dir, 'kernel', 'cmdline']);
  return archive;
}

test('a printable one-line cmdline is read as is (its final newline dropped)', async (t) => {
  const unpacked = await unpackBundle(bundle('good', 'console=ttyAMA0 quiet paddock.x=a;b\n'), path.join(scratch, 'good'));
  t.is(unpacked.cmdline, 'console=ttyAMA0 quiet paddock.x=a;b');
});

const hostile: [string, string | Buffer][] = [
  ['newline', 'console=ttyAMA0\nreset'],
  ['carriage return', 'console=ttyAMA0\rreset'],
  ['^C', 'console=ttyAMA0 \x03; reset'],
  ['NUL', 'console=ttyAMA0\0reset'],
  ['tab', 'console=ttyAMA0\treset'],
  ['escape', 'console=ttyAMA0 \x1b[2J'],
  ['DEL', 'console=ttyAMA0\x7f\x7f\x7freset'],
  ['non-ASCII', Buffer.from('console=ttyAMA0 é', 'utf8')],
];

for (const [what, cmdline] of hostile) {
  test(`a cmdline with ${what} is refused as image_invalid`, async (t) => {
    const archive = bundle(what.replace(/\W/g, '_'), cmdline);
    const error = await t.throwsAsync(unpackBundle(archive, path.join(scratch, `${what.replace(/\W/g, '_')}-out`)), { instanceOf: BundleError });
    t.is(error?.code, 'image_invalid');
    t.regex(error?.message ?? '', /printable ASCII: byte 0x[0-9a-f]{2} at offset \d+/);
  });
}
