// Every list route is paginated (limit, cursor; the next cursor in Paddock-Next-Cursor and Link):
// walking the pages while items are added shows every item that was there at the start exactly
// once, and never one twice. The client library follows the cursors, so it still lists everything.
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import test, { type ExecutionContext } from 'ava';
import got from 'got';
import type { ReservationView } from '../../protocol/api.js';
import { Http } from '../../client/http.js';
import { Paddock } from '../../client/index.js';
import { jobRepository, localRepositories, unprovisionedMachines } from '../helpers/lab-config.js';
import { startApi, testConfig, type TestApi } from '../helpers/api.js';

let api: TestApi;
let scratch: string;
let repo: string;

test.before(async () => {
  scratch = mkdtempSync(path.join(os.tmpdir(), 'paddock-page-test-'));
  repo = jobRepository(scratch);
  api = await startApi(
    testConfig(`agent: { enabled: false }\nagents: { heartbeatTimeout: 1d }\n${localRepositories(scratch)}\nmachines:\n${unprovisionedMachines(23)}\n`),
  );
});

test.after.always(async () => {
  await api?.close();
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

const http = got.extend({ throwHttpErrors: false, retry: { limit: 0 } });

/**
 * Walks a list route `limit` items at a time, calling `add` after every page; returns every item's
 * identity in the order seen and checks the Link header agrees with the cursor.
 */
async function walk(
  t: ExecutionContext,
  route: string,
  identity: (item: Record<string, unknown>) => string,
  limit: number,
  add: () => Promise<void> = async () => undefined,
  query: Record<string, string> = {},
): Promise<string[]> {
  const seen: string[] = [];
  let cursor: string | undefined;
  for (let pages = 0; pages < 200; pages++) {
    const response = await http.get(`${api.url}/${route}`, {
      headers: { authorization: `Bearer ${api.adminToken}` },
      searchParams: { ...query, limit, ...(cursor ? { cursor } : {}) },
    });
    t.is(response.statusCode, 200, response.body);
    const items = JSON.parse(response.body) as Record<string, unknown>[];
    t.true(items.length <= limit);
    seen.push(...items.map(identity));
    const next = response.headers['paddock-next-cursor'] as string | undefined;
    if (!next) {
      t.is(response.headers.link, undefined);
      return seen;
    }
    t.true(String(response.headers.link).includes(`cursor=${next}`) && String(response.headers.link).endsWith('rel="next"'));
    cursor = next;
    await add();
  }
  throw new Error(`${route}: more than 200 pages`);
}

/** Every item present at the start is seen exactly once, and nothing twice. */
function assertOnce(t: ExecutionContext, seen: string[], before: string[]): void {
  t.is(new Set(seen).size, seen.length, `no item twice: ${seen.join(' ')}`);
  for (const item of before) t.true(seen.includes(item), `${item} was listed`);
}

const id = (item: Record<string, unknown>) => String(item.id);
const reserve = async (count = 1) =>
  (await api.http().post('v1/reservations', { json: { members: [{ role: 'main', spec: 'box', count }], lease: 600 } })).body as ReservationView;

test.serial('reservations, live and ended, and their queue positions: each once while more are made', async (t) => {
  const holder = await reserve(23);
  const queued: string[] = [];
  for (let index = 0; index < 17; index++) queued.push((await reserve()).id);
  const before = [holder.id, ...queued];
  const seen = await walk(t, 'v1/reservations', id, 4, async () => void (await reserve()));
  assertOnce(t, seen, before);
  t.deepEqual(seen.slice(0, before.length), before, 'oldest first');

  // The positions on a page are those each reservation shows alone.
  const page = (await api.http().get('v1/reservations', { searchParams: { limit: 10, cursor: Buffer.from(JSON.stringify([0, ''])).toString('base64url') } }))
    .body as ReservationView[];
  for (const view of page.filter((each) => each.state === 'queued')) {
    t.is(view.queuePosition, ((await api.http().get(`v1/reservations/${view.id}`)).body as ReservationView).queuePosition);
  }
  t.is(page[1].queuePosition, 1);

  for (const reservation of queued.slice(0, 9)) await api.http().delete(`v1/reservations/${reservation}`);
  const all = await walk(t, 'v1/reservations', id, 1000, undefined, { ended: '1' });
  const ended = await walk(t, 'v1/reservations', id, 3, async () => void (await api.http().delete(`v1/reservations/${(await reserve()).id}`)), { ended: '1' });
  assertOnce(t, ended, all);
  t.deepEqual(ended.slice(0, all.length), all, 'newest first, the same order page by page');

  const events = await walk(t, `v1/reservations/${holder.id}/events`, id, 1);
  t.deepEqual(
    events,
    ((await api.http().get(`v1/reservations/${holder.id}/events`)).body as { id: number }[]).map((event) => String(event.id)),
  );
  t.true(events.length > 20, 'the holder has an event per machine');
});

test.serial('machines, tokens, images, jobs, runs and runners: each once while more are made', async (t) => {
  const machineNames = await walk(t, 'v1/machines', (item) => String(item.name), 5);
  t.deepEqual(
    machineNames,
    Array.from({ length: 23 }, (_, index) => `m${String(index).padStart(2, '0')}`),
  );

  let made = 0;
  const token = async () => void (await api.http().post('v1/tokens', { json: { name: `user-${String(made++).padStart(3, '0')}` } }));
  for (let index = 0; index < 9; index++) await token();
  const tokensBefore = ((await api.http().get('v1/tokens', { searchParams: { limit: 1000 } })).body as { name: string }[]).map((each) => each.name);
  assertOnce(t, await walk(t, 'v1/tokens', (item) => String(item.name), 2, token), tokensBefore);

  const upload = async () => {
    const bytes = Buffer.from(`image ${made++}`);
    await api.http().put(`v1/images/img-${made}/v1`, {
      body: bytes.toString(),
      searchParams: { format: 'raw' },
      headers: { 'paddock-sha256': createHash('sha256').update(bytes).digest('hex') },
    });
  };
  for (let index = 0; index < 7; index++) await upload();
  const imagesBefore = ((await api.http().get('v1/images')).body as { ref: string }[]).map((image) => image.ref);
  t.is(imagesBefore.length, 7);
  assertOnce(t, await walk(t, 'v1/images', (item) => String(item.ref), 2, upload), imagesBefore);

  const job = async () => void (await api.http().post('v1/jobs', { json: { name: `job-${made++}`, repository: repo, script: 'ci.sh' } }));
  for (let index = 0; index < 6; index++) await job();
  const jobsBefore = ((await api.http().get('v1/jobs')).body as { id: string }[]).map(id);
  assertOnce(t, await walk(t, 'v1/jobs', id, 2, job), jobsBefore);

  const first = jobsBefore[0];
  const runFirst = async () => void (await api.http().post(`v1/jobs/${first}/runs`, { json: {} }));
  for (let index = 0; index < 7; index++) await runFirst();
  const runsBefore = ((await api.http().get('v1/runs')).body as { id: string }[]).map(id);
  t.is(runsBefore.length, 7);
  assertOnce(t, await walk(t, 'v1/runs', id, 2, runFirst), runsBefore);

  for (let index = 0; index < 5; index++) {
    await api.http().post('v1/runner/claim', { json: { runner: `runner-${index}`, slots: 0, wait: 0 } });
  }
  t.deepEqual(await walk(t, 'v1/runners', (item) => String(item.name), 2), ['runner-0', 'runner-1', 'runner-2', 'runner-3', 'runner-4']);
});

test.serial('a bad limit or a cursor the list did not make is 400 and lists nothing', async (t) => {
  for (const limit of ['0', '1001', '-1', '1.5', 'ten', '1e3']) {
    const response = await api.http().get('v1/machines', { searchParams: { limit } });
    t.is(response.statusCode, 400, limit);
    t.is((response.body as { code: string }).code, 'invalid_request');
  }
  const cursors = [
    '%%%',
    Buffer.from('{"a":1}').toString('base64url'),
    Buffer.from('[1]').toString('base64url'),
    Buffer.from('[null,"x"]').toString('base64url'),
    'x'.repeat(3000),
  ];
  for (const cursor of cursors) {
    const response = await api.http().get('v1/reservations', { searchParams: { cursor } });
    t.is(response.statusCode, 400, cursor.slice(0, 20));
    t.is((response.body as { code: string }).code, 'invalid_request');
  }
});

test.serial('the client library and its lists follow the cursors to the last page', async (t) => {
  const pages = new Http({ url: api.url, token: api.adminToken });
  t.is((await pages.getAll('v1/machines', { limit: 2 })).items.length, 23);
  const paddock = new Paddock({ url: api.url, token: api.adminToken });
  const listed = await paddock.list({ ended: true });
  const walked = await walk(t, 'v1/reservations', id, 7, undefined, { ended: '1' });
  t.deepEqual(
    listed.map((view) => view.id),
    walked,
  );
  t.is((await paddock.machines()).length, 23);
  t.true((await paddock.tokens()).length > 10);
});
