// Bad input gets a 4xx with a stable code and the server keeps serving: malformed JSON and specs,
// unknown fields, missing or wrong tokens, another user's reservation.
import { statSync } from 'node:fs';
import path from 'node:path';
import test from 'ava';
import got from 'got';
import { startApi, staticMachinesYaml, testConfig, type TestApi } from '../helpers/api.js';
import { startSshd, type TestSshd } from '../helpers/sshd.js';

let api: TestApi;
let sshd: TestSshd;

test.before(async () => {
  sshd = await startSshd();
  api = await startApi(
    testConfig(staticMachinesYaml([{ name: 'host-1', port: sshd.port, adminKeyPath: sshd.adminKey.path, authorizedKeysFile: sshd.authorizedKeysFile }])),
  );
});

test.after.always(async () => {
  await api?.close();
  await sshd?.stop();
});

const expectError = (t: import('ava').ExecutionContext, response: { statusCode: number; body: unknown }, status: number, code: string) => {
  t.is(response.statusCode, status, JSON.stringify(response.body));
  const body = response.body as { code: string; message: string };
  t.is(body.code, code);
  t.true(typeof body.message === 'string' && body.message.length > 0);
  t.false(JSON.stringify(body).includes('    at '), 'no stack trace');
};

test('a missing, malformed or wrong token is refused with 401', async (t) => {
  expectError(t, await api.http(null).get('v1/machines'), 401, 'unauthorized');
  expectError(t, await api.http('pdk_not-a-real-token').get('v1/machines'), 401, 'unauthorized');
  const malformed = await got.get(`${api.url}/v1/machines`, { headers: { authorization: 'Basic abc' }, throwHttpErrors: false, responseType: 'json' });
  expectError(t, malformed, 401, 'unauthorized');
  const response = await api.http('pdk_secret-value-123').get('v1/reservations');
  t.false(JSON.stringify(response.body).includes('secret-value-123'), 'the token is not echoed');
  t.false(api.logs.join('\n').includes('secret-value-123'), 'the token is not logged');
  t.false(api.logs.join('\n').includes(api.adminToken), 'the admin token is never logged');
});

test('the admin token and the database are 0600 files; the token path is printed, never the token', (t) => {
  t.is(statSync(api.server.adminTokenFile).mode & 0o777, 0o600);
  // On PostgreSQL the database is no file of Paddock's: its access is the database server's.
  if (api.database === undefined) t.is(statSync(path.join(api.dataDir, 'paddock.sqlite')).mode & 0o777, 0o600, 'the database holds private keys');
  t.true(api.logs.some((line) => line.includes(api.server.adminTokenFile)));
  t.regex(api.adminToken, /^pdk_/);
  t.false(api.logs.some((line) => line.includes(api.adminToken)));
});

test('/healthz answers without a token', async (t) => {
  const response = await api.http(null).get('healthz');
  t.is(response.statusCode, 200);
  t.deepEqual((response.body as { ok: boolean }).ok, true);
});

test('malformed JSON, unknown fields and wrong types are 400 with stable codes', async (t) => {
  const http = api.http();
  expectError(t, await http.post('v1/reservations', { body: '{"members": [', headers: { 'content-type': 'application/json' } }), 400, 'invalid_json');
  expectError(t, await http.post('v1/reservations', { json: { members: [{ role: 'a', spec: 'static-host' }], colour: 'red' } }), 400, 'invalid_request');
  expectError(t, await http.post('v1/reservations', { json: { members: [{ role: 'a', spec: 'static-host', cnt: 2 }] } }), 400, 'invalid_request');
  expectError(t, await http.post('v1/reservations', { json: { members: [{ role: 'a', spec: 'static-host', count: 'two' }] } }), 400, 'invalid_request');
  expectError(t, await http.post('v1/reservations', { json: { members: [] } }), 400, 'invalid_request');
  expectError(t, await http.post('v1/reservations', { json: { members: [{ role: 'a', spec: 'static-host' }], lease: 'forever' } }), 400, 'invalid_request');
  expectError(t, await http.post('v1/reservations', { body: 'members=1', headers: { 'content-type': 'text/plain' } }), 415, 'unsupported_media_type');
  expectError(
    t,
    await http.post('v1/reservations', { body: JSON.stringify({ pad: 'x'.repeat(2 * 1024 * 1024) }), headers: { 'content-type': 'application/json' } }),
    413,
    'payload_too_large',
  );
  const unknown = await http.post('v1/reservations', { json: { members: [{ role: 'a', spec: 'static-host' }], colour: 'red' } });
  t.regex((unknown.body as { message: string }).message, /colour/);
});

