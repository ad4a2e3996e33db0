// The client library given several API servers: a dead one is passed over, a follower's redirect is
// followed with the token and its leader kept, an election (503 no_leader) is waited out, a budget
// that runs out names the servers tried, only what is safe is sent twice, and streams, uploads and
// tunnels reach the leader. The leader is a real API; the followers, the electing and the dying
// servers are stand-ins (test/helpers/follower.ts) speaking the protocol the API servers will
// speak, until `paddock serve` runs as a follower in these tests.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { PassThrough } from 'node:stream';
import path from 'node:path';
import { inspect } from 'node:util';
import test from 'ava';
import { Paddock, PaddockConnectionError, PaddockError, Reservation } from '../../client/index.js';
import type { ReservationView } from '../../protocol/api.js';
import { startApi, staticMachinesYaml, testConfig, type TestApi } from '../helpers/api.js';
import { closedPort, electing, follower, startStandIn, type StandIn } from '../helpers/follower.js';
import { startSshd, type TestSshd } from '../helpers/sshd.js';
import { waitFor } from '../helpers/wait.js';

let api: TestApi;
let host: TestSshd;
let tunnelled: TestSshd;
const standIns: StandIn[] = [];

const standIn = async (...args: Parameters<typeof startStandIn>) => {
  const started = await startStandIn(...args);
  standIns.push(started);
  return started;
};

test.before(async () => {
  [host, tunnelled] = await Promise.all([startSshd(), startSshd()]);
  api = await startApi(
    testConfig(
      `lease: { default: 60, max: 600 }\n${staticMachinesYaml([
        { name: 'fo-host', port: host.port, adminKeyPath: host.adminKey.path, authorizedKeysFile: host.authorizedKeysFile },
        {
          name: 'fo-tunnel',
          port: tunnelled.port,
          adminKeyPath: tunnelled.adminKey.path,
          authorizedKeysFile: tunnelled.authorizedKeysFile,
          access: 'paddock',
          labels: { type: 'tunnel-host', arch: 'x86_64' },
        },
      ])}`,
    ),
  );
});

test.after.always(async () => {
  await Promise.all(standIns.map((each) => each.close()));
  await api?.close();
  await host?.stop();
  await tunnelled?.stop();
});

test('several URLs, the first a dead server: requests go on to the live one, which is kept for the next', async (t) => {
  const dead = await closedPort();
  const paddock = new Paddock({ url: `${dead},${api.url}`, token: api.adminToken });
  t.is((await paddock.whoami()).name, 'admin');
  t.is(paddock.http.servers.current, api.url, 'the live server is the current one now');
  t.deepEqual(
    (await paddock.machines()).map((machine) => machine.name),
    ['fo-host', 'fo-tunnel'],
    'a paginated list too',
  );
  t.is(paddock.http.where, `${dead}, ${api.url}`);
});

test("a follower's redirect is followed with the token to the leader it names, and the leader is kept", async (t) => {
  const follows = await standIn(follower(api.url));
  // The leader is not in the list: the follower's Paddock-Leader is all the client knows of it.
  const paddock = new Paddock({ url: follows.url, token: api.adminToken });
  t.is((await paddock.whoami()).name, 'admin', 'the leader got the token (a 401 otherwise)');
  t.deepEqual(
    follows.seen.map((each) => `${each.method} ${each.path}`),
    ['GET /v1/whoami'],
  );
  t.is(follows.seen[0]!.authorization, `Bearer ${api.adminToken}`);
  const created = await paddock.createToken('through-a-follower', 'user');
  t.is(created.name, 'through-a-follower', 'a POST goes to the leader with its body');
  t.is(follows.seen.length, 1, 'later requests go straight to the leader');
  t.is(paddock.http.servers.current, api.url);
});

