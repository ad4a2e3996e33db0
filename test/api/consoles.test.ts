// Console access through the API, driven as a hostile user would: the console route serves only the
// reservation's own machines (no path in `machine`, no other reservation's machine), and the
// console stream checks the token and the owner before anything is sent. The console logs are
// written where the API keeps what lab hosts send (DATA/consoles/RESERVATION/MACHINE.log).
import { appendFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import test from 'ava';
import WebSocket from 'ws';
import type { ReservationView } from '../../protocol/api.js';
import { startApi, staticMachinesYaml, testConfig, type JsonClient, type TestApi } from '../helpers/api.js';
import { startSshd, type TestSshd } from '../helpers/sshd.js';
import { waitFor } from '../helpers/wait.js';

let api: TestApi;
let hosts: TestSshd[];
let alice: JsonClient;
let bob: JsonClient;
let aliceReservation: ReservationView;
let bobReservation: ReservationView;

test.before(async () => {
  hosts = await Promise.all([startSshd(), startSshd(), startSshd()]);
  api = await startApi(
    testConfig(
      staticMachinesYaml(
        hosts.map((host, index) => ({
          name: `host-${index + 1}`,
          port: host.port,
          adminKeyPath: host.adminKey.path,
          authorizedKeysFile: host.authorizedKeysFile,
        })),
      ),
    ),
  );
  const token = async (name: string) => ((await api.http().post('v1/tokens', { json: { name, role: 'user' } })).body as { token: string }).token;
  alice = api.http(await token('alice'));
  bob = api.http(await token('bob'));
  const reserve = async (client: JsonClient) => {
    const created = (await client.post('v1/reservations', { json: { members: [{ role: 'host', spec: 'type=static-host' }] } })).body as ReservationView;
    return (await client.get(`v1/reservations/${created.id}`, { searchParams: { wait: 'ready', timeout: 300 } })).body as ReservationView;
  };
  aliceReservation = await reserve(alice);
  bobReservation = await reserve(bob);
  // What the agent would have written, plus files a path could reach.
  const log = (reservation: ReservationView, text: string) => {
    const dir = path.join(api.dataDir, 'consoles', reservation.id);
    mkdirSync(dir, { recursive: true });
    writeFileSync(path.join(dir, `${reservation.allocations[0].machine}.log`), text);
  };
  log(aliceReservation, 'alice console: login ok\n');
  log(bobReservation, 'bob console: BOB-PRIVATE-OUTPUT\n');
  writeFileSync(path.join(api.dataDir, 'consoles', 'x.log'), 'SYSTEM-PRIVATE-LOG\n');
  writeFileSync(path.join(api.dataDir, 'secret.log'), 'SYSTEM-PRIVATE-LOG\n');
});

test.after.always(async () => {
  await api?.close();
  await Promise.all((hosts ?? []).map((host) => host.stop()));
});

const consoleOf = (client: JsonClient, id: string, query: string) => client.get(`v1/reservations/${id}/console${query}`);

test("the console route refuses paths and other reservations' machines, and reads nothing", async (t) => {
  const own = aliceReservation.allocations[0].machine;
  const other = bobReservation.allocations[0].machine;
  t.not(own, other);
  const hostile: [string, number][] = [
    ['?machine=../x', 400],
    ['?machine=../../secret', 400],
    ['?follow=1&machine=../x', 400],
    ['?follow=1&machine=../../secret', 400],
    [`?follow=1&machine=../${bobReservation.id}/${other}`, 400],
    [`?machine=..%2F${bobReservation.id}%2F${other}`, 400],
    ['?machine=%2Fetc%2Fpasswd', 400],
    [`?machine=${own}%00`, 400],
    [`?machine=${own}&machine=${other}`, 400],
    ['?machine=', 400],
    ['?offset=-1', 400],
    ['?offset=1e3', 400],
    ['?offset=12345678901234567890', 400],
    [`?machine=${other}`, 404],
    ['?machine=no-such-machine', 404],
  ];
  for (const [query, status] of hostile) {
    const answer = await consoleOf(alice, aliceReservation.id, query);
    t.is(answer.statusCode, status, query);
    t.is((answer.body as { code: string }).code, status === 400 ? 'invalid_parameter' : 'not_found', query);
    t.notRegex(JSON.stringify(answer.body), /PRIVATE/, query);
  }
  // Another user's reservation, with or without a machine.
  for (const query of ['', `?machine=${other}`, '?machine=../x']) {
    const answer = await consoleOf(alice, bobReservation.id, query);
    t.true(answer.statusCode === 403 || answer.statusCode === 400, `${query}: ${answer.statusCode}`);
    t.notRegex(JSON.stringify(answer.body), /PRIVATE/);
  }
  // The owners still read their own consoles.
  t.is((await consoleOf(alice, aliceReservation.id, `?machine=${own}`)).body, 'alice console: login ok\n');
  t.is((await consoleOf(alice, aliceReservation.id, '')).body, 'alice console: login ok\n');
  t.is((await consoleOf(bob, bobReservation.id, '')).body, 'bob console: BOB-PRIVATE-OUTPUT\n');
  // A follower whose connection broke asks from where it stopped; the answer names the machine.
  const resumed = await consoleOf(alice, aliceReservation.id, '?offset=6');
  t.is(resumed.body, 'console: login ok\n');
});

/** Opens the console stream as any WebSocket client would; resolves with the socket or the refusal. */
function stream(
  id: string,
  query: string,
  headers: Record<string, string>,
): Promise<{ socket?: WebSocket; status?: number; body?: string; received: string[]; modes: string[] }> {
  return new Promise((resolve) => {
    const socket = new WebSocket(`${api.url.replace('http', 'ws')}/v1/reservations/${id}/console/stream${query}`, { headers });
    const received: string[] = [];
    const modes: string[] = [];
    socket.on('message', (data: Buffer, binary: boolean) =>
      binary ? received.push(data.toString()) : modes.push((JSON.parse(data.toString()) as { mode: string }).mode),
    );
    socket.once('open', () => resolve({ socket, received, modes }));
    socket.once('unexpected-response', (_request, response) => {
      let body = '';
      response.on('data', (chunk: Buffer) => (body += chunk.toString()));
      response.on('end', () => resolve({ status: response.statusCode, body, received, modes }));
    });
    socket.once('error', () => undefined);
  });
}

test('the console stream checks the token, the owner and the machine before it opens', async (t) => {
  const tokens = await Promise.all(
    ['carol', 'dave'].map(async (name) => ((await api.http().post('v1/tokens', { json: { name, role: 'user' } })).body as { token: string }).token),
  );
  const [carol, dave] = tokens;
  const carolClient = api.http(carol);
  const created = (await carolClient.post('v1/reservations', { json: { members: [{ role: 'host', spec: 'type=static-host' }] } })).body as ReservationView;
  const ready = (await carolClient.get(`v1/reservations/${created.id}`, { searchParams: { wait: 'ready', timeout: 300 } })).body as ReservationView;
  if (ready.state !== 'ready') return t.fail(`carol's reservation is ${ready.state}: ${JSON.stringify(ready)}\n${api.logs.slice(-30).join('\n')}`);
  const bearer = (token: string) => ({ authorization: `Bearer ${token}` });
  const cases: [string, string, Record<string, string>, number, string][] = [
    ['no token', '', {}, 401, 'unauthorized'],
    ['a wrong token', '', bearer('pdk_nope'), 401, 'unauthorized'],
    ["another user's token", '', bearer(dave), 403, 'forbidden'],
    ["another user's token asking to type", '?mode=write&takeover=1', bearer(dave), 403, 'forbidden'],
    ['the token in the URL', `?token=${carol}`, {}, 400, 'invalid_parameter'],
    ['a path as machine', '?machine=../../secret', bearer(carol), 400, 'invalid_parameter'],
    ["another reservation's machine", `?machine=${bobReservation.allocations[0].machine}`, bearer(carol), 404, 'not_found'],
    ['an unknown parameter', '?follow=1', bearer(carol), 400, 'invalid_parameter'],
    ['a bad mode', '?mode=admin', bearer(carol), 400, 'invalid_parameter'],
    ["the admin asking to type at a user's console", '?mode=write', bearer(api.adminToken), 403, 'forbidden'],
    ['typing at a console that is only a log', '?mode=write', bearer(carol), 409, 'console_read_only'],
  ];
  for (const [what, query, headers, status, code] of cases) {
    const answer = await stream(created.id, query, headers);
    t.is(answer.socket, undefined, what);
    t.is(answer.status, status, what);
    t.regex(answer.body ?? '', new RegExp(`"code":"${code}"`), what);
    t.false((answer.body ?? '').includes(carol), `${what}: no token in the answer`);
  }
  t.is((await stream('r-000000000000', '', bearer(carol))).status, 404);
  t.is((await carolClient.get(`v1/reservations/${created.id}/console/stream`)).statusCode, 426, 'a plain GET is told to upgrade');

  // The owner watches a machine whose console is a log: what is appended arrives, then the stream
  // ends with the reservation.
  const log = path.join(api.dataDir, 'consoles', created.id, `${ready.allocations[0].machine}.log`);
  mkdirSync(path.dirname(log), { recursive: true });
  writeFileSync(log, 'before the stream\n');
  const watch = await stream(created.id, '', bearer(carol));
  t.truthy(watch.socket);
  const { received, modes } = watch;
  const closed = new Promise((resolve) => watch.socket!.once('close', resolve));
  await waitFor(async () => modes.length > 0, 120_000, 'the mode message');
  t.deepEqual(modes, ['read']);
  appendFileSync(log, 'LIVE-LINE\n');
  await waitFor(async () => received.join('').includes('LIVE-LINE'), 120_000, 'the appended line');
  t.false(received.join('').includes('before the stream'), 'the stream starts where the log stands');
  watch.socket!.send(Buffer.from('typed\n'));
  await carolClient.delete(`v1/reservations/${created.id}`);
  await closed;
  t.false(readFileSync(log, 'utf8').includes('typed'), 'a watcher types nothing');
});
