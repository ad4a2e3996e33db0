// Image streams are limited by idleness, not by their whole length: a throttled upload and a
// throttled agent download that last several times the idle timeout (and longer than a total
// limit that stands for the old 300 s and 90 s ones) go through whole; a stalled one fails with a
// stable code: an upload leaves nothing partial, an agent's download only its partial file.
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import test from 'ava';
import got from 'got';
import { ImageCache } from '../../lab-host/image-cache.js';
import { ProvisionError } from '../../provisioners/types.js';
import { startApi, testConfig, type TestApi } from '../helpers/api.js';
import { startProxy } from '../helpers/proxy.js';

const KiB = 1024;
const idleSeconds = 1;
let api: TestApi;
const cacheDirs: string[] = [];

test.before(async () => {
  api = await startApi(testConfig(`images: { maxSize: 4MiB, idleTimeout: ${idleSeconds} }\nagent: { enabled: false }`));
});

test.after.always(async () => {
  await api?.close();
  for (const dir of cacheDirs) rmSync(dir, { recursive: true, force: true });
});

const sha = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');
const incoming = () => readdirSync(path.join(api.dataDir, 'images', 'incoming'));

/** A PUT whose body goes out in `slices` of 16 KiB, `pauseMs` apart; `stallAfter` slices, then silence. */
function slowUpload(
  ref: string,
  bytes: Buffer,
  options: { pauseMs: number; stallAfter?: number },
): Promise<{ statusCode: number; body: { code?: string; sha256?: string; message?: string } }> {
  return new Promise((resolve, reject) => {
    const request = httpRequest(`${api.url}/v1/images/${ref}?format=raw`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${api.adminToken}`, 'content-length': String(bytes.length) },
    });
    let answered = false;
    request.on('error', (error) => (answered ? undefined : reject(error)));
    request.on('response', (response) => {
      answered = true;
      let text = '';
      response.on('data', (chunk: Buffer) => (text += chunk.toString()));
      response.on('end', () => resolve({ statusCode: response.statusCode ?? 0, body: JSON.parse(text) as { code?: string } }));
    });
    void (async () => {
      for (let offset = 0, slice = 0; offset < bytes.length && !answered; offset += 16 * KiB, slice++) {
        if (slice === options.stallAfter) return; // silence, never the end
        request.write(bytes.subarray(offset, offset + 16 * KiB));
        await sleep(options.pauseMs);
      }
      if (!answered) request.end();
    })();
  });
}

test.serial('an upload throttled to last six idle timeouts is stored whole; a stalled one gets 408 upload_stalled and leaves nothing', async (t) => {
  const bytes = randomBytes(24 * 16 * KiB);
  const started = Date.now();
  const slow = await slowUpload('slow/1', bytes, { pauseMs: 250 });
  const lasted = Date.now() - started;
  t.is(slow.statusCode, 201, JSON.stringify(slow.body));
  t.is(slow.body.sha256, sha(bytes));
  t.true(lasted > 5 * idleSeconds * 1000, `the upload lasted ${lasted} ms`);
  const stored = await got.get(`${api.url}/v1/images/slow/1/content`, { headers: { authorization: `Bearer ${api.adminToken}` }, responseType: 'buffer' });
  t.true(stored.body.equals(bytes));

  const stalled = await slowUpload('stalled/1', randomBytes(24 * 16 * KiB), { pauseMs: 50, stallAfter: 3 });
  t.is(stalled.statusCode, 408, JSON.stringify(stalled.body));
  t.is(stalled.body.code, 'upload_stalled');
  t.deepEqual(incoming(), [], 'no partial file');
  t.is((await api.http().get('v1/images/stalled/1')).statusCode, 404, 'no image');
});

/** The agent's image cache behind the proxy, with a 2 s limit on whole requests standing for the old 90 s. */
function cacheBehind(url: string): { cache: ImageCache; dir: string } {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'paddock-cache-'));
  cacheDirs.push(dir);
  const http = got.extend({ prefixUrl: url, headers: { authorization: `Bearer ${api.adminToken}` }, retry: { limit: 0 }, timeout: { request: 2000 } });
  return { cache: new ImageCache(http, dir, idleSeconds * 1000), dir };
}

test.serial("the agent's download throttled past the old total limit arrives whole; a stalled one fails as image_download_stalled", async (t) => {
  const bytes = randomBytes(24 * 16 * KiB);
  t.is((await api.http().put('v1/images/big/1', { body: bytes as unknown as string, searchParams: { format: 'raw' } })).statusCode, 201);

  const slow = await startProxy(api.url, { pauseMs: 250 });
  try {
    const { cache } = cacheBehind(slow.url);
    const started = Date.now();
    const image = await cache.fetch('big:1');
    const lasted = Date.now() - started;
    t.true(lasted > 5 * idleSeconds * 1000, `the download lasted ${lasted} ms, more than the 2 s total limit of the API calls`);
    t.is(image.sha256, sha(bytes));
    t.true(readFileSync(image.file).equals(bytes));
  } finally {
    await slow.close();
  }

  const stuck = await startProxy(api.url, { pauseMs: 50, stallAfter: 64 * KiB });
  try {
    const { cache, dir } = cacheBehind(stuck.url);
    const error = await t.throwsAsync(cache.fetch('big:1'), { instanceOf: ProvisionError });
    t.is(error?.code, 'image_download_stalled', error?.message);
    // What came waits as a partial download (never taken for the image) for the next try to resume.
    t.deepEqual(readdirSync(dir), [`${sha(bytes)}.partial`], 'no image in the cache');
  } finally {
    await stuck.close();
  }
});
