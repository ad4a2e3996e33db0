// The image store through the real API: streamed uploads with sha256, content addressing, HTTP
// Range downloads, expiry, limits, and names that try to leave the store.
import { createHash, randomBytes } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import path from 'node:path';
import test from 'ava';
import got from 'got';
import type { ImageView, ReservationView } from '../../protocol/api.js';
import { startApi, staticMachinesYaml, testConfig, type TestApi } from '../helpers/api.js';
import { startSshd, type TestSshd } from '../helpers/sshd.js';

let api: TestApi;
let host: TestSshd;

test.before(async () => {
  host = await startSshd();
  api = await startApi(
    testConfig(
      `images: { maxSize: 1MiB, collectInterval: 0.2 }\n${staticMachinesYaml([{ name: 'host-1', port: host.port, adminKeyPath: host.adminKey.path, authorizedKeysFile: host.authorizedKeysFile }])}`,
    ),
  );
});

test.after.always(async () => {
  await api?.close();
  await host?.stop();
});

const sha = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');
const blobs = () => readdirSync(path.join(api.dataDir, 'images', 'blobs', 'sha256'));
const incoming = () => readdirSync(path.join(api.dataDir, 'images', 'incoming'));

async function upload(ref: string, bytes: Buffer, options: { query?: string; sha256?: string } = {}) {
  const response = await got.put(`${api.url}/v1/images/${ref}${options.query ? `?${options.query}` : ''}`, {
    body: bytes,
    headers: {
      authorization: `Bearer ${api.adminToken}`,
      'content-type': 'application/octet-stream',
      ...(options.sha256 ? { 'paddock-sha256': options.sha256 } : {}),
    },
    throwHttpErrors: false,
    retry: { limit: 0 },
  });
  return { statusCode: response.statusCode, body: JSON.parse(response.body) as ImageView & { code?: string; message?: string } };
}

test.serial('upload, list, show and download whole and by range; sha256 verified', async (t) => {
  const bytes = randomBytes(300_000);
  const stored = await upload('alpine/3.19', bytes, { query: 'format=raw&arch=x86_64', sha256: sha(bytes) });
  t.is(stored.statusCode, 201, JSON.stringify(stored.body));
  t.like(stored.body, {
    ref: 'alpine:3.19',
    name: 'alpine',
    tag: '3.19',
    format: 'raw',
    arch: 'x86_64',
    size: bytes.length,
    sha256: sha(bytes),
    owner: 'admin',
    origin: 'paddock',
  });
  const listed = (await api.http().get('v1/images')).body as ImageView[];
  t.deepEqual(
    listed.map((image) => image.ref),
    ['alpine:3.19'],
  );
  const whole = await got.get(`${api.url}/v1/images/alpine/3.19/content`, { headers: { authorization: `Bearer ${api.adminToken}` }, responseType: 'buffer' });
  t.is(whole.statusCode, 200);
  t.true(whole.body.equals(bytes));
  const part = await got.get(`${api.url}/v1/images/alpine/3.19/content`, {
    headers: { authorization: `Bearer ${api.adminToken}`, range: 'bytes=1000-1999' },
    responseType: 'buffer',
  });
  t.is(part.statusCode, 206);
  t.is(part.headers['content-range'], `bytes 1000-1999/${bytes.length}`);
  t.true(part.body.equals(bytes.subarray(1000, 2000)));
  const tail = await got.get(`${api.url}/v1/images/alpine/3.19/content`, {
    headers: { authorization: `Bearer ${api.adminToken}`, range: 'bytes=-10' },
    responseType: 'buffer',
  });
  t.true(tail.body.equals(bytes.subarray(bytes.length - 10)));
  const outside = await api.http().get('v1/images/alpine/3.19/content', { headers: { range: `bytes=${bytes.length}-` } });
  t.is(outside.statusCode, 416);
});

