// Hostile input on every route, driven from the route table (/v1/openapi.json) so a new route is
// fuzzed without a change here: NUL, control characters, 1e308, negative and huge numbers, long and
// odd Unicode, wrong types, in every body field, path and query parameter. No answer may be 5xx,
// and afterwards a normal user's reserve, ready and release work and the database matches the API.
// The cases come from a seeded generator: a failure prints its seed (PADDOCK_FUZZ_SEED replays it).
import test from 'ava';
import got from 'got';
import type { MachineView, ReservationView } from '../../protocol/api.js';
import { textMarker } from '../../api/fields.js';
import { startApi, staticMachinesYaml, testConfig } from '../helpers/api.js';
import { startSshd } from '../helpers/sshd.js';
import { openStoredData } from '../helpers/database.js';

const seed = Number(process.env.PADDOCK_FUZZ_SEED ?? Date.now() % 1_000_000);
const rounds = 80;

function random(state: number) {
  return () => {
    state = (state * 1103515245 + 12345) % 2147483648;
    return state / 2147483648;
  };
}

const hostileStrings = [
  '\u0000',
  'a\u0000b',
  'r-\u0000',
  '\u001b[31mred',
  'line\nbreak',
  'tab\there',
  '\r\n',
  '\u007f',
  '\u0085',
  '\u009b',
  '\ud800',
  'x\udc00y',
  '\u202etxt',
  '🙂'.repeat(3000),
  'é'.repeat(70_000),
  '../../../../etc/passwd',
  '..',
  '%00',
  '%2e%2e%2f',
  '1e13s',
  '1e308',
  '-1',
  '',
  ' ',
  "'; DROP TABLE reservations; --",
  '"',
  '\\',
  '${PATH}',
  '$(id)',
  'ａｂｃ',
  '\ufeff',
  'x'.repeat(100_001),
];
const hostileValues: unknown[] = [
  ...hostileStrings,
  1e308,
  -1e308,
  1e13,
  -1,
  0,
  2 ** 53,
  -(2 ** 63),
  0.5,
  Number.MAX_SAFE_INTEGER,
  null,
  true,
  false,
  [],
  {},
  [null],
  { a: '\u0000' },
  ['\u0000'],
  Array.from({ length: 2000 }, () => 1),
];

interface Operation {
  parameters?: { name: string; in: 'path' | 'query' }[];
  requestBody?: { content: { 'application/json': { schema: JsonSchema } } };
}
interface JsonSchema {
  type?: string;
  properties?: Record<string, JsonSchema>;
  items?: JsonSchema;
  anyOf?: JsonSchema[];
  oneOf?: JsonSchema[];
  enum?: unknown[];
  const?: unknown;
  additionalProperties?: JsonSchema | boolean;
  propertyNames?: JsonSchema;
  [key: string]: unknown;
}

/** A body with every property hostile, or one property hostile among plausible ones. */
function hostileBody(schema: JsonSchema, pick: () => number, depth = 0): unknown {
  const any = () => hostileValues[Math.floor(pick() * hostileValues.length)];
  const variants = schema.anyOf ?? schema.oneOf;
  if (variants) return hostileBody(variants[Math.floor(pick() * variants.length)], pick, depth);
  if (schema.type === 'object' && schema.properties && depth < 3) {
    const body: Record<string, unknown> = {};
    for (const [name, property] of Object.entries(schema.properties)) body[name] = pick() < 0.5 ? any() : hostileBody(property, pick, depth + 1);
    if (pick() < 0.1) body['\u0000unknown'] = any();
    return body;
  }
  if (schema.type === 'array' && schema.items && depth < 3)
    return Array.from({ length: 1 + Math.floor(pick() * 3) }, () => hostileBody(schema.items!, pick, depth + 1));
  return any();
}

/** Every string a request body takes must come from api/fields.ts (text or machineText). */
function unmarkedStrings(schema: JsonSchema, at: string): string[] {
  const found: string[] = [];
  const visit = (node: JsonSchema | boolean | undefined, where: string) => {
    if (!node || typeof node !== 'object') return;
    if (node.type === 'string' && node.enum === undefined && node.const === undefined && node[textMarker] === undefined) found.push(where);
    for (const [name, property] of Object.entries(node.properties ?? {})) visit(property, `${where}.${name}`);
    for (const variant of [...(node.anyOf ?? []), ...(node.oneOf ?? [])]) visit(variant, where);
    visit(node.items, `${where}[]`);
    visit(node.additionalProperties, `${where}{}`);
    visit(node.propertyNames, `${where}{key}`);
  };
  visit(schema, at);
  return found;
}

test('every string field of every request body is checked for control characters (built by api/fields.ts)', async (t) => {
  const api = await startApi(testConfig('agent: { enabled: false }\nmachines: []\n'));
  t.teardown(() => api.close());
  const document = (await api.http().get('v1/openapi.json')).body as { paths: Record<string, Record<string, Operation>> };
  const bodies = Object.entries(document.paths).flatMap(([route, methods]) =>
    Object.entries(methods).flatMap(([method, operation]) =>
      operation.requestBody ? [[`${method} ${route}`, operation.requestBody.content['application/json'].schema] as const] : [],
    ),
  );
  t.true(bodies.length >= 10, 'the routes with bodies are found');
  t.deepEqual(
    bodies.flatMap(([route, schema]) => unmarkedStrings(schema, route)),
    [],
  );
});

