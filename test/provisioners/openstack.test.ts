// The `openstack` kind against a real OpenStack (test/cloud/up.sh: Keystone, Glance, Placement,
// Nova with the fake driver, Neutron, RabbitMQ on this machine). Servers of the fake driver go
// ACTIVE with an address nobody can reach, so the pool is `ready: active`; the SSH stage is the
// same code as the other kinds and is tested there. Serial: the tests share one project and its
// quota, and one `paddock serve` process (restarted by the kill -9 test).
import { execFile, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import test from 'ava';
import { Paddock, type Reservation } from '../../client/index.js';
import type { ImageListEntry } from '../../protocol/api.js';
import { Readable } from 'node:stream';
import { OpenStackClient, OpenStackError, type CloudOptions, type Server } from '../../provisioners/openstack/client.js';
import { breakCompute, setComputeHosts, setInstanceQuota, testCloud, type TestCloud } from '../helpers/cloud.js';
import { freePort } from '../helpers/ports.js';
import { killHard, startServerProcess } from '../helpers/server.js';
import { waitFor } from '../helpers/wait.js';

const run = promisify(execFile);
const bin = path.resolve(import.meta.dirname, '../../bin/paddock.js');

let cloud: TestCloud;
let dir: string;
let data: string;
let url: string;
let configFile: string;
let server: ChildProcess | undefined;
let paddock: Paddock;
let instance: string;
let imageSha: string;

function poolYaml(port: number, extra: { authUrl?: string; activeTimeout?: number; replaceAttempts?: number } = {}): string {
  return `
listen: 127.0.0.1:${port}
dataDir: data
agent: { sweepInterval: 2 }
# The provisioner's own replacements are under test here, not a move to another slot (test/api/retry.test.ts).
health: { retries: 0 }
machines:
  - name: cloud
    kind: openstack
    labels: { arch: x86_64 }
    settings:
      auth:
        authUrl: ${extra.authUrl ?? cloud.env.OS_AUTH_URL}
        username: paddock
        password: "${cloud.env.OS_PASSWORD}"
        project: paddock
      network: net1
      maxInstances: 4
      flavors: [m1.tiny, m1.small, m1.medium]
      ready: active
      pollInterval: 0.3
      watchInterval: 1
      activeTimeout: ${extra.activeTimeout ?? 60}
      replaceAttempts: ${extra.replaceAttempts ?? 3}
`;
}

const serverArgs = () => ['--config', configFile];

/** The servers of a reservation, as the paddock project's Nova lists them. */
const serversOf = (reservation: Reservation | string): Promise<Server[]> =>
  cloud.user.servers({ tags: `paddock-reservation:${typeof reservation === 'string' ? reservation : reservation.id}` });
/** Servers not yet gone: Nova may list a deleted server as DELETED for a moment, as Paddock's release knows. */
const liveServersOf = async (reservation: Reservation | string): Promise<Server[]> =>
  (await serversOf(reservation)).filter((server) => server.status !== 'DELETED');
const keypairsOf = async (reservationId: string) => (await cloud.user.keypairs()).filter((name) => name.includes(reservationId));

const reserve = (members: { role: string; spec: string; image?: string; count?: number }[]) =>
  paddock.reserve({ members: members.map((member) => ({ image: 'tiny-raw', ...member })), lease: '10m' }, { renew: false });

/** Releases and waits until the reservation has ended. */
async function releaseAll(...reservations: Reservation[]): Promise<void> {
  await Promise.all(reservations.map((reservation) => reservation.release()));
  await waitFor(
    async () =>
      (
        await Promise.all(reservations.map(async (reservation) => ['released', 'failed', 'cancelled', 'expired'].includes((await reservation.refresh()).state)))
      ).every(Boolean),
    120_000,
    'released',
  );
}

test.before(async () => {
  cloud = await testCloud();
  dir = mkdtempSync(path.join(os.tmpdir(), 'paddock-openstack-'));
  data = path.join(dir, 'data');
  const port = await freePort();
  url = `http://127.0.0.1:${port}`;
  configFile = path.join(dir, 'paddock.yaml');
  writeFileSync(configFile, poolYaml(port));
  server = await startServerProcess(serverArgs(), url);
  paddock = new Paddock({ url, token: readFileSync(path.join(data, 'admin-token'), 'utf8').trim() });
  // The agent's OpenStack provisioner gives this Paddock its id in the cloud when it is made.
  const instanceFile = path.join(data, 'openstack', 'instance');
  await waitFor(async () => existsSync(instanceFile), 120_000, 'the instance id');
  instance = readFileSync(instanceFile, 'utf8').trim();
  // A small raw disk image: the fake driver never reads it, Glance stores and hashes it.
  const file = path.join(dir, 'tiny.raw');
  const bytes = randomBytes(192 * 1024);
  imageSha = createHash('sha256').update(bytes).digest('hex');
  writeFileSync(file, bytes);
  await paddock.images.upload(file, { name: 'tiny-raw', format: 'raw' });
});

test.after.always(async () => {
  if (server) await killHard(server);
  await breakCompute(cloud, false).catch(() => undefined);
  await setInstanceQuota(cloud, 10).catch(() => undefined);
  // Whatever a failed test left behind in the cloud.
  for (const leftover of await cloud.user.servers({ tags: `paddock:${instance}` }).catch(() => [])) await cloud.user.deleteServer(leftover.id);
  for (const name of await cloud.user.keypairs().catch(() => [])) if (name.startsWith(`paddock-${instance}-`)) await cloud.user.deleteKeypair(name);
  for (const image of await cloud.user.images({ paddock_sha256: imageSha }).catch(() => [])) await cloud.user.deleteImage(image.id);
  rmSync(dir, { recursive: true, force: true });
  await cloud?.release();
});

test.serial('client: password and application-credential logins get a token and the catalog', async (t) => {
  const token = await cloud.user.authenticate();
  t.true(token.expiresAt > Date.now());
  t.regex(await cloud.user.endpoint('compute'), /^http:\/\/.+\/v2\.1/);
  t.regex(await cloud.user.endpoint('image'), /^http:\/\//);
  t.regex(await cloud.user.endpoint('network'), /^http:\/\//);
  const withSecret = new OpenStackClient({
    authUrl: cloud.options.authUrl,
    credentials: { kind: 'application', id: cloud.env.PADDOCK_TEST_APP_CRED_ID, secret: cloud.env.PADDOCK_TEST_APP_CRED_SECRET },
  });
  t.true((await withSecret.flavors()).length > 0);
});

test.serial('client: a wrong password is an unauthorized error that does not show it; a dead Keystone is unreachable', async (t) => {
  const password = `wrong-${randomBytes(6).toString('hex')}`;
  const bad = new OpenStackClient({
    ...cloud.options,
    credentials: { ...(cloud.options.credentials as Extract<CloudOptions['credentials'], { kind: 'password' }>), password },
  });
  const error = await t.throwsAsync(bad.flavors(), { instanceOf: OpenStackError });
  t.is(error?.kind, 'unauthorized');
  t.false(error?.message.includes(password));
  const dead = new OpenStackClient({ ...cloud.options, authUrl: 'http://127.0.0.1:9/v3' });
  const down = await t.throwsAsync(dead.flavors(), { instanceOf: OpenStackError });
  t.is(down?.kind, 'unreachable');
  t.regex(down?.message ?? '', /Keystone is unreachable/);
});

test.serial('client: Glance: an image is created, uploaded, found again by its sha256, and listed across pages', async (t) => {
  const bytes = randomBytes(256 * 1024);
  const sha512 = createHash('sha512').update(bytes).digest('hex');
  const image = await cloud.user.createImage({
    name: `paddock-test-${randomBytes(3).toString('hex')}`,
    disk_format: 'raw',
    container_format: 'bare',
    visibility: 'private',
  });
  t.teardown(() => cloud.user.call('image', 'DELETE', `/v2/images/${image.id}`).catch(() => undefined));
  await cloud.user.uploadImage(image.id, Readable.from(bytes));
  const stored = await cloud.user.image(image.id);
  t.is(stored?.status, 'active');
  t.is(stored?.size, bytes.length);
  t.is(stored?.os_hash_value, sha512, 'Glance hashed what was sent');
  const all = await cloud.user.images({ limit: '1' });
  t.true(all.length >= 2, 'more than one page was followed');
  t.true(all.some((each) => each.id === image.id));
});

test.serial('client: Nova: flavors, keypairs, a tagged server to ACTIVE with an address, listed by tag, deleted', async (t) => {
  const flavors = await cloud.user.flavors();
  const tiny = flavors.find((flavor) => flavor.name === 'm1.tiny');
  t.truthy(tiny);
  t.is(tiny?.vcpus, 1);
  const keyName = `paddock-test-${randomBytes(3).toString('hex')}`;
  await cloud.user.createKeypair(keyName, 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGb9ECWwBTBGl7dYLK6LzPGAbdUG4chd0q0lqQLRDsah paddock-test');
  t.true((await cloud.user.keypairs()).includes(keyName));
  const images = await cloud.user.images();
  const tag = `paddock-test-${randomBytes(3).toString('hex')}`;
  const created = await cloud.user.createServer({
    name: tag,
    flavorRef: tiny!.id,
    imageRef: images.find((image) => image.name === 'cirros-fake')!.id,
    key_name: keyName,
    networks: [{ uuid: cloud.env.PADDOCK_TEST_NETWORK_ID }],
    tags: [tag],
    metadata: { 'paddock-reservation': 'r-000000000000' },
  });
  let server = created;
  await waitFor(async () => {
    server = (await cloud.user.server(created.id))!;
    return server.status === 'ACTIVE' || server.status === 'ERROR';
  }, 120_000);
  t.is(server.status, 'ACTIVE', server.fault?.message);
  t.true(Object.values(server.addresses).flat().length > 0, 'an address is known');
  t.deepEqual(
    (await cloud.user.servers({ tags: tag })).map((each) => each.id),
    [created.id],
  );
  await cloud.user.deleteServer(created.id);
  await waitFor(async () => (await cloud.user.server(created.id)) === undefined, 120_000);
  await cloud.user.deleteKeypair(keyName);
  t.false((await cloud.user.keypairs()).includes(keyName));
  await t.notThrowsAsync(cloud.user.deleteServer(created.id), 'deleting twice is fine');
});

test.serial('the pool offers one machine per flavor and slot, sized by the flavor; a spec gets the smallest flavor that fits', async (t) => {
  const machines = await paddock.machines();
  const names = machines.map((machine) => machine.name);
  t.is(names.filter((name) => name.startsWith('cloud-')).length, 12, '3 flavors x 4 instances');
  const small = machines.find((machine) => machine.name === 'cloud-m1.small-1')!;
  t.deepEqual(small.capacities, { cpus: 1, ram: 2 * 1024 ** 3, disk: 10 * 1024 ** 3 });
  t.like(small.labels, { arch: 'x86_64', pool: 'cloud', flavor: 'm1.small', kind: 'openstack' });

  const tooBig = await t.throwsAsync(reserve([{ role: 'vm', spec: 'cpus>=1', count: 5 }]));
  t.regex(tooBig?.message ?? '', /cloud runs at most 4/);
});

test.serial("images: the cloud's bootable images are listed beside Paddock's, marked by origin (API and CLI)", async (t) => {
  const listed: ImageListEntry[] = await paddock.images.list();
  const own = listed.find((image) => image.ref === 'tiny-raw:latest');
  t.is(own?.origin, 'paddock');
  const cirros = listed.find((image) => image.ref === 'cloud/cirros-fake');
  t.is(cirros?.origin, 'openstack');
  t.is(cirros?.origin === 'openstack' ? cirros.id : undefined, cloud.env.PADDOCK_TEST_IMAGE_ID);
  t.deepEqual(
    (await paddock.images.list({ origin: 'paddock' })).map((image) => image.origin),
    ['paddock'],
  );

  const env = { ...process.env, PADDOCK_URL: url, PADDOCK_TOKEN: readFileSync(path.join(data, 'admin-token'), 'utf8').trim() };
  const { stdout } = await run(process.execPath, [bin, 'images', 'ls'], { env });
  t.regex(stdout, /tiny-raw:latest\s+paddock\s+raw/);
  t.regex(stdout, /cloud\/cirros-fake\s+openstack\s+raw/);
});

test.serial('a Paddock image is uploaded to Glance once, found again by its sha256, and booted; a cloud image boots by POOL/NAME', async (t) => {
  const first = await reserve([{ role: 'vm', spec: 'cpus>=1' }]);
  await first.ready({ timeout: 300 });
  const [allocation] = first.view.allocations;
  t.is(allocation.machine, 'cloud-m1.tiny-1', 'the smallest flavor');
  t.truthy(allocation.stages.bootSeen);
  t.truthy(allocation.stages.addressKnown);
  t.regex(allocation.host ?? '', /^10\.99\.0\.\d+$/, 'the address on net1');
  const glance = await cloud.user.images({ paddock_sha256: imageSha });
  t.is(glance.length, 1);
  t.is(glance[0].status, 'active');
  const [vm] = await serversOf(first);
  t.is(vm.status, 'ACTIVE');
  t.true(vm.tags?.includes(`paddock-reservation:${first.id}`));
  t.true(vm.tags?.includes(`paddock:${instance}`));

  const second = await reserve([{ role: 'vm', spec: 'cpus>=1' }]);
  const fromCloud = await reserve([{ role: 'vm', spec: 'cpus>=1', image: 'cloud/cirros-fake' }]);
  await Promise.all([second.ready({ timeout: 300 }), fromCloud.ready({ timeout: 300 })]);
  t.is((await cloud.user.images({ paddock_sha256: imageSha })).length, 1, 'the second reservation reused the upload');
  t.is((await cloud.user.server((await serversOf(fromCloud))[0].id)) !== undefined, true);
  const cloudImage = await cloud.user.call<{ server: { image: { id: string } } }>('compute', 'GET', `/servers/${(await serversOf(fromCloud))[0].id}`);
  t.is(cloudImage.server.image.id, cloud.env.PADDOCK_TEST_IMAGE_ID);
  await releaseAll(first, second, fromCloud);
});

test.serial('a gang of three VMs of different flavors; release leaves no server and no keypair', async (t) => {
  const gang = await reserve([
    { role: 'small', spec: 'ram<=512MiB' },
    { role: 'medium', spec: 'ram>=2GiB ram<4GiB' },
    { role: 'large', spec: 'cpus>=2' },
  ]);
  await gang.ready({ timeout: 300 });
  const byRole = Object.fromEntries(gang.view.allocations.map((allocation) => [allocation.role, allocation.machine]));
  t.deepEqual(byRole, { small: 'cloud-m1.tiny-1', medium: 'cloud-m1.small-1', large: 'cloud-m1.medium-1' });
  const servers = await serversOf(gang);
  t.deepEqual(servers.map((each) => each.flavor?.original_name).sort(), ['m1.medium', 'm1.small', 'm1.tiny']);
  t.true(servers.every((each) => each.status === 'ACTIVE'));
  t.is((await keypairsOf(gang.id)).length, 3, 'one keypair per machine');

  await releaseAll(gang);
  t.is(gang.view.state, 'released');
  t.deepEqual(await liveServersOf(gang), [], 'no server is left');
  t.deepEqual(await keypairsOf(gang.id), [], 'no keypair is left');
  for (const each of servers) t.is(await cloud.user.server(each.id), undefined, `server ${each.id} is gone`);
});

test.serial('a ready server deleted outside Paddock fails its reservation (machine_lost), and nothing is left', async (t) => {
  const reservation = await reserve([{ role: 'vm', spec: 'cpus>=1' }]);
  await reservation.ready({ timeout: 300 });
  const [vm] = await serversOf(reservation);
  await cloud.user.deleteServer(vm.id);
  await waitFor(async () => (await reservation.refresh()).state === 'failed', 120_000, 'failed');
  const failure = reservation.view.allocations[0].failure;
  t.is(failure?.code, 'machine_lost');
  t.regex(failure?.reason ?? '', new RegExp(`server ${vm.id} was deleted outside Paddock`));
  await waitFor(async () => (await keypairsOf(reservation.id)).length === 0, 120_000, 'keypair gone');
  t.deepEqual(await liveServersOf(reservation), []);
});

test.serial('a server that goes to ERROR is deleted and replaced by a new one', async (t) => {
  await breakCompute(cloud, true);
  const errored = new Set<string>();
  let reservation: Reservation | undefined;
  try {
    reservation = await reserve([{ role: 'vm', spec: 'cpus>=1' }]);
    // Once the first server has gone to ERROR, new builds go to the working host again.
    await waitFor(
      async () => {
        for (const each of await serversOf(reservation!)) if (each.status === 'ERROR') errored.add(each.id);
        return errored.size > 0;
      },
      120_000,
      'a server in ERROR',
    );
  } finally {
    await breakCompute(cloud, false);
  }
  await reservation.ready({ timeout: 300 });
  const now = await serversOf(reservation);
  t.is(now.length, 1);
  t.is(now[0].status, 'ACTIVE');
  t.false(errored.has(now[0].id), 'the ready server is a new one');
  for (const id of errored) t.is(await cloud.user.server(id), undefined, `the server in ERROR (${id}) was deleted`);
  await releaseAll(reservation);
  t.deepEqual(await liveServersOf(reservation), []);
});

test.serial("servers that keep going to ERROR: after the retries the reservation fails with the cloud's reason, and no server is left", async (t) => {
  await breakCompute(cloud, true);
  let reservation: Reservation | undefined;
  try {
    reservation = await reserve([{ role: 'vm', spec: 'cpus>=1' }]);
    await waitFor(async () => (await reservation!.refresh()).state === 'failed', 120_000, 'failed');
  } finally {
    await breakCompute(cloud, false);
  }
  const failure = reservation.view.allocations[0].failure;
  t.is(failure?.code, 'cloud_error');
  t.is(failure?.fault, 'infrastructure');
  t.regex(failure?.reason ?? '', /no server became ACTIVE in 4 tries; last: went to ERROR: .*(abort|Build)/i);
  await waitFor(async () => (await serversOf(reservation!)).length === 0, 120_000, 'no server left');
  t.deepEqual(await keypairsOf(reservation.id), []);
});

test.serial('a full cloud (instance quota 2) queues the third request, which is granted when one is released', async (t) => {
  await setInstanceQuota(cloud, 2);
  try {
    const a = await reserve([{ role: 'vm', spec: 'cpus>=1' }]);
    const b = await reserve([{ role: 'vm', spec: 'cpus>=1' }]);
    await Promise.all([a.ready({ timeout: 300 }), b.ready({ timeout: 300 })]);
    const c = await reserve([{ role: 'vm', spec: 'cpus>=1' }]);
    // Paddock's own limit (4) lets it try; Nova refuses (quota), and the request waits again.
    await waitFor(
      async () => (await c.events()).some((event) => event.type === 'state' && event.from === 'releasing' && event.to === 'queued'),
      120_000,
      'requeued',
    );
    const view = await c.refresh();
    t.is(view.state, 'queued');
    t.deepEqual(view.allocations, []);
    t.regex(view.reason ?? '', /cloud is full.*[Qq]uota/);
    t.deepEqual(await serversOf(c), [], 'no server was left by the refused attempt');

    await a.release();
    await c.ready({ timeout: 300 });
    t.is((await serversOf(c)).length, 1);
    await releaseAll(a, b, c);
  } finally {
    await setInstanceQuota(cloud, 10);
  }
});

test.serial('no valid host (every compute host disabled) queues the request; it is granted once the cloud has room again', async (t) => {
  await setComputeHosts(cloud, { working: false, broken: false });
  let reservation: Reservation | undefined;
  try {
    reservation = await reserve([{ role: 'vm', spec: 'cpus>=1' }]);
    await waitFor(
      async () => (await reservation!.events()).some((event) => event.type === 'state' && event.from === 'releasing' && event.to === 'queued'),
      120_000,
      'requeued',
    );
    const view = await reservation.refresh();
    t.is(view.state, 'queued');
    t.regex(view.reason ?? '', /cloud is full: went to ERROR: No valid host/);
    t.deepEqual(await serversOf(reservation), [], 'the server in ERROR was deleted');
  } finally {
    await setComputeHosts(cloud, { working: true, broken: false });
  }
  // Retried after the hold (15 s), as no reservation gave machines back meanwhile.
  await reservation.ready({ timeout: 300 });
  t.is((await serversOf(reservation)).length, 1);
  t.is(reservation.view.allocations[0].failure, undefined);
  await releaseAll(reservation);
});

/** A second `paddock serve` with its own data directory (holding the flavors the first one saved). */
async function secondPaddock(extra: Parameters<typeof poolYaml>[1]): Promise<{ client: Paddock; stop(): Promise<void> }> {
  const secondDir = mkdtempSync(path.join(os.tmpdir(), 'paddock-openstack-second-'));
  const port = await freePort();
  const secondUrl = `http://127.0.0.1:${port}`;
  mkdirSync(path.join(secondDir, 'data', 'openstack'), { recursive: true });
  copyFileSync(path.join(data, 'openstack', 'cloud.flavors.json'), path.join(secondDir, 'data', 'openstack', 'cloud.flavors.json'));
  const secondConfig = path.join(secondDir, 'paddock.yaml');
  writeFileSync(secondConfig, poolYaml(port, extra));
  const child = await startServerProcess(['--config', secondConfig], secondUrl);
  return {
    client: new Paddock({ url: secondUrl, token: readFileSync(path.join(secondDir, 'data', 'admin-token'), 'utf8').trim() }),
    stop: async () => {
      await killHard(child);
      rmSync(secondDir, { recursive: true, force: true });
    },
  };
}

test.serial("a server that is not ACTIVE in time (the cloud's conductor is stopped) is deleted; after the retries the reservation fails", async (t) => {
  const second = await secondPaddock({ activeTimeout: 2, replaceAttempts: 1 });
  // The conductor schedules new servers: stopped, they stay in BUILD.
  const [group] = readFileSync(path.join(cloud.env.PADDOCK_TEST_CLOUD_DIR, 'pids', 'nova-conductor.pid'), 'utf8')
    .trim()
    .split(' ');
  process.kill(-Number(group), 'SIGSTOP');
  let reservation: Reservation | undefined;
  const seen = new Set<string>();
  try {
    reservation = await second.client.reserve({ members: [{ role: 'vm', spec: 'cpus>=1', image: 'cloud/cirros-fake' }], lease: '10m' }, { renew: false });
    await waitFor(
      async () => {
        for (const each of await serversOf(reservation!)) seen.add(each.id);
        return (await reservation!.refresh()).state === 'failed';
      },
      120_000,
      'failed',
    );
  } finally {
    process.kill(-Number(group), 'SIGCONT');
  }
  try {
    const failure = reservation.view.allocations[0].failure;
    t.is(failure?.code, 'cloud_error');
    t.regex(failure?.reason ?? '', /no server became ACTIVE in 2 tries; last: was not ACTIVE within 2s \(still BUILD\)/);
    t.true(seen.size >= 1, 'servers were made');
    await waitFor(async () => (await serversOf(reservation!)).length === 0, 120_000, 'no server left');
    for (const id of seen) t.is(await cloud.user.server(id), undefined, `server ${id} is gone`);
  } finally {
    await second.stop();
  }
});

test.serial('Keystone down: a clear infrastructure error, nothing leaked, no secret shown', async (t) => {
  // A second Paddock whose pool points at a Keystone that does not answer; its flavors come from
  // the copy the first one saved.
  const second = await secondPaddock({ authUrl: `http://127.0.0.1:${await freePort()}/v3` });
  try {
    const client = second.client;
    const reservation = await client.reserve({ members: [{ role: 'vm', spec: 'cpus>=1', image: 'cloud/cirros-fake' }], lease: '10m' }, { renew: false });
    await waitFor(async () => (await reservation.refresh()).state === 'failed', 120_000, 'failed');
    const failure = reservation.view.allocations[0].failure;
    t.is(failure?.code, 'cloud_unreachable');
    t.is(failure?.fault, 'infrastructure');
    t.regex(failure?.reason ?? '', /Keystone is unreachable/);
    t.false(JSON.stringify(reservation.view).includes(cloud.env.OS_PASSWORD), 'the password is not shown');
    const machine = (await client.machines()).find((each) => each.name === reservation.view.allocations[0].machine);
    t.is(machine?.failures ?? 0, 0, "a dead Keystone is not the machine's fault");
  } finally {
    await second.stop();
  }
});

test.serial(
  'kill -9 with servers up, restart: servers carried on, orphans deleted (at start, and by the sweep after two sightings), nothing leaks',
  async (t) => {
    const kept = await reserve([
      { role: 'a', spec: 'ram<=512MiB' },
      { role: 'b', spec: 'cpus>=2' },
    ]);
    await kept.ready({ timeout: 300 });
    const before = (await serversOf(kept)).map((each) => each.id).sort();
    t.is(before.length, 2);

    await killHard(server!);
    // What a crash between the cloud's answer and the database write would leave: a server and a
    // keypair of a reservation Paddock no longer has.
    const orphan = 'r-0000000000bb';
    const orphanKey = `paddock-${instance}-${orphan}-cloud-m1_tiny-4`;
    await cloud.user.createKeypair(orphanKey, 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGb9ECWwBTBGl7dYLK6LzPGAbdUG4chd0q0lqQLRDsah orphan');
    const planted = await cloud.user.createServer({
      name: `paddock-${orphan}-cloud-m1.tiny-4`,
      flavorRef: '1',
      imageRef: cloud.env.PADDOCK_TEST_IMAGE_ID,
      networks: [{ uuid: cloud.env.PADDOCK_TEST_NETWORK_ID }],
      tags: [`paddock:${instance}`, `paddock-reservation:${orphan}`],
      metadata: { paddock_reservation: orphan, paddock_allocation: `${orphan}.0`, paddock_machine: 'cloud-m1.tiny-4', paddock_instance: instance },
    });

    server = await startServerProcess(serverArgs(), url);
    await waitFor(
      async () => (await cloud.user.server(planted.id)) === undefined && !(await cloud.user.keypairs()).includes(orphanKey),
      120_000,
      'the orphan server and keypair deleted',
    );
    t.is(await cloud.user.server(planted.id), undefined, 'the orphan server is deleted');
    t.false((await cloud.user.keypairs()).includes(orphanKey), 'the orphan keypair is deleted');
    t.is((await kept.refresh()).state, 'ready', 'the live reservation carries on');
    t.deepEqual((await serversOf(kept)).map((each) => each.id).sort(), before, 'on the same servers');

    // While running: an orphan appears; the periodic sweep (every 2 s) deletes it once it has seen it twice.
    const later = await cloud.user.createServer({
      name: 'paddock-r-0000000000cc-cloud-m1.tiny-4',
      flavorRef: '1',
      imageRef: cloud.env.PADDOCK_TEST_IMAGE_ID,
      networks: [{ uuid: cloud.env.PADDOCK_TEST_NETWORK_ID }],
      tags: [`paddock:${instance}`, 'paddock-reservation:r-0000000000cc'],
      metadata: { paddock_reservation: 'r-0000000000cc', paddock_machine: 'cloud-m1.tiny-4', paddock_instance: instance },
    });
    await waitFor(async () => (await cloud.user.server(later.id)) === undefined, 120_000, 'the later orphan deleted');

    await releaseAll(kept);
    t.deepEqual(await cloud.user.servers({ tags: `paddock:${instance}` }), [], 'no server of this Paddock is left');
    t.deepEqual(
      (await cloud.user.keypairs()).filter((name) => name.startsWith(`paddock-${instance}-`)),
      [],
      'no keypair is left',
    );
  },
);

test.serial('the Glance copy of an image Paddock no longer stores is deleted by the sweep; copies still stored are kept', async (t) => {
  const file = path.join(dir, 'gone.raw');
  const bytes = randomBytes(64 * 1024);
  const sha256 = createHash('sha256').update(bytes).digest('hex');
  writeFileSync(file, bytes);
  await paddock.images.upload(file, { name: 'gone-raw', format: 'raw' });
  const reservation = await reserve([{ role: 'vm', spec: 'cpus>=1', image: 'gone-raw' }]);
  await reservation.ready({ timeout: 300 });
  const [copy] = await cloud.user.images({ paddock_sha256: sha256 });
  t.is(copy?.status, 'active');
  await releaseAll(reservation);

  await paddock.images.remove('gone-raw');
  await waitFor(async () => (await cloud.user.image(copy.id)) === undefined, 120_000, 'the Glance copy deleted');
  t.is(await cloud.user.image(copy.id), undefined);
  t.is((await cloud.user.images({ paddock_sha256: imageSha })).length, 1, 'the copy of an image Paddock still stores stays');
});