test.serial('the same bytes uploaded twice are stored once; deleting one name keeps the other', async (t) => {
  const bytes = randomBytes(50_000);
  t.is((await upload('dup/one', bytes)).statusCode, 201);
  t.is((await upload('dup/two', bytes)).statusCode, 201);
  t.is(blobs().filter((name) => name === sha(bytes)).length, 1);
  t.is((await api.http().delete('v1/images/dup/one')).statusCode, 204);
  t.true(blobs().includes(sha(bytes)), 'still used by dup:two');
  t.is((await api.http().delete('v1/images/dup/two')).statusCode, 204);
  t.false(blobs().includes(sha(bytes)), 'no image refers to it any more');
});

test.serial('a wrong sha256 or an upload over the size limit is refused and leaves nothing on disk', async (t) => {
  const before = blobs();
  const wrong = await upload('bad/sha', randomBytes(1000), { sha256: '0'.repeat(64) });
  t.is(wrong.statusCode, 422);
  t.is(wrong.body.code, 'checksum_mismatch');
  const big = await upload('bad/big', randomBytes(1024 * 1024 + 1));
  t.is(big.statusCode, 413);
  t.is(big.body.code, 'payload_too_large');
  const empty = await upload('bad/empty', Buffer.alloc(0));
  t.is(empty.statusCode, 400);
  t.deepEqual(blobs(), before);
  t.deepEqual(incoming(), []);
  t.is((await api.http().get('v1/images/bad/sha')).statusCode, 404);
});

