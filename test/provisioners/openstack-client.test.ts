// The OpenStack client against endpoints that misbehave on demand (a small HTTP(S) server on
// loopback standing in for Keystone, Nova and Glance): retries of idempotent calls on 503, 429 and a
// connection reset, never of a POST or an upload; an upload limited by idleness, not by its
// length; a TLS endpoint verified with a `cacert`. Against the real test cloud: secure.yaml's
// password reaches Keystone, and keypairs are listed page by page.
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import test from 'ava';
import { OpenStackClient, OpenStackError, type CloudOptions } from '../../provisioners/openstack/client.js';
import { clientFor, cloudFromEnvironment } from '../../provisioners/openstack/cloud.js';
import { parseConfig } from '../../api/config.js';
import { generateKeyPair } from '../../protocol/ssh.js';
import { testCloud, type TestCloud } from '../helpers/cloud.js';

const run = promisify(execFile);
let dir: string;

test.before(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'paddock-os-client-'));
  // A CA and a server certificate for 127.0.0.1 signed by it.
  const openssl = (...args: string[]) => run('openssl', args, { cwd: dir });
  await openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=Lab CA');
  await openssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=127.0.0.1');
  writeFileSync(path.join(dir, 'ext'), 'subjectAltName=IP:127.0.0.1\n');
  await openssl(
    'x509',
    '-req',
    '-in',
    'server.csr',
    '-CA',
    'ca.pem',
    '-CAkey',
    'ca.key',
    '-CAcreateserial',
    '-out',
    'server.pem',
    '-days',
    '2',
    '-extfile',
    'ext',
  );
});

test.after.always(() => rmSync(dir, { recursive: true, force: true }));

type Handler = (request: http.IncomingMessage, response: http.ServerResponse, body: Buffer) => void;

/** A stand-in cloud: Keystone issues tokens whose catalog points back here; `handle` answers the rest. */
async function standIn(t: { teardown(fn: () => void): void }, handle: Handler, tls = false) {
  const seen: { method: string; url: string; at: number; bytes: number }[] = [];
  const listener = (request: http.IncomingMessage, response: http.ServerResponse) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const body = Buffer.concat(chunks);
      if (request.method === 'POST' && request.url === '/v3/auth/tokens') {
        const url = `${tls ? 'https' : 'http'}://127.0.0.1:${(server.address() as AddressInfo).port}`;
        const catalog = ['compute', 'image'].map((type) => ({ type, endpoints: [{ interface: 'public', region: 'R1', url: `${url}/${type}` }] }));
        response.writeHead(201, { 'content-type': 'application/json', 'x-subject-token': 'token-1' });
        response.end(JSON.stringify({ token: { expires_at: new Date(Date.now() + 3600_000).toISOString(), catalog } }));
        return;
      }
      seen.push({ method: request.method!, url: request.url!, at: Date.now(), bytes: body.length });
      handle(request, response, body);
    });
  };
  const server = tls
    ? https.createServer({ key: readFileSync(path.join(dir, 'server.key')), cert: readFileSync(path.join(dir, 'server.pem')) }, listener)
    : http.createServer(listener);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => server.close());
  const authUrl = `${tls ? 'https' : 'http'}://127.0.0.1:${(server.address() as AddressInfo).port}/v3`;
  const options: CloudOptions = { authUrl, credentials: { kind: 'application', id: 'app', secret: 'app-secret-xyz' }, retryDelayMs: 50 };
  return { seen, options, client: (extra: Partial<CloudOptions> = {}) => new OpenStackClient({ ...options, ...extra }) };
}

const json = (response: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) => {
  response.writeHead(status, { 'content-type': 'application/json', ...headers });
  response.end(JSON.stringify(body));
};
const flavors = { flavors: [{ id: '1', name: 'm1.tiny', vcpus: 1, ram: 512, disk: 1 }] };