test('a malformed spec is 400 invalid_spec with its position', async (t) => {
  const response = await api.http().post('v1/reservations', { json: { members: [{ role: 'build', spec: 'arch=x86_64 ram>=lots' }] } });
  expectError(t, response, 400, 'invalid_spec');
  const details = (response.body as { details: { position: number; role: string } }).details;
  t.is(details.role, 'build');
  t.is(details.position, 'arch=x86_64 ram>='.length);
  const explained = await api.http().post('v1/explain', { json: { spec: 'ram>=' } });
  expectError(t, explained, 400, 'invalid_spec');
});

test('unknown routes and ids are 404, malformed ids 400; illegal methods are 405', async (t) => {
  expectError(t, await api.http().get('v1/nothing-here'), 404, 'not_found');
  expectError(t, await api.http().get('v1/reservations/r-000000000000'), 404, 'not_found');
  expectError(t, await api.http().get('v1/reservations/..%2F..%2Fetc'), 400, 'invalid_parameter');
  expectError(t, await api.http().put('v1/reservations'), 405, 'method_not_allowed');
});

test("a user cannot see, renew or release another user's reservation; admins can see it", async (t) => {
  const admin = api.http();
  const alice = (await admin.post('v1/tokens', { json: { name: 'alice' } })).body as { token: string };
  const bob = (await admin.post('v1/tokens', { json: { name: 'bob', role: 'user' } })).body as { token: string };
  const created = await api.http(alice.token).post('v1/reservations', { json: { members: [{ role: 'main', spec: 'static-host' }], lease: 60 } });
  t.is(created.statusCode, 201, JSON.stringify(created.body));
  const id = (created.body as { id: string }).id;
  expectError(t, await api.http(bob.token).get(`v1/reservations/${id}`), 403, 'forbidden');
  expectError(t, await api.http(bob.token).post(`v1/reservations/${id}/renew`), 403, 'forbidden');
  expectError(t, await api.http(bob.token).delete(`v1/reservations/${id}`), 403, 'forbidden');
  expectError(t, await api.http(bob.token).get(`v1/reservations/${id}/credentials`), 403, 'forbidden');
  const bobsList = (await api.http(bob.token).get('v1/reservations')).body as unknown[];
  t.is(bobsList.length, 0);
  t.is((await admin.get(`v1/reservations/${id}`)).statusCode, 200);
  expectError(t, await admin.get(`v1/reservations/${id}/credentials`), 403, 'forbidden');
  expectError(t, await api.http(bob.token).post('v1/tokens', { json: { name: 'mallory', role: 'admin' } }), 403, 'forbidden');
  expectError(t, await api.http(bob.token).post('v1/machines/host-1/maintenance', { json: {} }), 403, 'forbidden');
  const released = await api.http(alice.token).delete(`v1/reservations/${id}`);
  t.is(released.statusCode, 200);
});

test('the server keeps serving after all of that', async (t) => {
  const response = await api.http().get('v1/machines');
  t.is(response.statusCode, 200);
  t.is((response.body as unknown[]).length, 1);
});

test('the OpenAPI document lists every route the router serves', async (t) => {
  const response = await api.http().get('v1/openapi.json');
  t.is(response.statusCode, 200);
  const document = response.body as { paths: Record<string, Record<string, unknown>> };
  const served = api.server.routes.map((route) => `${route.method} ${route.path.replace(/:([A-Za-z]+)/g, '{$1}')}`);
  const documented = Object.entries(document.paths).flatMap(([path, methods]) => Object.keys(methods).map((method) => `${method} ${path}`));
  t.deepEqual(documented.sort(), served.sort());
  t.true(served.length >= 15);
  t.truthy(document.paths['/v1/reservations'].post);
});
