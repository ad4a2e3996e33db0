// Lab hosts send console logs to the API in chunks at byte offsets (POST /v1/agent/consoles/ID/
// MACHINE). Played over HTTP with agent tokens: a chunk sent twice is stored once, a gap is refused
// with the size to resume from, a log stops at its cap, and only the agent of the machine's own lab
// host may write it; the owner reads what arrived with `paddock console`.
import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import test from 'ava';
import type { ReservationView } from '../../protocol/api.js';
import { startApi, testConfig } from '../helpers/api.js';

const cap = 64 * 1024;
const yaml = `
agent: { enabled: false }
agents: { heartbeatTimeout: 1d }
consoles: { maxLogSize: ${cap} }
machines:
  - { name: m1, kind: static, labHost: lab-a, labels: { type: a }, settings: { address: 127.0.9.1, user: ci, adminKey: /nonexistent } }
  - { name: m2, kind: static, labHost: lab-b, labels: { type: b }, settings: { address: 127.0.9.2, user: ci, adminKey: /nonexistent } }
`;

test('console chunks: stored once at their offset, gaps refused, capped, and only from the lab host of the machine', async (t) => {
  const api = await startApi(testConfig(yaml));
  t.teardown(() => api.close());
  const admin = api.http();
  const token = async (name: string, role: string) => ((await admin.post('v1/tokens', { json: { name, role } })).body as { token: string }).token;
  const alice = api.http(await token('alice', 'user'));
  const labA = api.http(await token('lab-a', 'agent'));
  const labB = api.http(await token('lab-b', 'agent'));
  const created = (await alice.post('v1/reservations', { json: { members: [{ role: 'x', spec: 'type=a' }], lease: '10m' } })).body as ReservationView;
  t.is(created.allocations[0]?.machine, 'm1', JSON.stringify(created));
  const chunk = (http: typeof labA, offset: number | string, body: string, machine = 'm1', id = created.id) =>
    http.post(`v1/agent/consoles/${id}/${machine}`, { searchParams: { offset }, body, headers: { 'content-type': 'application/octet-stream' } });

  t.deepEqual((await chunk(labA, 0, 'U-Boot 2023\n')).body, { size: 12, capped: false });
  t.deepEqual((await chunk(labA, 0, 'U-Boot 2023\n')).body, { size: 12, capped: false }, 'the same chunk again is not stored twice');
  t.deepEqual((await chunk(labA, 7, '2023\nStarting kernel\n')).body, { size: 28, capped: false }, 'an overlap keeps only the new bytes');
  const ahead = await chunk(labA, 40, 'lost?\n');
  t.is(ahead.statusCode, 409);
  t.like(ahead.body, { code: 'offset_ahead', details: { size: 28 } });
  t.deepEqual((await chunk(labA, 28, '')).body, { size: 28, capped: false }, 'an empty chunk asks where to go on from');

  // Only the machine's own lab host writes its log.
  const other = await chunk(labB, 28, 'forged\n');
  t.is(other.statusCode, 403);
  t.like(other.body, { code: 'not_your_task' });
  t.is((await chunk(alice, 28, 'forged\n')).statusCode, 403, "a user's token");
  t.is((await chunk(api.http(null), 28, 'forged\n')).statusCode, 401, 'no token');
  t.is((await chunk(labA, 28, 'x', 'm2')).statusCode, 404, 'a machine the reservation does not hold');
  t.is((await chunk(labA, 28, 'x', 'm1', 'r-000000000000')).statusCode, 404, 'no such reservation');
  t.is((await chunk(labA, 28, 'x', '..%2F..%2Fadmin-token')).statusCode, 400, 'a path for a machine name');
  for (const offset of ['-1', '1e3', '12345678901234567890']) t.is((await chunk(labA, offset, 'x')).statusCode, 400, `offset ${offset}`);
  const huge = await chunk(labA, 28, 'x'.repeat(1024 * 1024 + 1));
  t.is(huge.statusCode, 413, 'a chunk over 1 MiB');

  const owner = await alice.get(`v1/reservations/${created.id}/console`, { searchParams: { machine: 'm1' } });
  t.is(owner.statusCode, 200);
  t.is(owner.body, 'U-Boot 2023\nStarting kernel\n', 'the owner reads what the lab host sent, once, in order');

  // A lab host that sends past the cap: the API keeps the cap and says so.
  const flood = await chunk(labA, 28, 'y'.repeat(cap));
  t.deepEqual(flood.body, { size: cap, capped: true });
  const file = path.join(api.dataDir, 'consoles', created.id, 'm1.log');
  t.is(statSync(file).size, cap);
  t.deepEqual((await chunk(labA, cap, 'more\n')).body, { size: cap, capped: true }, 'nothing past the cap');
  t.true(readFileSync(file, 'utf8').startsWith('U-Boot 2023\nStarting kernel\nyyy'));
});
