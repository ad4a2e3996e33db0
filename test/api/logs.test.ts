// The logs of `paddock serve` as an operator reads them: its stderr is JSON lines with level, time
// and component; every answer carries an X-Request-Id (a proxy's well-formed one kept, a hostile one
// replaced and never logged) that the lines logged while serving it carry too, and that an error
// body quotes; one access line per request with its route pattern and status; a reservation's life
// is logged with its reservation and machine ids as fields; no token or private key in any line;
// `--log-format text` prints lines for people. One real server process on a static host.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import test from 'ava';
import got from 'got';
import { WebSocket } from 'ws';
import type { ChildProcess } from 'node:child_process';
import { Paddock } from '../../client/index.js';
import { staticHostOn, staticMachinesYaml } from '../helpers/api.js';
import { captureLog, parseLogLines } from '../helpers/log.js';
import { freePort } from '../helpers/ports.js';
import { assertNoKeyMaterial } from '../helpers/secrets.js';
import { runPaddock, startServerProcess, stopGracefully } from '../helpers/server.js';
import { startSshd, type TestSshd } from '../helpers/sshd.js';
import { waitFor } from '../helpers/wait.js';

type Line = Record<string, unknown>;

let dir: string;
let sshd: TestSshd;
let server: ChildProcess;
let stderr = '';
let url: string;
let adminToken: string;
let userToken: string;

const lines = (): Line[] => parseLogLines(stderr);
const accessLines = () => lines().filter((line) => line.msg === 'request');

test.before(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'paddock-logs-'));
  sshd = await startSshd();
  const port = await freePort();
  url = `http://127.0.0.1:${port}`;
  const config = path.join(dir, 'paddock.yaml');
  writeFileSync(config, [`listen: 127.0.0.1:${port}`, 'dataDir: data', staticMachinesYaml([staticHostOn(sshd, 'host-1')])].join('\n'));
  server = await startServerProcess(['--config', config], url, (chunk) => (stderr += chunk));
  adminToken = readFileSync(path.join(dir, 'data', 'admin-token'), 'utf8').trim();
  userToken = (await new Paddock({ url, token: adminToken }).createToken('dora', 'user')).token;
});