/** A chunked PUT whose sha256 comes after the body, as an HTTP trailer (what the client sends). */
function uploadWithTrailer(
  ref: string,
  bytes: Buffer,
  digest: string | undefined,
  headers: Record<string, string> = {},
): Promise<{ statusCode: number; body: { code?: string; sha256?: string } }> {
  return new Promise((resolve, reject) => {
    const request = httpRequest(`${api.url}/v1/images/${ref}?format=raw`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${api.adminToken}`, trailer: 'Paddock-Sha256', 'paddock-size': String(bytes.length), ...headers },
    });
    request.on('response', (response) => {
      let text = '';
      response.on('data', (chunk: Buffer) => (text += chunk.toString()));
      response.on('end', () => resolve({ statusCode: response.statusCode ?? 0, body: JSON.parse(text) as { code?: string; sha256?: string } }));
    });
    request.on('error', reject);
    request.write(bytes.subarray(0, 500));
    request.write(bytes.subarray(500));
    if (digest !== undefined) request.addTrailers({ 'Paddock-Sha256': digest });
    request.end();
  });
}

test.serial('a sha256 sent as a trailer after the body is checked: right is stored, wrong or missing stores nothing', async (t) => {
  const bytes = randomBytes(4000);
  const before = blobs();
  const wrong = await uploadWithTrailer('trailer/wrong', bytes, 'f'.repeat(64));
  t.is(wrong.statusCode, 422);
  t.is(wrong.body.code, 'checksum_mismatch');
  const missing = await uploadWithTrailer('trailer/missing', bytes, undefined);
  t.is(missing.statusCode, 422);
  t.is(missing.body.code, 'checksum_mismatch');
  t.deepEqual(blobs(), before, 'nothing kept');
  t.deepEqual(incoming(), []);
  const right = await uploadWithTrailer('trailer/right', bytes, sha(bytes));
  t.is(right.statusCode, 201);
  t.is(right.body.sha256, sha(bytes));
  await api.http().delete('v1/images/trailer/right');
});

test.serial('a client that checks the answer itself has its upload kept when a proxy dropped the trailer; a wrong trailer is still refused', async (t) => {
  const bytes = randomBytes(4000);
  const clientChecks = { 'paddock-sha256-dropped': 'client-checks' };
  const dropped = await uploadWithTrailer('trailer/dropped', bytes, undefined, clientChecks);
  t.is(dropped.statusCode, 201);
  t.is(dropped.body.sha256, sha(bytes), 'the answer carries the digest of the bytes stored, for the client to compare');
  await api.http().delete('v1/images/trailer/dropped');
  const wrong = await uploadWithTrailer('trailer/wrong', bytes, 'f'.repeat(64), clientChecks);
  t.is(wrong.statusCode, 422);
  t.is(wrong.body.code, 'checksum_mismatch');
});

test.serial('names that try to leave the store are refused', async (t) => {
  for (const ref of ['..%2F..%2Fetc%2Fpasswd/latest', '..%2Fetc/latest', 'ok/a..b', 'ok/%2E%2E%2Fx', 'UPPER/x', '.hidden/x']) {
    const response = await upload(ref, randomBytes(10));
    t.true([400, 404].includes(response.statusCode), `${ref}: ${response.statusCode}`);
    // Refused where the path is checked (invalid_parameter) or where the name is (invalid_name).
    if (response.statusCode === 400) t.true(['invalid_parameter', 'invalid_name'].includes(response.body.code ?? ''), `${ref}: ${response.body.code}`);
  }
  const traversal = await api.http().get('v1/images/..%2F..%2Fetc%2Fpasswd/latest/content');
  t.is(traversal.statusCode, 400);
  t.is((traversal.body as { code: string }).code, 'invalid_parameter', 'the path is refused before any name is used');
});

test.serial('an expired temporary image is collected; an image in use cannot be deleted', async (t) => {
  const bytes = randomBytes(2000);
  t.is((await upload('temp/build-7', bytes, { query: 'expires=1s' })).statusCode, 201);
  t.truthy(((await api.http().get('v1/images/temp/build-7')).body as ImageView).expiresAt);
  const deadline = Date.now() + 120_000;
  while ((await api.http().get('v1/images/temp/build-7')).statusCode === 200 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 200));
  t.is((await api.http().get('v1/images/temp/build-7')).statusCode, 404);
  t.false(blobs().includes(sha(bytes)));

  t.is((await upload('kept/v1', randomBytes(100))).statusCode, 201);
  const reservation = (await api.http().post('v1/reservations', { json: { members: [{ role: 'main', spec: 'static-host', image: 'kept:v1' }] } }))
    .body as ReservationView;
  const refused = await api.http().delete('v1/images/kept/v1');
  t.is(refused.statusCode, 409);
  t.is((refused.body as { code: string }).code, 'image_in_use');
  await api.http().delete(`v1/reservations/${reservation.id}`);
  const deadline2 = Date.now() + 120_000;
  while (((await api.http().get(`v1/reservations/${reservation.id}`)).body as ReservationView).state !== 'released' && Date.now() < deadline2) {
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  t.is((await api.http().delete('v1/images/kept/v1')).statusCode, 204);
});

test.serial("an image's access is set at upload, shown, and checked against its format", async (t) => {
  const bytes = randomBytes(2000);
  const plain = await upload('access/plain', bytes);
  t.is(plain.statusCode, 201);
  t.is((plain.body as unknown as ImageView).access, 'hook', 'hook by default');
  const cloud = await upload('access/cloud', bytes, { query: 'format=qcow2&access=cloud-init' });
  t.is(cloud.statusCode, 201);
  const shown = await api.http().get('v1/images/access/cloud');
  t.is((shown.body as ImageView).access, 'cloud-init');
  for (const [query, words] of [
    ['access=password', 'access is one of hook, cloud-init, overlay'],
    ['format=qcow2&access=overlay', 'access overlay is for boot bundles'],
    ['format=bundle&access=cloud-init', 'access cloud-init is for disk images'],
  ]) {
    const refused = await upload('access/refused', bytes, { query });
    t.is(refused.statusCode, 400, query);
    t.is((refused.body as unknown as { code: string }).code, 'invalid_request', query);
    t.true((refused.body as unknown as { message: string }).message.includes(words), query);
  }
  t.is((await api.http().get('v1/images/access/refused')).statusCode, 404, 'a refused upload stores nothing');
});
