// HTTP Range and If-Range on an image's content, through the real API: one range is a 206 with its
// Content-Range, ranges that touch are merged, ranges past the end are a 416 with `bytes */SIZE`,
// and a header that does not parse (or ranges that stay apart) gets the whole file. No header, however
// hostile, gets a 500; tokens that may not read images are refused as without a Range.
import { createHash, randomBytes } from 'node:crypto';
import test from 'ava';
import got from 'got';
import { startApi, testConfig, type TestApi } from '../helpers/api.js';

const size = 1000;
const bytes = randomBytes(size);
const sha256 = createHash('sha256').update(bytes).digest('hex');
const etag = `"${sha256}"`;
let api: TestApi;

test.before(async () => {
  api = await startApi(testConfig('agent: { enabled: false }'));
  const stored = await api.http().put('v1/images/ranged/1', { body: bytes as unknown as string, searchParams: { format: 'raw' } });
  if (stored.statusCode !== 201) throw new Error(`upload: ${JSON.stringify(stored.body)}`);
});

test.after.always(async () => {
  await api?.close();
});

function download(headers: Record<string, string>, token = api.adminToken) {
  return got.get(`${api.url}/v1/images/ranged/1/content`, {
    headers: { authorization: `Bearer ${token}`, ...headers },
    responseType: 'buffer',
    throwHttpErrors: false,
    retry: { limit: 0 },
  });
}

type Expected = 'whole' | 'unsatisfiable' | [start: number, end: number];

const cases: [range: string, expected: Expected][] = [
  ['bytes=0-99', [0, 99]],
  ['bytes=990-', [990, 999]],
  ['bytes=990-5000', [990, 999]],
  ['bytes=0-' + '9'.repeat(400), [0, 999]],
  ['bytes=-5', [995, 999]],
  ['bytes=-5000', [0, 999]],
  ['BYTES=7-7', [7, 7]],
  ['bytes= 3-4 ', [3, 4]],
  ['bytes=,0-1,', [0, 1]],
  ['bytes=0-9, 10-19', [0, 19]],
  ['bytes=5-14,0-9', [0, 14]],
  ['bytes=0-9,5000-', [0, 9]],
  [`bytes=${Array.from({ length: 1000 }, () => '0-0').join(',')}`, [0, 0]],
  ['bytes=0-9,500-509', 'whole'],
  ['bytes=5-2', 'whole'],
  ['bytes=0-1,5-2', 'whole'],
  ['bytes=', 'whole'],
  ['bytes=-', 'whole'],
  ['bytes=,', 'whole'],
  ['bytes=a-b', 'whole'],
  ['bytes=0x10-', 'whole'],
  ['bytes=1e3-', 'whole'],
  ['bytes=-1-2', 'whole'],
  ['bytes=1.5-2', 'whole'],
  ['bytes 0-5', 'whole'],
  ['items=0-5', 'whole'],
  ['bytes=\u00ff\u00fe-', 'whole'],
  ['=0-5', 'whole'],
  ['bytes=99999999999-', 'unsatisfiable'],
  ['bytes=1000-', 'unsatisfiable'],
  ['bytes=1000-1000', 'unsatisfiable'],
  ['bytes=5000-,6000-6001', 'unsatisfiable'],
  ['bytes=' + '9'.repeat(400) + '-', 'unsatisfiable'],
  ['bytes=-0', 'unsatisfiable'],
];

test('every Range gets the part it names, the whole file, or a 416; never a 500', async (t) => {
  for (const [range, expected] of cases) {
    const response = await download({ range });
    const label = `Range: ${range.slice(0, 60)}`;
    t.is(response.headers.etag, etag, label);
    if (expected === 'whole') {
      t.is(response.statusCode, 200, label);
      t.is(response.headers['content-range'], undefined, label);
      t.true(response.body.equals(bytes), label);
    } else if (expected === 'unsatisfiable') {
      t.is(response.statusCode, 416, label);
      t.is(response.headers['content-range'], `bytes */${size}`, label);
      t.is((JSON.parse(response.body.toString()) as { code: string }).code, 'range_not_satisfiable', label);
    } else {
      const [start, end] = expected;
      t.is(response.statusCode, 206, label);
      t.is(response.headers['content-range'], `bytes ${start}-${end}/${size}`, label);
      t.is(Number(response.headers['content-length']), end - start + 1, label);
      t.true(response.body.equals(bytes.subarray(start, end + 1)), label);
    }
  }
});

test('If-Range: the range only while the ETag (the sha256) matches exactly; otherwise the whole file', async (t) => {
  const part = await download({ range: 'bytes=100-', 'if-range': etag });
  t.is(part.statusCode, 206);
  t.true(part.body.equals(bytes.subarray(100)));
  for (const ifRange of [`"${'0'.repeat(64)}"`, `W/${etag}`, sha256, 'Tue, 15 Nov 1994 08:12:31 GMT', 'garbage']) {
    const response = await download({ range: 'bytes=100-', 'if-range': ifRange });
    t.is(response.statusCode, 200, `If-Range: ${ifRange}`);
    t.true(response.body.equals(bytes), `If-Range: ${ifRange}`);
  }
  // No Range: If-Range alone changes nothing. A stale If-Range never turns a 416 into an error either.
  t.is((await download({ 'if-range': etag })).statusCode, 200);
  t.is((await download({ range: 'bytes=5000-', 'if-range': '"stale"' })).statusCode, 200);
  t.is((await download({ range: 'bytes=5000-', 'if-range': etag })).statusCode, 416);
});

test('a Range opens nothing to tokens that may not read images', async (t) => {
  const runner = ((await api.http().post('v1/tokens', { json: { name: 'runner-1', role: 'runner' } })).body as { token: string }).token;
  const refused = await download({ range: 'bytes=0-9' }, runner);
  t.is(refused.statusCode, 403);
  t.false(refused.body.includes(bytes.subarray(0, 10)), 'no byte of the image');
  const anonymous = await got.get(`${api.url}/v1/images/ranged/1/content`, { headers: { range: 'bytes=0-9' }, throwHttpErrors: false, retry: { limit: 0 } });
  t.is(anonymous.statusCode, 401);
});