test.after.always(async () => {
  await stopGracefully(server);
  await sshd?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const http = got.extend({ throwHttpErrors: false, retry: { limit: 0 }, responseType: 'json' });

test.serial("a proxy's request id is kept, on the answer and on every line of the request", async (t) => {
  const answer = await http.get(`${url}/v1/machines`, { headers: { authorization: `Bearer ${userToken}`, 'x-request-id': 'proxy-7f3a.42' } });
  t.is(answer.statusCode, 200);
  t.is(answer.headers['x-request-id'], 'proxy-7f3a.42');
  await waitFor(async () => accessLines().some((line) => line.request === 'proxy-7f3a.42'), 10_000, 'the access line');
  const access = accessLines().find((line) => line.request === 'proxy-7f3a.42')!;
  t.like(access, { level: 'info', component: 'api', method: 'GET', route: '/v1/machines', status: 200 });
  t.true((access.bytes as number) > 0, 'the bytes sent');
  t.is(typeof access.ms, 'number');
  t.false(JSON.stringify(access).includes(userToken), 'no Authorization header in the access line');

  const plain = await http.get(`${url}/healthz`);
  t.regex(String(plain.headers['x-request-id']), /^[0-9a-f-]{36}$/, 'a fresh id when the caller gives none');
});

test.serial('a hostile request id is replaced, not logged', async (t) => {
  for (const hostile of ['x"}{"level":"fatal', 'a'.repeat(300), '../../etc/passwd bad id', '-leading-dash']) {
    const answer = await http.get(`${url}/v1/machines`, { headers: { authorization: `Bearer ${userToken}`, 'x-request-id': hostile } });
    t.is(answer.statusCode, 200);
    const id = String(answer.headers['x-request-id']);
    t.not(id, hostile);
    t.regex(id, /^[0-9a-f-]{36}$/);
    await waitFor(async () => accessLines().some((line) => line.request === id), 10_000, 'the access line');
    t.false(stderr.includes(hostile.replaceAll('"', '\\"')), `the hostile id ${hostile.slice(0, 20)}… is in no line`);
  }
});

test.serial('a failed request: its error body quotes the request id, its access line has the status and the route pattern', async (t) => {
  const missing = await http.get<{ code: string; requestId: string }>(`${url}/v1/reservations/r-000000000000`, {
    headers: { authorization: `Bearer ${userToken}` },
  });
  t.is(missing.statusCode, 404);
  t.is(missing.body.code, 'not_found');
  t.is(missing.body.requestId, String(missing.headers['x-request-id']));
  await waitFor(async () => accessLines().some((line) => line.request === missing.body.requestId), 10_000, 'the access line');
  t.like(
    accessLines().find((line) => line.request === missing.body.requestId),
    { method: 'GET', route: '/v1/reservations/:id', status: 404 },
  );

  // A wrong token in the header and a secret in a query string: neither is logged.
  const refused = await http.get<{ code: string; requestId: string }>(`${url}/v1/machines?token=query-secret-4711`, {
    headers: { authorization: 'Bearer guessed-secret-0815' },
  });
  t.is(refused.statusCode, 401);
  await waitFor(async () => accessLines().some((line) => line.request === refused.body.requestId), 10_000, 'the access line');
  t.like(
    accessLines().find((line) => line.request === refused.body.requestId),
    { route: '/v1/machines', status: 401 },
  );
  t.false(stderr.includes('guessed-secret-0815'));
  t.false(stderr.includes('query-secret-4711'));

  // A refused WebSocket upgrade (a console stream of a reservation that does not exist) is answered and logged the same way.
  const upgrade = await new Promise<{ status: number; id: string | undefined }>((resolve, reject) => {
    const socket = new WebSocket(`${url.replace('http', 'ws')}/v1/reservations/r-000000000000/console/stream`, {
      headers: { authorization: `Bearer ${userToken}`, 'x-request-id': 'ws-probe-1' },
    });
    socket.on('unexpected-response', (_request, response) => {
      resolve({ status: response.statusCode ?? 0, id: response.headers['x-request-id'] as string | undefined });
      response.resume();
    });
    socket.on('open', () => reject(new Error('upgraded')));
    socket.on('error', () => undefined);
  });
  t.deepEqual(upgrade, { status: 404, id: 'ws-probe-1' });
  await waitFor(async () => accessLines().some((line) => line.request === 'ws-probe-1'), 10_000, 'the access line');
  t.like(
    accessLines().find((line) => line.request === 'ws-probe-1'),
    { route: '/v1/reservations/:id/console/stream', status: 404 },
  );

  const noRoute = await http.get<{ requestId: string }>(`${url}/v2/nothing-here`);
  t.is(noRoute.statusCode, 404);
  await waitFor(async () => accessLines().some((line) => line.request === noRoute.body.requestId), 10_000, 'the access line');
  t.like(
    accessLines().find((line) => line.request === noRoute.body.requestId),
    { route: '(no route)', status: 404 },
  );
});

test.serial("a reservation's life: scheduler and agent lines carry its ids; no secret in any line", async (t) => {
  const paddock = new Paddock({ url, token: userToken });
  const reservation = await paddock.reserve({ members: [{ role: 'box', spec: 'static-host', count: 1 }], lease: '5m' });
  await reservation.ready({ timeout: 120 });
  const { privateKey } = await reservation.credentials();
  await reservation.release();
  await waitFor(async () => (await reservation.refresh()).state === 'released', 60_000, 'released');
  await waitFor(async () => lines().some((line) => line.reservation === reservation.id && line.to === 'released'), 10_000, 'the last event logged');

  const all = lines();
  for (const line of all) {
    t.is(typeof line.level, 'string');
    t.false(Number.isNaN(Date.parse(String(line.time))), 'an ISO time');
    t.is(typeof line.component, 'string');
  }
  const scheduler = all.filter((line) => line.component === 'scheduler' && line.reservation === reservation.id);
  t.deepEqual(
    scheduler.filter((line) => line.msg?.toString().startsWith('reservation ')).map((line) => line.to),
    ['queued', 'allocated', 'provisioning', 'ready', 'releasing', 'released'],
    'its states, in order',
  );
  t.true(
    scheduler.some((line) => line.machine === 'host-1'),
    'the machine it was given',
  );
  // The request that asked for it: its queued line was logged while serving it, so it carries its id.
  const queued = scheduler.find((line) => line.to === 'queued')!;
  t.like(
    accessLines().find((line) => line.request === queued.request),
    { method: 'POST', route: '/v1/reservations', status: 201 },
  );
  t.true(
    all.some((line) => line.component === 'agent' && line.reservation === reservation.id && line.machine === 'host-1' && line.msg === 'ready'),
    "the agent's ready line",
  );

  for (const secret of [userToken, adminToken]) t.false(stderr.includes(secret), 'no token in any line');
  assertNoKeyMaterial(t, stderr, privateKey);
});

test.serial('--log-format text prints lines for people; an unknown format or level is refused', async (t) => {
  const port = await freePort();
  const textUrl = `http://127.0.0.1:${port}`;
  const config = path.join(dir, 'text.yaml');
  writeFileSync(config, [`listen: 127.0.0.1:${port}`, 'dataDir: text-data', 'agent: { enabled: false }', 'machines: []'].join('\n'));
  let text = '';
  const textServer = await startServerProcess(['--config', config, '--log-format', 'text'], textUrl, (chunk) => (text += chunk));
  try {
    const answer = await got.get(`${textUrl}/healthz`, { retry: { limit: 0 } });
    const id = String(answer.headers['x-request-id']);
    await waitFor(async () => text.includes(id), 10_000, 'the access line');
    t.regex(text, /^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}\] INFO: api: paddock listening/m);
    t.regex(text, new RegExp(`INFO: api: request .*"request":"${id}".*"route":"/healthz"`));
    t.throws(() => JSON.parse(text.split('\n')[0]));
  } finally {
    await stopGracefully(textServer);
  }
  const refused = await runPaddock(textUrl, 'unused', ['serve', '--config', config, '--log-format', 'xml']);
  t.not(refused.code, 0);
  t.regex(refused.stderr, /--log-format.*json, text/);
  const loud = await runPaddock(textUrl, 'unused', ['serve', '--config', config, '--log-level', 'loud']);
  t.not(loud.code, 0);
  t.regex(loud.stderr, /--log-level.*fatal, error, warn, info, debug, trace, silent/);
});

test('credential fields are redacted as a second guard, at the top of a line and one level down', (t) => {
  const written: string[] = [];
  const log = captureLog(written).child({ component: 'agent' });
  log.warn({ token: 'pdk_top-secret', answer: { authorization: 'Bearer pdk_nested', privateKey: 'PEM' }, machine: 'm1' }, 'refused');
  const [line] = parseLogLines(written.join('\n'));
  t.like(line, { component: 'agent', machine: 'm1', token: '[redacted]', answer: { authorization: '[redacted]', privateKey: '[redacted]' }, msg: 'refused' });
  t.false(written.join('\n').includes('pdk_'));
});