test('an upload goes to the leader found by /healthz, never through a follower', async (t) => {
  const follows = await standIn(follower(api.url));
  const dir = mkdtempSync(path.join(os.tmpdir(), 'paddock-failover-'));
  try {
    const file = path.join(dir, 'disk.qcow2');
    writeFileSync(file, randomBytes(256 * 1024));
    const paddock = new Paddock({ url: `${follows.url},${api.url}`, token: api.adminToken });
    const image = await paddock.images.upload(file, { name: 'failover', tag: 'upload' });
    t.is(image.ref, 'failover:upload');
    t.deepEqual(
      follows.seen.map((each) => `${each.method} ${each.path}`),
      ['GET /healthz'],
      'the follower was asked its role, and sent no byte of the upload',
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test.serial('streams through a follower: a download, the event stream of ready(), a log followed', async (t) => {
  const admin = new Paddock({ url: api.url, token: api.adminToken });
  const dir = mkdtempSync(path.join(os.tmpdir(), 'paddock-failover-'));
  try {
    const bytes = randomBytes(64 * 1024);
    writeFileSync(path.join(dir, 'disk.qcow2'), bytes);
    await admin.images.upload(path.join(dir, 'disk.qcow2'), { name: 'failover', tag: 'stream' });
    const viaDownload = await standIn(follower(api.url));
    const first = new Paddock({ url: viaDownload.url, token: api.adminToken });
    await first.images.download('failover:stream', path.join(dir, 'copy.qcow2'));
    t.deepEqual(readFileSync(path.join(dir, 'copy.qcow2')), bytes, 'a download as the first request, redirected');
    t.deepEqual(
      viaDownload.seen.map((each) => each.path),
      ['/v1/images/failover/stream/content'],
    );

    // ready() with progress opens the event stream and lists events at once: both may meet the follower.
    const reservation = await admin.reserve({ members: [{ role: 'main', spec: 'static-host' }], lease: 60 }, { renew: false });
    try {
      const viaEvents = await standIn(follower(api.url));
      const watcher = new Paddock({ url: viaEvents.url, token: api.adminToken });
      const watched = await watcher.reservation(reservation.id);
      const progress: string[] = [];
      await watched.ready({ timeout: 60, onProgress: (update) => progress.push('to' in update ? `${update.type} ${update.to}` : update.state) });
      t.true(progress.includes('state ready'), progress.join(', '));
      t.true(viaEvents.seen.length >= 1);
      t.true(
        viaEvents.seen.every((each) => each.authorization === `Bearer ${api.adminToken}`),
        'the follower was sent the token, as every server of the list is',
      );
      // The console log as a first stream request of yet another client, followed until the end.
      const viaConsole = await standIn(follower(api.url));
      const reader = new Reservation(new Paddock({ url: viaConsole.url, token: api.adminToken }).http, reservation.view, false);
      const sink = new PassThrough();
      sink.resume();
      await reservation.release();
      await reader.console(sink, { follow: true });
      t.deepEqual(
        viaConsole.seen.map((each) => each.path.replace(/\?.*/, '')),
        [`/v1/reservations/${reservation.id}/console`],
        'the follow, redirected to the leader, until the reservation ended',
      );
    } finally {
      await reservation.release();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test.serial('a tunnel (a WebSocket, which is not redirected) opens at the leader found by /healthz', async (t) => {
  const admin = new Paddock({ url: api.url, token: api.adminToken });
  const reservation = await admin.reserve({ members: [{ role: 'main', spec: 'type=tunnel-host' }], lease: 60 }, { renew: false });
  try {
    await reservation.ready({ timeout: 120 });
    const follows = await standIn(follower(api.url));
    const listed = new Reservation(new Paddock({ url: `${follows.url},${api.url}`, token: api.adminToken }).http, reservation.view, false);
    const stream = await listed.tunnel('fo-tunnel', 'ssh');
    const banner = await new Promise<string>((resolve, reject) => {
      stream.once('data', (chunk: Buffer) => resolve(chunk.toString('utf8')));
      stream.once('error', reject);
    });
    stream.destroy();
    t.regex(banner, /^SSH-2\.0-/, "the machine's SSH server, through the leader");
    t.deepEqual(
      follows.seen.map((each) => `${each.method} ${each.path}`),
      ['GET /healthz'],
    );
  } finally {
    await reservation.release();
  }
});

test('an election (503 no_leader) is waited out, then the redirect to the new leader followed', async (t) => {
  const server = await standIn((request, index) => (index < 3 ? electing : follower(api.url)(request)));
  const paddock = new Paddock({ url: server.url, token: api.adminToken });
  t.is((await paddock.whoami()).name, 'admin');
  t.is(server.seen.length, 4, 'three answers of no leader, then the redirect');
});

test('a failover budget that runs out: PaddockConnectionError naming the servers tried, no password, no token', async (t) => {
  const [first, second] = [await closedPort(), await closedPort()];
  const token = 'pdk_c2VjcmV0LXRva2VuLWZvci1mYWlsb3Zlcg';
  const withPassword = second.replace('http://', 'http://paddock:hunter2@');
  const paddock = new Paddock({ url: `${first},${withPassword}`, token, failoverTimeout: 1 });
  const error = await t.throwsAsync(paddock.whoami(), { instanceOf: PaddockConnectionError });
  t.is(error.code, 'connection_failed');
  t.is(error.message, `cannot reach Paddock at ${first}, ${second}: ECONNREFUSED`);
  t.deepEqual((error.details as { tried: string[] }).tried, [first, second]);
  const everything = `${error.message}\n${error.stack}\n${inspect(error, { depth: 10, showHidden: true })}`;
  t.false(everything.includes('hunter2'));
  t.false(everything.includes(token));
});

test('a POST without an idempotency key is not sent again after its connection broke; a read is', async (t) => {
  const dying = await standIn(() => 'reset');
  const paddock = new Paddock({ url: `${dying.url},${api.url}`, token: api.adminToken });
  const error = await t.throwsAsync(paddock.createToken('sent-once', 'user'), { instanceOf: PaddockConnectionError });
  t.regex(error.message, new RegExp(`cannot reach Paddock at ${dying.url}: ECONNRESET`));
  t.deepEqual(
    dying.seen.map((each) => `${each.method} ${each.path}`),
    ['POST /v1/tokens'],
  );
  const admin = new Paddock({ url: api.url, token: api.adminToken });
  t.false(
    (await admin.tokens()).some((each) => each.name === 'sent-once'),
    'the live server never saw it: it was not replayed',
  );
  // A read on the same list: the reset sends it on to the next server.
  t.is((await paddock.whoami()).name, 'admin');
  t.deepEqual(
    dying.seen.map((each) => `${each.method} ${each.path}`),
    ['POST /v1/tokens', 'GET /v1/whoami'],
  );
});

test.serial('a reservation with an idempotency key is sent again after a reset, and made once', async (t) => {
  const dying = await standIn(() => 'reset');
  const paddock = new Paddock({ url: `${dying.url},${api.url}`, token: api.adminToken });
  const admin = new Paddock({ url: api.url, token: api.adminToken });
  const ids = async () => new Set((await admin.list({ all: true, ended: true })).map((view: ReservationView) => view.id));
  const before = await ids();
  const request = { members: [{ role: 'main', spec: 'static-host' }], idempotencyKey: 'failover-once', lease: 60 };
  const reservation = await paddock.reserve(request, { renew: false });
  try {
    t.deepEqual(
      dying.seen.map((each) => `${each.method} ${each.path}`),
      ['POST /v1/reservations'],
      'the dying server took it first',
    );
    const again = await admin.reserve(request, { renew: false });
    t.is(again.id, reservation.id, 'the key names one reservation');
    const made = [...(await ids())].filter((id) => !before.has(id));
    t.deepEqual(made, [reservation.id], 'one reservation made');
  } finally {
    await reservation.release();
  }
});

test.serial('a renewal whose connection broke is sent again: it counts from its arrival, so twice is once', async (t) => {
  const admin = new Paddock({ url: api.url, token: api.adminToken });
  const held = await admin.reserve({ members: [{ role: 'main', spec: 'static-host' }], lease: 60 }, { renew: false });
  try {
    await held.ready();
    const before = held.view.expiresAt!;
    // A server that shows the reservation, then dies while the renewal is on its way.
    const dying = await standIn((request) => (request.method === 'GET' ? { status: 200, body: held.view } : 'reset'));
    const paddock = new Paddock({ url: `${dying.url},${api.url}`, token: api.adminToken });
    const reservation = await paddock.reservation(held.id);
    await new Promise((resolve) => setTimeout(resolve, 1100));
    const renewed = await reservation.renew();
    t.deepEqual(
      dying.seen.map((each) => `${each.method} ${each.path}`),
      [`GET /v1/reservations/${held.id}`, `POST /v1/reservations/${held.id}/renew`],
    );
    t.true(Date.parse(renewed.expiresAt!) > Date.parse(before), `the live server renewed it: ${before} then ${renewed.expiresAt}`);
  } finally {
    await held.release();
  }
});

test.serial('maintenance whose connection broke is sent again (twice leaves the machine as once); a retirement is not', async (t) => {
  const dying = await standIn(() => 'reset');
  const paddock = new Paddock({ url: `${dying.url},${api.url}`, token: api.adminToken });
  const admin = new Paddock({ url: api.url, token: api.adminToken });
  // Free of the tests before (a release cleans the host first).
  await waitFor(async () => (await admin.machine('fo-host')).state === 'available', 60_000, 'fo-host free');
  try {
    t.is((await paddock.maintenance('fo-host', 'failover test')).state, 'maintenance');
    t.deepEqual(
      dying.seen.map((each) => `${each.method} ${each.path}`),
      ['POST /v1/machines/fo-host/maintenance'],
    );
  } finally {
    t.is((await admin.activate('fo-host')).state, 'available');
  }
  // A retirement sent twice would answer machine_retired for what the first did: not sent again.
  const again = await standIn(() => 'reset');
  const retiring = new Paddock({ url: `${again.url},${api.url}`, token: api.adminToken });
  await t.throwsAsync(retiring.retire('fo-host', 'never'), { instanceOf: PaddockConnectionError });
  t.is((await admin.machine('fo-host')).state, 'available', 'the live server never saw the retirement');
});

test('hostile leaders are refused with a clear error: not http(s), not a URL, and redirect loops end', async (t) => {
  for (const named of ['file:///etc/passwd', 'not a url', 'javascript:alert(1)']) {
    const follows = await standIn(follower(api.url, named));
    const paddock = new Paddock({ url: follows.url, token: api.adminToken });
    const error = await t.throwsAsync(paddock.whoami(), { instanceOf: PaddockError });
    t.is(error.code, 'invalid_redirect', named);
    t.regex(error.message, /named a leader that is not an http\(s\) URL/);
  }
  // Two followers naming each other.
  const peer: { url?: string } = {};
  const first = await standIn((request) => follower(peer.url!)(request));
  const second = await standIn(follower(first.url));
  peer.url = second.url;
  const paddock = new Paddock({ url: first.url, token: api.adminToken });
  const loop = await t.throwsAsync(paddock.whoami(), { instanceOf: PaddockError });
  t.is(loop.code, 'invalid_redirect');
  t.regex(loop.message, /redirected 4 times in a row .*: a redirect loop/);
  t.is(first.seen.length + second.seen.length, 5, 'four redirects followed, the fifth refused');
});

test('a list with a bad URL is refused as a whole, without echoing a password', (t) => {
  for (const [url, message] of [
    ['http://127.0.0.1:7300,ftp://b:21', /must be http or https, not ftp:/],
    ['http://127.0.0.1:7300,nonsense', /not a URL: "nonsense"/],
    [' , ', /names no server/],
  ] as const) {
    t.throws(() => new Paddock({ url, token: 'pdk_x' }), { instanceOf: PaddockError, message });
  }
  const error = t.throws(() => new Paddock({ url: 'http://127.0.0.1:7300,http://user:hunter2@[bad', token: 'pdk_x' }), { instanceOf: PaddockError });
  t.is(error.code, 'configuration');
  t.false(error.message.includes('hunter2'));
  t.throws(() => new Paddock({ url: api.url, token: 'pdk_x', failoverTimeout: -1 }), { message: /failoverTimeout/ });
});
