// Identical bytes uploaded, deleted, replaced and expiring under several tags at once, as users of
// one lab do without knowing of each other: afterwards every listed image has its file and
// downloads whole, and no file is left that no image names.
import { createHash } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { Agent } from 'node:http';
import path from 'node:path';
import test, { type ExecutionContext } from 'ava';
import got from 'got';
import type { ImageView } from '../../protocol/api.js';
import { ImageCache } from '../../lab-host/image-cache.js';
import { startApi, testConfig, type TestApi } from '../helpers/api.js';

let api: TestApi;

test.before(async () => {
  api = await startApi(testConfig('images: { maxSize: 1MiB, collectInterval: 0.1 }\nagent: { enabled: false }'));
});

test.after.always(async () => {
  await api?.close();
});

const sha = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');
// A connection per request: a kept-alive socket the server closes as it is reused is a reset
// no retry may hide, and not what this test is about.
const http = () =>
  got.extend({
    prefixUrl: api.url,
    headers: { authorization: `Bearer ${api.adminToken}` },
    throwHttpErrors: false,
    retry: { limit: 0 },
    agent: { http: new Agent({ keepAlive: false }) },
  });
/** Rounds per batch; four batches (each its own test, so each ends inside ava's timeout). */
const rounds = Number(process.env.PADDOCK_IMAGE_ROUNDS ?? 500);

/**
 * Plays `rounds` rounds, 8 at a time. A round stores some bytes under one tag, then at once stores
 * the same bytes under a second tag, deletes the first, stores a copy that expires a second later (the
 * collector deletes it whenever it runs) and, in two rounds of three, stores other bytes under the
 * first or the second tag. Each round has bytes of its own, so a file deleted under a record is not brought back by a
 * later round.
 */
async function playRounds(batch: number): Promise<Map<string, number>> {
  const client = http();
  const put = (ref: string, body: Buffer, query = '') => client.put(`v1/images/${ref}?format=raw${query}`, { body });
  const statuses = new Map<string, number>();
  const count = (what: string, status: number) => statuses.set(`${what} ${status}`, (statuses.get(`${what} ${status}`) ?? 0) + 1);
  const lanes = 8;
  const lane = async (first: number) => {
    for (let round = first; round < rounds; round += lanes) {
      const name = `b${batch}-r${round}`;
      const bytes = Buffer.from(`the bytes of ${name}, uploaded by everyone\n`);
      count('put', (await put(`${name}/a`, bytes)).statusCode);
      const operations: [string, Promise<{ statusCode: number }>][] = [
        ['put', put(`${name}/b`, bytes)],
        ['delete', client.delete(`v1/images/${name}/a`)],
        ['put', put(`${name}/expiring`, bytes, '&expires=1s')],
        // One round in three replaces the deleted tag with other bytes, one in three races the second tag's upload with other bytes.
        ...(round % 3 === 2
          ? []
          : [['put', put(`${name}/${round % 3 === 0 ? 'a' : 'b'}`, Buffer.from(`other bytes for ${name}\n`))] as [string, Promise<{ statusCode: number }>]]),
      ];
      for (const [what, answer] of operations) count(what, (await answer).statusCode);
    }
  };
  await Promise.all(Array.from({ length: lanes }, (_, first) => lane(first)));
  return statuses;
}

/** Every listed image downloads and matches its sha256; the files on disk are exactly the listed digests. */
async function checkStore(t: ExecutionContext): Promise<void> {
  // The collector runs on its own: wait until it has taken every expired image, then judge the store.
  const client = http();
  // Every page of the list, as a client that wants them all follows Paddock-Next-Cursor.
  const listing = async () => {
    const images: ImageView[] = [];
    for (let cursor: string | undefined, first = true; first || cursor; first = false) {
      const page = await client.get('v1/images', { searchParams: { origin: 'paddock', limit: 1000, ...(cursor ? { cursor } : {}) } });
      images.push(...(JSON.parse(page.body) as ImageView[]));
      cursor = page.headers['paddock-next-cursor'] as string | undefined;
    }
    return images;
  };
  const blobFiles = () => readdirSync(path.join(api.dataDir, 'images', 'blobs', 'sha256')).sort();
  const digests = (images: ImageView[]) => [...new Set(images.map((image) => image.sha256))].sort();
  let listed = await listing();
  // A record and its file go one after the other: look again until the collector is between two.
  const settled = () => listed.every((image) => image.expiresAt === undefined) && JSON.stringify(blobFiles()) === JSON.stringify(digests(listed));
  for (let tries = 0; !settled() && tries < 300; tries++) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    listed = await listing();
  }
  t.deepEqual(
    listed.filter((image) => image.expiresAt !== undefined).map((image) => image.ref),
    [],
    'the expired images were collected',
  );
  t.true(listed.length > 0, 'some images stay');
  for (const image of listed) {
    const content = await client.get(`v1/images/${image.name}/${image.tag}/content`, { responseType: 'buffer' });
    t.is(content.statusCode, 200, `${image.ref} downloads`);
    t.is(sha(content.body), image.sha256, `${image.ref} matches its sha256`);
  }
  t.deepEqual(blobFiles(), digests(listed), 'no file without an image, no image without a file');
  // The agent's view (what its sweeps keep in a cloud) is every page of the list, not the first.
  const agentView = await new ImageCache(client.extend({ throwHttpErrors: true }), api.dataDir).stored();
  t.deepEqual([...agentView].sort(), digests(listed), "the agent's list of stored images is whole");
  t.deepEqual(readdirSync(path.join(api.dataDir, 'images', 'incoming')), [], 'no partial upload left');
}

for (const batch of [1, 2, 3, 4]) {
  test.serial(
    `concurrent upload, delete, replace and expiry of identical bytes, batch ${batch} of ${rounds} rounds: every listed image stays whole`,
    async (t) => {
      const statuses = await playRounds(batch);
      t.log([...statuses].map(([key, value]) => `${key}: ${value}`).join(', '));
      const unexpected = [...statuses.keys()].filter((key) => !/^put 201$|^delete (204|404)$/.test(key));
      t.deepEqual(unexpected, [], 'only stored, deleted or already gone');
      t.true((statuses.get('delete 204') ?? 0) > rounds / 2, 'the deletes really raced the uploads');
      await checkStore(t);
    },
  );
}