test('a GET is retried after a 503 and after a connection reset mid-answer, then succeeds', async (t) => {
  const cloud = await standIn(t, (request, response) => {
    const count = cloud.seen.length;
    if (count === 1) return json(response, 503, { message: 'busy' });
    if (count === 2) {
      // Headers and half a body, then the connection drops.
      response.writeHead(200, { 'content-type': 'application/json', 'content-length': '500' });
      response.write('{"flavors": [');
      setTimeout(() => request.socket.destroy(), 50);
      return;
    }
    json(response, 200, flavors);
  });
  const result = await cloud.client().flavors();
  t.deepEqual(
    result.map((flavor) => flavor.name),
    ['m1.tiny'],
  );
  t.deepEqual(
    cloud.seen.map((each) => `${each.method} ${each.url}`),
    ['GET /compute/flavors/detail', 'GET /compute/flavors/detail', 'GET /compute/flavors/detail'],
  );
});

test('a 429 is retried after its Retry-After; one beyond the bound fails at once; retries end at the limit', async (t) => {
  let answer: 'once' | 'long' | 'always' = 'once';
  const cloud = await standIn(t, (_request, response) => {
    if (answer === 'once' && cloud.seen.length === 1) return json(response, 429, { message: 'slow down' }, { 'retry-after': '1' });
    if (answer === 'long') return json(response, 429, { message: 'slow down' }, { 'retry-after': '3600' });
    if (answer === 'always') return json(response, 502, { message: 'bad gateway' });
    json(response, 200, flavors);
  });
  t.is((await cloud.client().flavors()).length, 1);
  t.is(cloud.seen.length, 2);
  t.true(cloud.seen[1].at - cloud.seen[0].at >= 950, 'the second try waited for Retry-After');

  answer = 'long';
  cloud.seen.length = 0;
  const long = await t.throwsAsync(cloud.client({ maxRetryAfterMs: 5000 }).flavors(), { instanceOf: OpenStackError });
  t.regex(long?.message ?? '', /compute GET \/flavors\/detail: HTTP 429: slow down/);
  t.is(cloud.seen.length, 1);

  answer = 'always';
  cloud.seen.length = 0;
  const always = await t.throwsAsync(cloud.client({ retries: 2 }).flavors(), { instanceOf: OpenStackError });
  t.regex(always?.message ?? '', /HTTP 502/);
  t.is(cloud.seen.length, 3, 'the first try and two retries');
});

test('a POST and a streamed upload are never retried', async (t) => {
  const cloud = await standIn(t, (_request, response) => json(response, 503, { message: 'busy' }));
  const post = await t.throwsAsync(cloud.client().createServer({ name: 'x' }), { instanceOf: OpenStackError });
  t.regex(post?.message ?? '', /compute POST \/servers: HTTP 503: busy/);
  const upload = await t.throwsAsync(cloud.client().uploadImage('img1', Readable.from([Buffer.alloc(1024)])), { instanceOf: OpenStackError });
  t.regex(upload?.message ?? '', /image PUT \/v2\/images\/img1\/file: HTTP 503/);
  t.deepEqual(
    cloud.seen.map((each) => `${each.method} ${each.url}`),
    ['POST /compute/servers', 'PUT /image/v2/images/img1/file'],
  );
  t.false(post!.message.includes('app-secret-xyz') || upload!.message.includes('app-secret-xyz'));
});

/** A body of `chunks` chunks of 64 KiB, one every `everyMs`; with `stallAfter`, it stops sending after that many. */
function slowBody(chunks: number, everyMs: number, stallAfter = Infinity): Readable {
  let sent = 0;
  return new Readable({
    read() {
      if (sent >= stallAfter) return;
      setTimeout(() => this.push(sent++ < chunks ? Buffer.alloc(64 * 1024, 1) : null), everyMs);
    },
  });
}

test('an upload runs past the request timeout while it moves, and fails with a clear error when it stalls', async (t) => {
  const cloud = await standIn(t, (_request, response) => {
    response.writeHead(204);
    response.end();
  });
  const client = cloud.client({ timeoutMs: 400, idleTimeoutMs: 1000 });
  const started = Date.now();
  await client.uploadImage('moving', slowBody(10, 150));
  t.true(Date.now() - started > 400, 'longer than the whole-request timeout of a JSON call');
  t.is(cloud.seen.find((each) => each.url.includes('moving'))?.bytes, 10 * 64 * 1024);

  const stalled = await t.throwsAsync(client.uploadImage('stalled', slowBody(10, 50, 2)), { instanceOf: OpenStackError });
  t.is(stalled?.message, 'image PUT /v2/images/stalled/file: stalled: no data moved for 1 s (idle timeout)');
  t.is(stalled?.kind, 'unreachable');
});

