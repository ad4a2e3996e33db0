// The image store on a small file system of its own (a 32 MiB tmpfs holding the whole data dir,
// SQLite included), filled by parallel uploads with and without a declared size, and by another
// writer mid-upload: uploads over the space are refused with 507 insufficient_storage, nothing
// partial is left, the database keeps its floor (a user's reservation still works), and every
// listed image downloads whole.
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import test from 'ava';
import got from 'got';
import type { ImageView, ReservationView } from '../../protocol/api.js';
import { startApi, staticMachinesYaml, testConfig, type TestApi } from '../helpers/api.js';
import { startSshd, type TestSshd } from '../helpers/sshd.js';

const MiB = 1024 * 1024;
const mountPoint = mkdtempSync(path.join(os.tmpdir(), 'paddock-small-fs-'));
const mountProblem = (() => {
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=32m,mode=0700', 'tmpfs', mountPoint], { stdio: 'pipe' });
    return undefined;
  } catch (error) {
    rmSync(mountPoint, { recursive: true, force: true });
    return String((error as { stderr?: Buffer }).stderr ?? (error as Error).message).trim();
  }
})();
if (mountProblem) console.warn(`test/images/disk.test.ts skipped: cannot mount a small file system of its own here (${mountProblem})`);
const onSmallDisk = mountProblem ? test.serial.skip : test.serial;

let api: TestApi;
let host: TestSshd;
const floor = 6 * MiB;

test.before(async () => {
  if (mountProblem) return;
  host = await startSshd();
  const machines = staticMachinesYaml([{ name: 'host-1', port: host.port, adminKeyPath: host.adminKey.path, authorizedKeysFile: host.authorizedKeysFile }]);
  api = await startApi(testConfig(`images: { maxSize: 8MiB, reserve: 6MiB }\n${machines}`, path.join(mountPoint, 'data')));
});

test.after.always(async () => {
  await api?.close();
  await host?.stop();
  if (!mountProblem) {
    execFileSync('umount', [mountPoint]);
    rmSync(mountPoint, { recursive: true, force: true });
  }
});

const sha = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');
const free = () => {
  const fs = statfsSync(mountPoint);
  return fs.bavail * fs.bsize;
};
const incoming = () => readdirSync(path.join(api.dataDir, 'images', 'incoming'));
type Answer = { statusCode: number; body: ImageView & { code?: string; message?: string } };

/** A PUT with Content-Length, or chunked (a stream body) with or without Paddock-Size. */
async function upload(ref: string, bytes: Buffer, how: 'length' | 'chunked' | 'chunked-sized'): Promise<Answer> {
  const response = await got.put(`${api.url}/v1/images/${ref}?format=raw`, {
    body: how === 'length' ? bytes : Readable.from([bytes.subarray(0, bytes.length / 2), bytes.subarray(bytes.length / 2)]),
    headers: { authorization: `Bearer ${api.adminToken}`, ...(how === 'chunked-sized' ? { 'paddock-size': String(bytes.length) } : {}) },
    throwHttpErrors: false,
    retry: { limit: 0 },
  });
  return { statusCode: response.statusCode, body: JSON.parse(response.body) as Answer['body'] };
}

