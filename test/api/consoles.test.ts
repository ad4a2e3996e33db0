// Console access through the API, driven as a hostile user would: the console route serves only the
// reservation's own machines (no path in `machine`, no other reservation's machine), and the
// console stream checks the token and the owner before anything is sent. The console logs are
// written where the agent writes them (DATA/consoles/RESERVATION/MACHINE.log).
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import test from 'ava';
import type { ReservationView } from '../../api/contract.js';
import { startApi, staticMachinesYaml, testConfig, type JsonClient, type TestApi } from '../helpers/api.js';
import { startSshd, type TestSshd } from '../helpers/sshd.js';

let api: TestApi;
let hosts: TestSshd[];
let alice: JsonClient;
let bob: JsonClient;
let aliceReservation: ReservationView;
let bobReservation: ReservationView;

test.before(async () => {
  hosts = await Promise.all([startSshd(), startSshd()]);
  api = await startApi(
    testConfig(
      staticMachinesYaml(hosts.map((host, index) => ({ name: `host-${index + 1}`, port: host.port, adminKeyPath: host.adminKey.path, authorizedKeysFile: host.authorizedKeysFile }))),
    ),
  );
  const token = async (name: string) => ((await api.http().post('v1/tokens', { json: { name, role: 'user' } })).body as { token: string }).token;
  alice = api.http(await token('alice'));
  bob = api.http(await token('bob'));
  const reserve = async (client: JsonClient) => {
    const created = (await client.post('v1/reservations', { json: { members: [{ role: 'host', spec: 'type=static-host' }] } })).body as ReservationView;
    return (await client.get(`v1/reservations/${created.id}`, { searchParams: { wait: 'ready', timeout: 30 } })).body as ReservationView;
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

test('the console route refuses paths and other reservations\' machines, and reads nothing', async (t) => {
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
    [`?machine=${other}`, 404],
    ['?machine=no-such-machine', 404],
  ];
  for (const [query, status] of hostile) {
    const answer = await consoleOf(alice, aliceReservation.id, query);
    t.is(answer.statusCode, status, query);
    t.is((answer.body as { code: string }).code, status === 400 ? 'invalid_request' : 'not_found', query);
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
});
