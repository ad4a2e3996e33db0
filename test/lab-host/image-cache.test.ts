// The lab host's image cache against a real API through a TCP proxy (test/helpers/proxy.ts): a
// download whose connection breaks goes on with a Range from where it stopped, a partial download
// left by an agent that stopped is resumed by the next one, and a partial that turns out wrong (its
// bytes are not the image's, or the API sends the whole file) is thrown away: the image always
// arrives whole and matching its sha256, and a partial is never taken for the image.
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import test from 'ava';
import got from 'got';
import { ImageCache } from '../../lab-host/image-cache.js';
import { startApi, testConfig, type TestApi } from '../helpers/api.js';
import { startProxy, type ProxyOptions, type TestProxy } from '../helpers/proxy.js';

const KiB = 1024;
const bytes = randomBytes(512 * KiB);
const sha256 = createHash('sha256').update(bytes).digest('hex');
let api: TestApi;
let agentToken: string;
const cleanups: (() => Promise<void> | void)[] = [];

test.before(async () => {
  api = await startApi(testConfig('agent: { enabled: false }'));
  const stored = await api.http().put('v1/images/big/1', { body: bytes as unknown as string, searchParams: { format: 'raw' } });
  if (stored.statusCode !== 201) throw new Error(`upload: ${JSON.stringify(stored.body)}`);
  agentToken = ((await api.http().post('v1/tokens', { json: { name: 'lab-a', role: 'agent' } })).body as { token: string }).token;
});

test.after.always(async () => {
  for (const cleanup of cleanups) await cleanup();
  await api?.close();
});

/** A cache directory, and a cache in it that reaches the API (as lab-a) through a proxy with these options. */
async function cacheBehind(options: ProxyOptions, dir = mkdtempSync(path.join(os.tmpdir(), 'paddock-cache-'))) {
  const proxy = await startProxy(api.url, options);
  cleanups.push(
    () => proxy.close(),
    () => rmSync(dir, { recursive: true, force: true }),
  );
  const http = got.extend({ prefixUrl: proxy.url, headers: { authorization: `Bearer ${agentToken}` }, retry: { limit: 0 } });
  return { cache: new ImageCache(http, dir, 5000), dir, proxy };
}

/** The heads of the requests for the image's bytes, and the Range and If-Range each carried. */
function contentRequests(proxy: TestProxy): { range?: string; ifRange?: string }[] {
  return proxy.requests
    .filter((head) => /^GET \S+\/content /.test(head))
    .map((head) => ({ range: /\r\nrange: *([^\r]*)/i.exec(head)?.[1], ifRange: /\r\nif-range: *([^\r]*)/i.exec(head)?.[1] }));
}

test('a download cut after 100 KiB goes on from where it stopped; the image arrives whole', async (t) => {
  const { cache, dir, proxy } = await cacheBehind({ cutAfter: 100 * KiB });
  const image = await cache.fetch('big:1');
  t.is(image.sha256, sha256);
  t.true(readFileSync(image.file).equals(bytes));
  t.deepEqual(readdirSync(dir), [sha256], 'the image, no partial left');
  const requests = contentRequests(proxy);
  t.is(requests.length, 2, JSON.stringify(requests));
  t.deepEqual(requests[0], { range: undefined, ifRange: undefined });
  // The second asks for the rest: from what the first brought of the body and wrote to the partial
  // (the cut 100 KiB less the answer's head; on a busy machine the last chunks that came in but were
  // not yet written go with the broken connection, so it may be less, never nothing and never more).
  const resumedAt = Number(/^bytes=(\d+)-$/.exec(requests[1].range ?? '')?.[1]);
  t.true(resumedAt > 0 && resumedAt <= 100 * KiB, `resumed at ${requests[1].range}`);
  t.is(requests[1].ifRange, `"${sha256}"`);
  // Passed: the cut 100 KiB, then the rest from where it resumed and the second answer's head.
  t.true(proxy.passed() <= 100 * KiB + bytes.length - resumedAt + 2 * KiB, `${proxy.passed()} bytes passed, resumed at ${resumedAt}`);
});

test("a partial download an agent left behind is resumed by the next agent from the partial's size", async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'paddock-cache-'));
  writeFileSync(path.join(dir, `${sha256}.partial`), bytes.subarray(0, 300 * KiB));
  const { cache, proxy } = await cacheBehind({}, dir);
  const image = await cache.fetch('big:1');
  t.true(readFileSync(image.file).equals(bytes));
  t.deepEqual(contentRequests(proxy), [{ range: `bytes=${300 * KiB}-`, ifRange: `"${sha256}"` }]);
  t.true(proxy.passed() < bytes.length - 300 * KiB + 8 * KiB, `${proxy.passed()} bytes passed`);
  t.deepEqual(readdirSync(dir), [sha256]);
});

test('a partial whose bytes are not the image is thrown away at the end and the image downloaded whole', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'paddock-cache-'));
  writeFileSync(path.join(dir, `${sha256}.partial`), randomBytes(200 * KiB));
  const { cache, proxy } = await cacheBehind({}, dir);
  const image = await cache.fetch('big:1');
  t.true(readFileSync(image.file).equals(bytes));
  t.deepEqual(contentRequests(proxy), [
    { range: `bytes=${200 * KiB}-`, ifRange: `"${sha256}"` },
    { range: undefined, ifRange: undefined },
  ]);
  t.deepEqual(readdirSync(dir), [sha256]);
});

test('a partial the API answers with the whole file (200, not 206) is replaced by it', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'paddock-cache-'));
  // Wrong bytes: appending the whole file to them could never make the image.
  writeFileSync(path.join(dir, `${sha256}.partial`), randomBytes(200 * KiB));
  const { cache, proxy } = await cacheBehind({ dropRange: true }, dir);
  const image = await cache.fetch('big:1');
  t.true(readFileSync(image.file).equals(bytes));
  t.is(statSync(image.file).size, bytes.length);
  t.deepEqual(contentRequests(proxy), [{ range: `bytes=${200 * KiB}-`, ifRange: `"${sha256}"` }], "one request: the whole file took the partial's place");
  t.deepEqual(readdirSync(dir), [sha256]);
});

test('a partial longer than the image is thrown away; the image is downloaded whole', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'paddock-cache-'));
  writeFileSync(path.join(dir, `${sha256}.partial`), Buffer.concat([bytes, randomBytes(KiB)]));
  const { cache, proxy } = await cacheBehind({}, dir);
  const image = await cache.fetch('big:1');
  t.true(readFileSync(image.file).equals(bytes));
  t.deepEqual(contentRequests(proxy), [{ range: undefined, ifRange: undefined }]);
});