onSmallDisk('parallel uploads over the free space get 507 insufficient_storage, leave nothing partial, and the database keeps its floor', async (t) => {
  const before = free();
  const kinds = ['length', 'chunked', 'chunked-sized'] as const;
  const files = Array.from({ length: 12 }, (_, index) => ({ ref: `fill/${index}`, bytes: randomBytes(5 * MiB), how: kinds[index % 3] }));
  const answers = await Promise.all(files.map((file) => upload(file.ref, file.bytes, file.how)));
  const stored = files.filter((_, index) => answers[index].statusCode === 201);
  const refused = answers.filter((answer) => answer.statusCode !== 201);
  t.log(`free before: ${before} bytes; stored ${stored.length} of ${files.length}; answers ${answers.map((answer) => answer.statusCode).join(' ')}`);
  t.true(stored.length >= 1, 'what fits is stored');
  t.true(refused.length >= 1, 'not everything fits');
  for (const answer of refused) t.like(answer, { statusCode: 507, body: { code: 'insufficient_storage' } });
  t.true(stored.length * 5 * MiB <= before - floor, 'the uploads kept out of the floor');
  t.true(free() >= floor, `the floor is free: ${free()} bytes`);
  t.deepEqual(incoming(), [], 'no partial upload left');

  // A chunked upload that announced less than it sends is cut where its grant ends.
  const liar = await got.put(`${api.url}/v1/images/liar/1?format=raw`, {
    body: Readable.from([randomBytes(MiB), randomBytes(MiB)]),
    headers: { authorization: `Bearer ${api.adminToken}`, 'paddock-size': String(MiB) },
    throwHttpErrors: false,
    retry: { limit: 0 },
  });
  t.is(liar.statusCode, 400);
  t.is((JSON.parse(liar.body) as { code: string }).code, 'size_mismatch');

  // Another user can still get a token and a machine: every write of the database found its room.
  const alice = (await api.http().post('v1/tokens', { json: { name: 'alice' } })).body as { token: string };
  const created = await api.http(alice.token).post('v1/reservations', { json: { members: [{ role: 'host', spec: 'static-host' }], lease: 60 } });
  t.is(created.statusCode, 201, JSON.stringify(created.body));
  const ready = (await api.http(alice.token).get(`v1/reservations/${(created.body as ReservationView).id}`, { searchParams: { wait: 'ready', timeout: 300 } }))
    .body as ReservationView;
  t.is(ready.state, 'ready', ready.reason);
  t.is((await api.http(alice.token).delete(`v1/reservations/${ready.id}`)).statusCode, 200);

  await checkStore(t, stored);
});

onSmallDisk('an upload stops with 507 when another writer fills the disk under it, and keeps nothing', async (t) => {
  const listedBefore = await listed();
  const ballast = path.join(mountPoint, 'ballast');
  const bytes = randomBytes(6 * MiB);
  const answer = new Promise<{ statusCode: number; body: string }>((resolve, reject) => {
    const request = httpRequest(`${api.url}/v1/images/squeezed/1?format=raw`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${api.adminToken}`, 'content-length': String(bytes.length) },
    });
    request.on('error', reject);
    request.on('response', (response) => {
      let body = '';
      response.on('data', (chunk: Buffer) => (body += chunk.toString()));
      response.on('end', () => resolve({ statusCode: response.statusCode ?? 0, body }));
    });
    void (async () => {
      request.write(bytes.subarray(0, MiB));
      await sleep(500);
      // Someone else eats the free space, floor included, while the upload is under way.
      try {
        writeFileSync(ballast, Buffer.alloc(Math.max(0, free() - 2 * MiB)));
      } catch (error) {
        t.log(`ballast: ${(error as Error).message}`);
      }
      if (!request.destroyed) request.end(bytes.subarray(MiB));
    })();
  });
  const result = await answer.catch((error: Error) => ({ statusCode: 0, body: error.message }));
  rmSync(ballast, { force: true });
  t.is(result.statusCode, 507, result.body);
  t.is((JSON.parse(result.body) as { code: string }).code, 'insufficient_storage');
  t.deepEqual(incoming(), [], 'the partial file is gone');
  t.deepEqual(
    (await listed()).map((image) => image.ref),
    listedBefore.map((image) => image.ref),
    'no image was added or lost',
  );
});

async function listed(): Promise<ImageView[]> {
  return (await api.http().get('v1/images', { searchParams: { origin: 'paddock' } })).body as ImageView[];
}

/** Every listed image downloads and matches; exactly the stored uploads are listed. */
async function checkStore(t: import('ava').ExecutionContext, stored: { ref: string; bytes: Buffer }[]): Promise<void> {
  const images = await listed();
  t.deepEqual(images.map((image) => image.ref).sort(), stored.map((file) => file.ref.replace('/', ':')).sort());
  for (const image of images) {
    const content = await got.get(`${api.url}/v1/images/${image.name}/${image.tag}/content`, {
      headers: { authorization: `Bearer ${api.adminToken}` },
      responseType: 'buffer',
    });
    t.is(sha(content.body), image.sha256, `${image.ref} downloads whole`);
  }
}
