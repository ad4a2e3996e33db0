// `paddock images …` and the library's images API against a real server: upload with progress
// and throughput, list, show, download whole and by range, remove; bad references refused.
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import test from 'ava';
import { Paddock, PaddockError } from '../../client/index.js';
import { startApi, testConfig, type TestApi } from '../helpers/api.js';

let api: TestApi;
let dir: string;

test.before(async () => {
  api = await startApi(testConfig('machines: []'));
  dir = mkdtempSync(path.join(os.tmpdir(), 'paddock-images-cli-'));
});

test.after.always(async () => {
  await api?.close();
  rmSync(dir, { recursive: true, force: true });
});

function paddock(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [path.resolve('bin/paddock.js'), ...args],
      { env: { ...process.env, PADDOCK_URL: api.url, PADDOCK_TOKEN: api.adminToken }, timeout: 60_000 },
      (error, stdout, stderr) => resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

test.serial('upload with progress, list, show, download whole and by range, remove', async (t) => {
  const bytes = randomBytes(3 * 1024 * 1024);
  const file = path.join(dir, 'disk.qcow2');
  writeFileSync(file, bytes);
  const uploaded = await paddock(['images', 'upload', file, '--name', 'debian', '--tag', 'test', '--arch', 'x86_64', '--expires', '2h', '--json']);
  t.is(uploaded.code, 0, uploaded.stderr);
  const image = JSON.parse(uploaded.stdout) as { ref: string; sha256: string; size: number; expiresAt?: string };
  t.is(image.ref, 'debian:test');
  t.is(image.sha256, createHash('sha256').update(bytes).digest('hex'));
  t.is(image.size, bytes.length);
  t.truthy(image.expiresAt);
  t.regex(uploaded.stderr, /uploading disk\.qcow2: .*100% 3\.0 MiB\/3\.0 MiB [\d.]+ MiB\/s/, 'progress and throughput on stderr');

  const listed = await paddock(['images', 'ls']);
  t.regex(listed.stdout, /debian:test\s+paddock\s+qcow2\s+x86_64\s+3\.0 MiB\s+admin/);
  const shown = await paddock(['images', 'show', 'debian:test']);
  t.regex(shown.stdout, new RegExp(`sha256 ${image.sha256}`));

  const whole = path.join(dir, 'whole.bin');
  t.is((await paddock(['images', 'download', 'debian:test', whole, '--quiet'])).code, 0);
  t.true(readFileSync(whole).equals(bytes));
  const part = path.join(dir, 'part.bin');
  t.is((await paddock(['images', 'download', 'debian:test', part, '--range', '100-199', '--quiet'])).code, 0);
  t.true(readFileSync(part).equals(bytes.subarray(100, 200)));

  const removed = await paddock(['images', 'rm', 'debian:test']);
  t.is(removed.code, 0, removed.stderr);
  const gone = await paddock(['images', 'show', 'debian:test']);
  t.is(gone.code, 1);
  t.regex(gone.stderr, /\(not_found\)/);
});

test.serial('the library refuses bad references, and the server bad names', async (t) => {
  const paddockClient = new Paddock({ url: api.url, token: api.adminToken });
  await t.throwsAsync(paddockClient.images.show('a:b:c'), { instanceOf: PaddockError, message: /not an image reference/ });
  const file = path.join(dir, 'small.raw');
  writeFileSync(file, 'x');
  const error = await t.throwsAsync(paddockClient.images.upload(file, { name: '../etc', format: 'raw' }), { instanceOf: PaddockError });
  t.is(error!.code, 'invalid_parameter', 'a name that is no name is refused with the path before the image store sees it');
  const uploaded = await paddock(['images', 'upload', file, '--name', 'Bad Name']);
  t.is(uploaded.code, 1);
  t.regex(uploaded.stderr, /\(invalid_parameter\)/);
  const upper = await paddock(['images', 'upload', file, '--name', 'Upper']);
  t.is(upper.code, 1);
  t.regex(upper.stderr, /\(invalid_name\)/, 'a well-formed name the image store does not take');
});
