// Quotas, driven the way a hostile user would: many requests at once past each limit. The user over
// a limit gets 429 quota_exceeded with the limit in details, keeps everything made before, and
// other users go on reserving, uploading and running as before.
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import test from 'ava';
import type { ReservationView, RunView } from '../../protocol/api.js';
import { jobRepository, localRepositories, unprovisionedMachines } from '../helpers/lab-config.js';
import { startApi, testConfig, type JsonClient, type JsonResponse, type TestApi } from '../helpers/api.js';

let api: TestApi;
let scratch: string;
let repo: string;
const tokens: Record<string, string> = {};

test.before(async () => {
  scratch = mkdtempSync(path.join(os.tmpdir(), 'paddock-quota-test-'));
  repo = jobRepository(scratch);
  api = await startApi(
    testConfig(`
agent: { enabled: false }
# No agent serves these machines: they must not go offline while the tests run.
agents: { heartbeatTimeout: 1d }
${localRepositories(scratch)}
quotas:
  default: { reservations: 3, queued: 2, machines: 4, imageBytes: 100KiB, uploads: 1, runs: 2 }
  tokens: { carol: { reservations: 10 } }
machines:
${unprovisionedMachines(6, 2)}
`),
  );
  for (const name of ['mallory', 'alice', 'carol', 'dave']) {
    tokens[name] = ((await api.http().post('v1/tokens', { json: { name } })).body as { token: string }).token;
  }
  tokens.runner = ((await api.http().post('v1/tokens', { json: { name: 'runner-1', role: 'runner' } })).body as { token: string }).token;
});

