// Power and re-deploy during a lease on the test OpenStack (test/cloud: Nova with the fake driver),
// through the client library: a cycle is a HARD reboot of the same server (Nova's instance actions
// say so), off stops it (SHUTOFF) and the member is off until on starts it, and a re-deploy
// replaces the server with one of the new image. The fake driver's servers have no reachable
// address, so the pool is `ready: active`, as in openstack.test.ts.
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import test from 'ava';
import { Paddock } from '../../client/index.js';
import type { Server } from '../../provisioners/openstack/client.js';
import { startApi, testConfig, type TestApi } from '../helpers/api.js';
import { testCloud, testPoolYaml, type TestCloud } from '../helpers/cloud.js';
import { waitFor } from '../helpers/wait.js';

let cloud: TestCloud;
let api: TestApi;
let paddock: Paddock;
let dir: string;
const shas: string[] = [];

test.before(async (t) => {
  t.timeout(900_000);
  cloud = await testCloud();
  dir = mkdtempSync(path.join(os.tmpdir(), 'paddock-openstack-power-'));
  api = await startApi(testConfig(`machines:\n${testPoolYaml(cloud, 'cloud', ['activeTimeout: 120'])}\n`));
  paddock = new Paddock({ url: api.url, token: api.adminToken });
  // Small raw disk images: the fake driver never reads them, Glance stores and hashes them.
  for (const name of ['one', 'two']) {
    const bytes = randomBytes(128 * 1024);
    shas.push(createHash('sha256').update(bytes).digest('hex'));
    writeFileSync(path.join(dir, `${name}.raw`), bytes);
    await paddock.images.upload(path.join(dir, `${name}.raw`), { name, format: 'raw', arch: 'x86_64' });
  }
});

test.after.always(async () => {
  await api?.close();
  for (const sha of shas) for (const image of await cloud.user.images({ paddock_sha256: sha }).catch(() => [])) await cloud.user.deleteImage(image.id);
  if (dir) rmSync(dir, { recursive: true, force: true });
  await cloud?.release();
});

/** The actions Nova recorded on a server (`create`, `reboot`, `stop`, `start`, …), oldest first. */
async function instanceActions(server: string): Promise<string[]> {
  const token = await cloud.user.authenticate();
  const response = await fetch(`${await cloud.user.endpoint('compute')}/servers/${server}/os-instance-actions`, { headers: { 'X-Auth-Token': token.value } });
  const body = (await response.json()) as { instanceActions: { action: string; start_time: string }[] };
  return body.instanceActions.sort((a, b) => a.start_time.localeCompare(b.start_time)).map((entry) => entry.action);
}

const serversOf = async (id: string): Promise<Server[]> =>
  (await cloud.user.servers({ tags: `paddock-reservation:${id}` })).filter((server) => server.status !== 'DELETED');

test.serial('an OpenStack server is rebooted, stopped and started in place, and replaced by a re-deploy', async (t) => {
  t.timeout(900_000); // boots on a loaded machine
  const reservation = await paddock.reserve({ members: [{ role: 'vm', spec: 'arch=x86_64', image: 'one' }], lease: '10m' });
  await reservation.ready({ timeout: 300 });
  const [server] = await serversOf(reservation.id);

  const cycled = await reservation.power('vm', 'cycle');
  t.is(cycled.allocations[0].state, 'ready');
  t.deepEqual(
    (await serversOf(reservation.id)).map((each) => each.id),
    [server.id],
    'the same server',
  );
  t.true((await instanceActions(server.id)).includes('reboot'), 'Nova rebooted it');
  t.deepEqual(Object.keys(cycled.allocations[0].stages).sort(), ['addressKnown', 'bootSeen', 'powerConfirmed']);

  const off = await reservation.power('vm', 'off');
  t.is(off.allocations[0].state, 'off');
  t.is((await cloud.user.server(server.id))?.status, 'SHUTOFF');
  const on = await reservation.power('vm', 'on');
  t.is(on.allocations[0].state, 'ready');
  t.is((await cloud.user.server(server.id))?.status, 'ACTIVE');
  t.deepEqual((await instanceActions(server.id)).slice(-2), ['stop', 'start']);

  const booted = await reservation.boot('vm', 'two');
  t.is(booted.allocations[0].state, 'ready');
  const after = await serversOf(reservation.id);
  t.is(after.length, 1);
  t.not(after[0].id, server.id, 'a re-deploy is a new server of the new image');
  const glance = await cloud.user.images({ paddock_sha256: shas[1] });
  t.is(after[0].image && after[0].image.id, glance[0]?.id);

  const story = (await reservation.events()).filter((event) => event.type === 'action').map((event) => event.to);
  t.deepEqual(story, ['power cycle', 'power off', 'power on', 'boot two']);
  await reservation.release();
  await waitFor(async () => (await reservation.refresh()).state === 'released');
  t.deepEqual(await serversOf(reservation.id), [], 'no server is left');
});
