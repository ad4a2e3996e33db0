// cloud-init user data on the test OpenStack (test/cloud/up.sh: real Keystone, Glance, Nova with the
// fake driver, Neutron): a pool with `keys: userdata`, and a keypair pool booting an image uploaded
// with access `cloud-init`. What the server got is read back from Nova as its admin sees it
// (`OS-EXT-SRV-ATTR:user_data`, base64, microversion 2.3 or later). The fake driver's servers cannot
// be reached, so the pools are `ready: active`; the readiness host key is the one the user data gave.
import type { ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import test from 'ava';
import { parse } from 'yaml';
import { Paddock, type Reservation } from '../../client/index.js';
import { normalizeKeyLine } from '../../protocol/ssh-keys.js';
import { testCloud, testPoolYaml, type TestCloud } from '../helpers/cloud.js';
import { freePort } from '../helpers/ports.js';
import { killHard, startServerProcess } from '../helpers/server.js';
import { waitFor } from '../helpers/wait.js';

let cloud: TestCloud;
let dir: string;
let server: ChildProcess | undefined;
let paddock: Paddock;
let instance: string;
const shas: string[] = [];

const pool = (name: string, keys: 'userdata' | 'keypair') => `\n${testPoolYaml(cloud, name, [`keys: ${keys}`])}`;

test.before(async () => {
  cloud = await testCloud();
  dir = mkdtempSync(path.join(os.tmpdir(), 'paddock-openstack-userdata-'));
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const configFile = path.join(dir, 'paddock.yaml');
  writeFileSync(configFile, `listen: 127.0.0.1:${port}\ndataDir: data\nmachines:${pool('ud', 'userdata')}${pool('kp', 'keypair')}\n`);
  server = await startServerProcess(['--config', configFile], url);
  paddock = new Paddock({ url, token: readFileSync(path.join(dir, 'data', 'admin-token'), 'utf8').trim() });
  const instanceFile = path.join(dir, 'data', 'openstack', 'instance');
  await waitFor(async () => existsSync(instanceFile), 120_000, 'the instance id');
  instance = readFileSync(instanceFile, 'utf8').trim();
  // Small raw disks: the fake driver never reads them, Glance stores them.
  for (const [name, access] of [
    ['plain-raw', 'hook'],
    ['cloud-raw', 'cloud-init'],
  ] as const) {
    const bytes = randomBytes(128 * 1024);
    shas.push(createHash('sha256').update(bytes).digest('hex'));
    const file = path.join(dir, `${name}.raw`);
    writeFileSync(file, bytes);
    await paddock.images.upload(file, { name, format: 'raw', access });
  }
});

test.after.always(async () => {
  if (server) await killHard(server);
  for (const leftover of await cloud.user.servers({ tags: `paddock:${instance}` }).catch(() => [])) await cloud.user.deleteServer(leftover.id);
  for (const name of await cloud.user.keypairs().catch(() => [])) if (name.startsWith(`paddock-${instance}-`)) await cloud.user.deleteKeypair(name);
  for (const sha256 of shas) for (const image of await cloud.user.images({ paddock_sha256: sha256 }).catch(() => [])) await cloud.user.deleteImage(image.id);
  if (dir) rmSync(dir, { recursive: true, force: true });
  await cloud?.release();
});

interface NovaServer {
  id: string;
  key_name: string | null;
  'OS-EXT-SRV-ATTR:user_data': string | null;
}

/** The reservation's server as the cloud admin sees it (with its user data). */
async function serverOf(reservation: Reservation): Promise<NovaServer> {
  const [listed] = await cloud.user.servers({ tags: `paddock-reservation:${reservation.id}` });
  const { server: full } = await cloud.admin.call<{ server: NovaServer }>('compute', 'GET', `/servers/${listed.id}`);
  return full;
}

interface CloudConfig {
  disable_root: boolean;
  ssh_authorized_keys: string[];
  ssh_keys: { ed25519_private: string; ed25519_public: string };
  ssh_deletekeys: boolean;
}

const userDataOf = (server: NovaServer): { text: string; config: CloudConfig } => {
  const text = Buffer.from(server['OS-EXT-SRV-ATTR:user_data'] ?? '', 'base64').toString('utf8');
  return { text, config: parse(text) as CloudConfig };
};

async function reserveReady(spec: string, image: string): Promise<Reservation> {
  const reservation = await paddock.reserve({ members: [{ role: 'vm', spec, image }], lease: '10m' }, { renew: false });
  await reservation.ready({ timeout: 300 });
  return reservation;
}

async function release(reservation: Reservation): Promise<void> {
  await reservation.release();
  await waitFor(async () => (await reservation.refresh()).state === 'released', 120_000, 'released');
}

test.serial('keys: userdata: the server gets a cloud-config with the key and a host key of its own, pinned at readiness', async (t) => {
  const first = await reserveReady('pool=ud', 'plain-raw');
  const second = await reserveReady('pool=ud', 'plain-raw');
  t.teardown(() => Promise.all([first, second].map((each) => each.release().catch(() => undefined))));

  const views = [];
  for (const reservation of [first, second]) {
    const server = await serverOf(reservation);
    t.is(server.key_name, null, 'no Nova keypair: the key goes in the user data only');
    const { text, config } = userDataOf(server);
    t.true(text.startsWith('#cloud-config\n'));
    const credentials = await reservation.credentials();
    t.deepEqual(config.ssh_authorized_keys, [credentials.publicKey.trim()]);
    t.false(config.disable_root, 'the key works for root too, whatever the image calls its default user');
    t.true(config.ssh_deletekeys);
    t.regex(config.ssh_keys.ed25519_private, /^-----BEGIN OPENSSH PRIVATE KEY-----\n/);
    const hostKey = reservation.view.allocations[0].hostKey ?? '';
    t.is(normalizeKeyLine(hostKey), normalizeKeyLine(config.ssh_keys.ed25519_public), 'readiness reports the host key the user data gave');
    t.true(credentials.knownHosts.includes(normalizeKeyLine(hostKey)), 'and clients pin it');
    views.push({ authorized: config.ssh_authorized_keys[0], hostKey: normalizeKeyLine(hostKey), text });
  }
  t.not(views[0].authorized, views[1].authorized);
  t.not(views[0].hostKey, views[1].hostKey, 'every reservation gets its own host key');
  t.false(views[1].text.includes(views[0].hostKey), "the second server's user data holds nothing of the first's");

  await Promise.all([release(first), release(second)]);
  t.deepEqual(await cloud.user.servers({ tags: `paddock-reservation:${first.id}` }).then((list) => list.filter((each) => each.status !== 'DELETED')), []);
});

test.serial('a keypair pool booting an image uploaded with access cloud-init: the keypair and the user data both', async (t) => {
  const reservation = await reserveReady('pool=kp', 'cloud-raw');
  t.teardown(() => reservation.release().catch(() => undefined));
  const server = await serverOf(reservation);
  t.truthy(server.key_name, 'the keypair as for any image');
  const { config } = userDataOf(server);
  const credentials = await reservation.credentials();
  t.deepEqual(config.ssh_authorized_keys, [credentials.publicKey.trim()]);
  t.is(normalizeKeyLine(reservation.view.allocations[0].hostKey ?? ''), normalizeKeyLine(config.ssh_keys.ed25519_public));

  const plain = await reserveReady('pool=kp', 'plain-raw');
  t.teardown(() => plain.release().catch(() => undefined));
  t.is((await serverOf(plain))['OS-EXT-SRV-ATTR:user_data'], null, 'a hook image on a keypair pool gets no user data, as before');
  t.is(plain.view.allocations[0].hostKey, undefined);
  await Promise.all([release(reservation), release(plain)]);
});