test('a TLS endpoint is verified with the cacert of clouds.yaml or OS_CACERT, and refused without it', async (t) => {
  const cloud = await standIn(t, (_request, response) => json(response, 200, flavors), true);
  const cloudsYaml = (extra: string) =>
    `clouds:\n  lab:\n${extra}    auth:\n      auth_url: ${cloud.options.authUrl}\n      application_credential_id: app\n      application_credential_secret: app-secret-xyz\n`;
  const withCa = path.join(dir, 'with-ca.yaml');
  const withoutCa = path.join(dir, 'without-ca.yaml');
  writeFileSync(withCa, cloudsYaml(`    cacert: ${path.join(dir, 'ca.pem')}\n`));
  writeFileSync(withoutCa, cloudsYaml(''));

  const trusted = new OpenStackClient({ ...cloudFromEnvironment({ OS_CLOUD: 'lab', OS_CLIENT_CONFIG_FILE: withCa }), retryDelayMs: 50 });
  t.is((await trusted.flavors()).length, 1);
  const byVariable = cloudFromEnvironment({ OS_CLOUD: 'lab', OS_CLIENT_CONFIG_FILE: withoutCa, OS_CACERT: path.join(dir, 'ca.pem') });
  t.is((await new OpenStackClient(byVariable).flavors()).length, 1);

  const refused = await t.throwsAsync(new OpenStackClient(cloudFromEnvironment({ OS_CLOUD: 'lab', OS_CLIENT_CONFIG_FILE: withoutCa })).flavors(), {
    instanceOf: OpenStackError,
  });
  t.regex(refused?.message ?? '', /^Keystone is unreachable \((SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_VERIFY_LEAF_SIGNATURE)\)$/);
  const missing = t.throws(() => cloudFromEnvironment({ OS_CLOUD: 'lab', OS_CLIENT_CONFIG_FILE: withoutCa, OS_CACERT: path.join(dir, 'nope.pem') }));
  t.regex(missing?.message ?? '', /cacert .*nope\.pem: ENOENT/);
  t.false(missing!.message.includes('app-secret-xyz'));
});

test("keypairs are read page by page with limit and marker, following Nova's next links", async (t) => {
  const names = ['k1', 'k2', 'k3', 'k4', 'k5'];
  const cloud = await standIn(t, (request, response) => {
    const url = new URL(request.url!, 'http://x');
    const limit = Number(url.searchParams.get('limit'));
    const from = url.searchParams.has('marker') ? names.indexOf(url.searchParams.get('marker')!) + 1 : 0;
    const page = names.slice(from, from + limit);
    const next =
      from + limit < names.length ? [{ rel: 'next', href: `http://${request.headers.host}/compute/os-keypairs?limit=${limit}&marker=${page.at(-1)}` }] : [];
    json(response, 200, { keypairs: page.map((name) => ({ keypair: { name } })), keypairs_links: next });
  });
  t.deepEqual(await cloud.client({ computeVersion: '2.79' }).keypairs(2), names);
  t.deepEqual(
    cloud.seen.map((each) => each.url),
    ['/compute/os-keypairs?limit=2', '/compute/os-keypairs?limit=2&marker=k2', '/compute/os-keypairs?limit=2&marker=k4'],
  );
});