test.after.always(async () => {
  await api?.close();
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

const as = (name: string): JsonClient => api.http(tokens[name]);
const one = { members: [{ role: 'main', spec: 'box' }], lease: 600 };
const ids = (responses: JsonResponse[]) => responses.filter((response) => response.statusCode === 201).map((response) => (response.body as ReservationView).id);
const listed = async (name: string) => ((await as(name).get('v1/reservations')).body as ReservationView[]).map((view) => `${view.id}:${view.state}`).sort();

function assertQuota(t: import('ava').ExecutionContext, response: JsonResponse, quota: string, limit: number): void {
  t.is(response.statusCode, 429, JSON.stringify(response.body));
  const body = response.body as { code: string; details: { quota: string; limit: number; current: number; requested: number } };
  t.is(body.code, 'quota_exceeded');
  t.is(body.details.quota, quota);
  t.is(body.details.limit, limit);
  t.true(body.details.current + body.details.requested > limit);
}

async function releaseAll(): Promise<void> {
  for (const view of (await api.http().get('v1/reservations', { searchParams: { all: 1 } })).body as ReservationView[]) {
    await api.http().delete(`v1/reservations/${view.id}`);
  }
}

test.serial('live reservations and machines: a flood past the limit gets 429, keeps what it had, and others reserve', async (t) => {
  const tooBig = await as('mallory').post('v1/reservations', { json: { members: [{ role: 'main', spec: 'box', count: 5 }] } });
  assertQuota(t, tooBig, 'machines', 4);

  const flood = await Promise.all(Array.from({ length: 12 }, () => as('mallory').post('v1/reservations', { json: one })));
  const accepted = ids(flood);
  t.is(accepted.length, 3, 'exactly the limit of live reservations, even sent all at once');
  for (const response of flood.filter((response) => response.statusCode !== 201)) assertQuota(t, response, 'reservations', 3);
  const before = await listed('mallory');

  const alice = await as('alice').post('v1/reservations', { json: one });
  t.is(alice.statusCode, 201, JSON.stringify(alice.body));
  t.is((alice.body as ReservationView).state, 'allocated', 'another user is granted at once');
  t.deepEqual(await listed('mallory'), before, "nothing of mallory's was lost or changed");
  t.deepEqual(
    before.map((entry) => entry.split(':')[1]),
    ['allocated', 'allocated', 'allocated'],
  );

  await as('mallory').delete(`v1/reservations/${accepted[0]}`);
  const again = await as('mallory').post('v1/reservations', { json: one });
  t.is(again.statusCode, 201, 'a released reservation no longer counts');
  await releaseAll();
});

test.serial('queued requests: past the limit the queue refuses, other users still queue, and the queue drains in order', async (t) => {
  const hold = await api.http().post('v1/reservations', { json: { members: [{ role: 'all', spec: 'box', count: 6 }] } });
  t.is((hold.body as ReservationView).state, 'allocated', 'the admin (exempt) holds every machine');

  const flood = await Promise.all(Array.from({ length: 8 }, () => as('carol').post('v1/reservations', { json: one })));
  const queued = ids(flood);
  t.is(queued.length, 2);
  for (const response of flood.filter((response) => response.statusCode !== 201)) assertQuota(t, response, 'queued', 2);

  const alice = await as('alice').post('v1/reservations', { json: one });
  t.is(alice.statusCode, 201);
  t.is((alice.body as ReservationView).state, 'queued');

  await api.http().delete(`v1/reservations/${(hold.body as ReservationView).id}`);
  t.deepEqual(await listed('carol'), queued.map((id) => `${id}:allocated`).sort(), "carol's queued requests were all kept and granted");
  t.deepEqual(await listed('alice'), [`${(alice.body as ReservationView).id}:allocated`]);
  await releaseAll();
});

function upload(token: string, ref: string, bytes: Buffer): Promise<JsonResponse> {
  const [name, tag] = ref.split(':');
  return put(token, `/v1/images/${name}/${tag}?format=raw`, bytes);
}

/** A PUT whose body is sent in two halves, the second only when `release` resolves; chunked: no size up front. */
function put(token: string, pathname: string, bytes: Buffer, options: { release?: Promise<void>; chunked?: boolean } = {}): Promise<JsonResponse> {
  const url = new URL(api.url);
  const release = options.release ?? Promise.resolve();
  const size = options.chunked ? {} : { 'content-length': bytes.length };
  return new Promise((resolve, reject) => {
    const request = http.request(
      {
        host: url.hostname,
        port: url.port,
        method: 'PUT',
        path: pathname,
        headers: { authorization: `Bearer ${token}`, ...size, 'paddock-sha256': createHash('sha256').update(bytes).digest('hex') },
      },
      (response) => {
        const chunks: Buffer[] = [];
        response.on('data', (chunk: Buffer) => chunks.push(chunk));
        response.on('end', () => resolve({ statusCode: response.statusCode ?? 0, body: JSON.parse(Buffer.concat(chunks).toString() || 'null') }));
      },
    );
    request.on('error', reject);
    request.write(bytes.subarray(0, bytes.length >> 1));
    void release.then(() => request.end(bytes.subarray(bytes.length >> 1)));
  });
}

test.serial('image bytes and uploads at once: over either limit is 429, the stored image stays whole, another user uploads', async (t) => {
  const first = randomBytes(60 * 1024);
  t.is((await upload(tokens.mallory, 'big:one', first)).statusCode, 201);
  const second = await upload(tokens.mallory, 'big:two', randomBytes(60 * 1024));
  assertQuota(t, second, 'imageBytes', 100 * 1024);
  // Without a size up front the bytes are counted when they are in: refused just the same.
  const chunked = await put(tokens.mallory, '/v1/images/big/three?format=raw', randomBytes(60 * 1024), { chunked: true });
  assertQuota(t, chunked, 'imageBytes', 100 * 1024);
  const replaced = await upload(tokens.mallory, 'big:one', randomBytes(70 * 1024));
  t.is(replaced.statusCode, 201, "replacing one's own image counts only the new bytes");

  let finish!: () => void;
  const slow = put(tokens.dave, '/v1/images/slow/one?format=raw', randomBytes(8 * 1024), { release: new Promise((resolve) => (finish = resolve)) });
  await new Promise((resolve) => setTimeout(resolve, 300));
  const parallel = await upload(tokens.dave, 'fast:one', randomBytes(1024));
  assertQuota(t, parallel, 'uploads', 1);
  finish();
  t.is((await slow).statusCode, 201, 'the upload in progress finished');

  t.is((await upload(tokens.alice, 'hers:one', randomBytes(60 * 1024))).statusCode, 201, 'another user uploads');
  const images = (await api.http().get('v1/images', { searchParams: { origin: 'paddock' } })).body as { ref: string; size: number; owner: string }[];
  t.deepEqual(images.map((image) => `${image.ref}:${image.owner}:${image.size}`).sort(), [
    'big:one:mallory:71680',
    'hers:one:alice:61440',
    'slow:one:dave:8192',
  ]);
});

test.serial('queued runs: past the limit 429; a run token counts against its job owner', async (t) => {
  t.is((await as('dave').post('v1/jobs', { json: { name: 'ci', repository: repo, script: 'ci.sh' } })).statusCode, 201);
  const runs = await Promise.all(Array.from({ length: 6 }, () => as('dave').post('v1/jobs/ci/runs', { json: {} })));
  t.is(runs.filter((response) => response.statusCode === 201).length, 2);
  for (const response of runs.filter((response) => response.statusCode !== 201)) assertQuota(t, response, 'runs', 2);
  t.is((await as('alice').post('v1/jobs', { json: { name: 'ci', repository: repo, script: 'ci.sh' } })).statusCode, 201);
  t.is((await as('alice').post('v1/jobs/ci/runs', { json: {} })).statusCode, 201, 'another user runs');

  // A runner host takes dave's runs; each run's token reserves as dave.
  const claimed = await api.http(tokens.runner).post('v1/runner/claim', { json: { runner: 'runner-1', slots: 3, wait: 0 } });
  const tasks = (claimed.body as { runs: { id: string; token: string }[] }).runs;
  const daves = new Set(((await as('dave').get('v1/runs')).body as RunView[]).map((run) => run.id));
  const runTokens = tasks.filter((task) => daves.has(task.id)).map((task) => task.token);
  t.is(runTokens.length, 2);
  t.is((await as('dave').post('v1/reservations', { json: one })).statusCode, 201);
  t.is((await api.http(runTokens[0]).post('v1/reservations', { json: one })).statusCode, 201);
  t.is((await api.http(runTokens[1]).post('v1/reservations', { json: one })).statusCode, 201);
  assertQuota(t, await api.http(runTokens[1]).post('v1/reservations', { json: one }), 'reservations', 3);
  assertQuota(t, await as('dave').post('v1/reservations', { json: one }), 'reservations', 3);
  t.is((await as('alice').post('v1/reservations', { json: one })).statusCode, 201, 'another user reserves');
  await releaseAll();
});