test('thousands of hostile requests on every route: no 5xx; then a normal user works and the database matches', async (t) => {
  t.timeout(600_000);
  t.log(`seed ${seed} (PADDOCK_FUZZ_SEED=${seed} replays it)`);
  const host = await startSshd();
  t.teardown(() => host.stop());
  const api = await startApi(
    testConfig(staticMachinesYaml([{ name: 'h1', port: host.port, adminKeyPath: host.adminKey.path, authorizedKeysFile: host.authorizedKeysFile }])),
  );
  t.teardown(() => api.close());
  const mallory = ((await api.http().post('v1/tokens', { json: { name: 'mallory' } })).body as { token: string }).token;
  const document = (await api.http().get('v1/openapi.json')).body as { paths: Record<string, Record<string, Operation>> };
  const operations = Object.entries(document.paths).flatMap(([route, methods]) =>
    Object.entries(methods).map(([method, operation]) => ({ route, method, operation })),
  );
  t.true(operations.length >= 30, `${operations.length} operations`);

  const pick = random(seed);
  const anyString = () => hostileStrings[Math.floor(pick() * hostileStrings.length)];
  // A lone surrogate has no UTF-8: in a URL it goes as bytes that are not UTF-8 either.
  const encode = (value: string) => {
    try {
      return encodeURIComponent(value);
    } catch {
      return '%ED%A0%80%FF';
    }
  };
  const cases: { method: string; url: string; body?: string; token: string }[] = [];
  for (let round = 0; round < rounds; round++) {
    for (const { route, method, operation } of operations) {
      const url = route.replace(/\{([A-Za-z]+)\}/g, () => encode(pick() < 0.2 ? 'r-000000000000' : anyString()));
      const query = (operation.parameters ?? [])
        .filter((parameter) => parameter.in === 'query' && pick() < 0.7)
        .map((parameter) => `${parameter.name}=${encode(parameter.name === 'timeout' ? String(Math.floor(pick() * 3)) : anyString())}`);
      if (pick() < 0.1) query.push(`${encode(anyString())}=1`);
      const schema = operation.requestBody?.content['application/json'].schema;
      const stray = method !== 'get' && pick() < 0.2 ? JSON.stringify(hostileValues[Math.floor(pick() * hostileValues.length)]) : undefined;
      const body = schema ? JSON.stringify(hostileBody(schema, pick)) : stray;
      cases.push({
        method,
        url: `${url.slice(1)}${query.length > 0 ? `?${query.join('&')}` : ''}`,
        ...(body === undefined ? {} : { body }),
        token: pick() < 0.5 ? mallory : api.adminToken,
      });
    }
  }
  t.true(cases.length >= 2000, `${cases.length} cases`);

  const failures: string[] = [];
  const statuses = new Map<number, number>();
  let next = 0;
  const worker = async () => {
    while (next < cases.length) {
      const item = cases[next++];
      const response = await got(`${api.url}/${item.url}`, {
        method: item.method.toUpperCase() as 'GET',
        headers: { authorization: `Bearer ${item.token}`, ...(item.body === undefined ? {} : { 'content-type': 'application/json' }) },
        ...(item.body === undefined ? {} : { body: item.body }),
        throwHttpErrors: false,
        retry: { limit: 0 },
        timeout: { request: 120_000 },
      });
      statuses.set(response.statusCode, (statuses.get(response.statusCode) ?? 0) + 1);
      if (response.statusCode >= 500)
        failures.push(`${item.method} ${item.url.slice(0, 200)} ${item.body?.slice(0, 200) ?? ''} -> ${response.statusCode} ${response.body.slice(0, 200)}`);
    }
  };
  await Promise.all(Array.from({ length: 8 }, worker));
  t.log(`answers by status: ${JSON.stringify(Object.fromEntries(statuses))}`);
  t.deepEqual(failures.slice(0, 20), [], `seed ${seed}`);
  t.is((await api.http(null).get('healthz')).statusCode, 200, 'the store is healthy');

  // A normal user afterwards: reserve, ready, release.
  const alice = api.http(((await api.http().post('v1/tokens', { json: { name: 'alice' } })).body as { token: string }).token);
  const created = await alice.post('v1/reservations', { json: { members: [{ role: 'main', spec: 'static-host' }] } });
  t.is(created.statusCode, 201, JSON.stringify(created.body));
  const id = (created.body as ReservationView).id;
  t.is(((await alice.get(`v1/reservations/${id}`, { searchParams: { wait: 'ready', timeout: 300 } })).body as ReservationView).state, 'ready');
  t.is((await alice.delete(`v1/reservations/${id}`)).statusCode, 200);
  const deadline = Date.now() + 180_000;
  while (((await alice.get(`v1/reservations/${id}`)).body as ReservationView).state !== 'released' && Date.now() < deadline)
    await new Promise((resolve) => setTimeout(resolve, 200));
  t.is(((await alice.get(`v1/reservations/${id}`)).body as ReservationView).state, 'released');

  // The database holds what the API shows.
  const db = await openStoredData(api);
  const all = <T>(sql: string) => db.all<T>(sql);
  const live = await all<{ id: string; state: string }>(
    "SELECT id, state FROM reservations WHERE state IN ('queued','allocated','provisioning','ready','releasing')",
  );
  const machines = await all<{ name: string; state: string }>('SELECT name, state FROM machines');
  const [row] = await all<{ state: string }>(`SELECT state FROM reservations WHERE id = '${id}'`);
  await db.close();
  const listed = (await api.http().get('v1/reservations', { searchParams: { all: 1, limit: 1000 } })).body as ReservationView[];
  t.deepEqual(live.map((each) => `${each.id}:${each.state}`).sort(), listed.map((each) => `${each.id}:${each.state}`).sort());
  const shown = (await api.http().get('v1/machines')).body as MachineView[];
  t.deepEqual(machines.map((each) => `${each.name}:${each.state}`).sort(), shown.map((each) => `${each.name}:${each.state}`).sort());
  t.is(row.state, 'released');
});