test("a pool's settings carry its cacert, timeouts and retries to its client", async (t) => {
  const cloud = await standIn(
    t,
    (_request, response) => (cloud.seen.length === 1 ? json(response, 503, { message: 'busy' }) : json(response, 200, flavors)),
    true,
  );
  const pool = (settings: string) =>
    parseConfig(
      `machines:\n  - name: cloud\n    kind: openstack\n    settings:\n      network: net1\n      flavors: [m1.tiny]\n      auth: { authUrl: "${cloud.options.authUrl}", applicationCredentialId: app, applicationCredentialSecret: app-secret-xyz }\n${settings}`,
    ).machines[0].settings as Parameters<typeof clientFor>[0];
  const noRetries = clientFor(pool(`      cacert: ${path.join(dir, 'ca.pem')}\n      retries: 0\n      requestTimeout: 5\n`));
  await t.throwsAsync(noRetries.flavors(), { message: /HTTP 503: busy/ });
  const withRetries = clientFor(pool(`      cacert: ${path.join(dir, 'ca.pem')}\n`));
  t.is((await withRetries.flavors()).length, 1);
  t.is(cloud.seen.length, 2);
  t.throws(() => clientFor(pool(`      cacert: ${path.join(dir, 'ca.key')}\n`)), { message: /the pool settings: cacert .*ca\.key: no PEM certificate in it/ });
});

// ---- the real test cloud ----------------------------------------------------------------------

let real: TestCloud | undefined;
const realCloud = async () => (real ??= await testCloud());
test.after.always(async () => real?.release());

test.serial('secure.yaml is merged over clouds.yaml: its password reaches Keystone and a token is issued', async (t) => {
  t.timeout(900_000);
  const cloud = await realCloud();
  const clouds = path.join(dir, 'clouds.yaml');
  const secure = path.join(dir, 'secure.yaml');
  writeFileSync(
    clouds,
    `clouds:\n  lab:\n    region_name: ${cloud.env.OS_REGION_NAME}\n    auth:\n      auth_url: ${cloud.env.OS_AUTH_URL}\n      username: ${cloud.env.OS_USERNAME}\n      project_name: ${cloud.env.OS_PROJECT_NAME}\n`,
  );
  // Without secure.yaml the entry lacks its password, and says so.
  t.throws(() => cloudFromEnvironment({ OS_CLOUD: 'lab', OS_CLIENT_CONFIG_FILE: clouds, OS_CLIENT_SECURE_FILE: path.join(dir, 'none.yaml') }), {
    message: /missing password/,
  });
  writeFileSync(secure, `clouds:\n  lab:\n    auth:\n      password: "${cloud.env.OS_PASSWORD}"\n`);
  const options = cloudFromEnvironment({ OS_CLOUD: 'lab', OS_CLIENT_CONFIG_FILE: clouds, OS_CLIENT_SECURE_FILE: secure });
  t.like(options, { region: cloud.env.OS_REGION_NAME, credentials: { kind: 'password', username: cloud.env.OS_USERNAME } });
  const token = await new OpenStackClient(options).authenticate();
  t.is(typeof token.value, 'string');
  t.true(token.catalog.some((entry) => entry.type === 'compute'));

  writeFileSync(secure, `clouds:\n  lab:\n    auth:\n      password: wrong-secret-123\n`);
  const wrong = await t.throwsAsync(
    new OpenStackClient(cloudFromEnvironment({ OS_CLOUD: 'lab', OS_CLIENT_CONFIG_FILE: clouds, OS_CLIENT_SECURE_FILE: secure })).authenticate(),
    {
      instanceOf: OpenStackError,
    },
  );
  t.is(wrong?.kind, 'unauthorized');
  t.false(wrong!.message.includes('wrong-secret-123'));
});

test.serial('keypairs are listed across pages (Nova limit and marker)', async (t) => {
  t.timeout(900_000);
  const cloud = await realCloud();
  const prefix = `paddock-pages-${process.pid}`;
  const names = [1, 2, 3, 4, 5].map((index) => `${prefix}-${index}`);
  t.teardown(async () => {
    for (const name of names) await cloud.user.deleteKeypair(name);
  });
  for (const name of names) await cloud.user.createKeypair(name, generateKeyPair(name).publicKey);
  const first = await cloud.user.call<{ keypairs: unknown[]; keypairs_links?: { rel: string }[] }>('compute', 'GET', '/os-keypairs?limit=2');
  t.is(first.keypairs.length, 2, 'one page holds two');
  t.true(first.keypairs_links?.some((link) => link.rel === 'next'));
  const listed = await cloud.user.keypairs(2);
  t.deepEqual(listed.filter((name) => name.startsWith(prefix)).sort(), names);
  t.is(new Set(listed).size, listed.length, 'no page read twice');
});
