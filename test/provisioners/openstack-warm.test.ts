// Warm pools of an OpenStack pool on the test cloud (test/cloud/up.sh), with the data-plane stand-in
// (test/helpers/cloud-data-plane.ts) answering SSH on each server's fixed IP, so the pool is
// `ready: ssh`. A pool of 2 instances keeps 1 server of m1.tiny booted from tiny-raw with the
// agent's key: a reservation takes one without a server being made for it (its server was created
// before the grant, the key swapped: its key logs in, the agent's is refused), the pool refills, a
// request for another image and flavor while warm servers fill the pool's room gets a machine by a
// warm server given back first, and a release deletes the used server (so it is never warm again).
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import test from 'ava';
import { Paddock, type Reservation } from '../../client/index.js';
import type { Server } from '../../provisioners/openstack/client.js';
import { sshHandshake } from '../../protocol/ssh.js';
import { startApi, testConfig, type TestApi } from '../helpers/api.js';
import { testCloud, type TestCloud } from '../helpers/cloud.js';
import { startDataPlane, type DataPlane } from '../helpers/cloud-data-plane.js';
import { waitFor } from '../helpers/wait.js';

let cloud: TestCloud;
let dir: string;
let api: TestApi;
let paddock: Paddock;
let plane: DataPlane | undefined;
let instance: string;
const shas: string[] = [];

const poolYaml = () => `
machines:
  - name: wc
    kind: openstack
    labels: { arch: x86_64 }
    warm: [{ image: tiny-raw, count: 1 }]
    settings:
      auth:
        authUrl: ${cloud.env.OS_AUTH_URL}
        username: paddock
        password: "${cloud.env.OS_PASSWORD}"
        project: paddock
      network: net1
      maxInstances: 2
      flavors: [m1.tiny, m1.small]
      ready: ssh
      sshTimeout: 60
      pollInterval: 0.3
      watchInterval: 1
`;

/** The machines whose warm server is ready, from the agent's provisioning records. */
function warmMachines(): string[] {
  const root = path.join(api.dataDir, 'agent', 'provisioning');
  const found: string[] = [];
  for (const machine of readdirSync(root, { withFileTypes: true }).filter((entry) => entry.isDirectory())) {
    for (const file of readdirSync(path.join(root, machine.name)).filter((name) => name.startsWith('warm-') && name.endsWith('.json'))) {
      if ((JSON.parse(readFileSync(path.join(root, machine.name, file), 'utf8')) as { ready: boolean }).ready) found.push(machine.name);
    }
  }
  return found.sort();
}

const live = (servers: Server[]) => servers.filter((server) => server.status !== 'DELETED');
const warmServers = async () => live(await cloud.user.servers({ tags: `paddock:${instance}` })).filter((server) => server.name.startsWith('paddock-warm-'));
const serversOf = async (reservation: Reservation) => live(await cloud.user.servers({ tags: `paddock-reservation:${reservation.id}` }));

async function reserve(image: string, flavor: string): Promise<Reservation> {
  const reservation = await paddock.reserve({ members: [{ role: 'vm', spec: `flavor=${flavor}`, image }], lease: '10m' }, { renew: false });
  await reservation.ready({ timeout: 120 });
  return reservation;
}

async function released(reservation: Reservation): Promise<void> {
  await reservation.release();
  await waitFor(async () => (await reservation.refresh()).state === 'released', 120_000, `${reservation.id} released`);
}

/** Index of the first log line matching `pattern`; -1 when none. */
const logLine = (pattern: RegExp) => api.logs.findIndex((line) => pattern.test(line));

test.before(async () => {
  cloud = await testCloud();
  dir = mkdtempSync(path.join(os.tmpdir(), 'paddock-openstack-warm-'));
  api = await startApi(testConfig(poolYaml(), path.join(dir, 'data')));
  paddock = new Paddock({ url: api.url, token: api.adminToken });
  // A small raw disk: the fake driver never reads it, Glance stores it.
  const bytes = randomBytes(64 * 1024);
  shas.push(createHash('sha256').update(bytes).digest('hex'));
  writeFileSync(path.join(dir, 'tiny.raw'), bytes);
  await paddock.images.upload(path.join(dir, 'tiny.raw'), { name: 'tiny-raw', format: 'raw' });
  const instanceFile = path.join(api.dataDir, 'openstack', 'instance');
  await waitFor(async () => existsSync(instanceFile), 120_000, 'the instance id');
  instance = readFileSync(instanceFile, 'utf8').trim();
  plane = await startDataPlane(cloud, `paddock:${instance}`);
});

test.after.always(async () => {
  await api?.close();
  await plane?.stop();
  // Warm servers outlive their agent by design (the next start takes them back): these go with the test.
  // A loaded cloud may not answer at once: asked again until nothing of this Paddock is left.
  for (let attempt = 1; instance && attempt <= 5; attempt++) {
    const leftovers = await cloud.user.servers({ tags: `paddock:${instance}` }).catch(() => undefined);
    if (leftovers?.length === 0) break;
    await Promise.all((leftovers ?? []).map((leftover) => cloud.user.deleteServer(leftover.id).catch(() => undefined)));
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
  for (const name of await cloud.user.keypairs().catch(() => [])) if (name.startsWith(`paddock-${instance}-`)) await cloud.user.deleteKeypair(name);
  for (const sha256 of shas) for (const image of await cloud.user.images({ paddock_sha256: sha256 }).catch(() => [])) await cloud.user.deleteImage(image.id);
  if (dir) rmSync(dir, { recursive: true, force: true });
  await cloud?.release();
});

test.serial(
  'a warm server is handed over with its key swapped, the pool refills within its room, gives room back to another image, and never reuses a server',
  async (t) => {
    await waitFor(async () => warmMachines().length === 1, 240_000, 'a warm server');
    t.deepEqual(warmMachines(), ['wc-m1.tiny-1'], 'a warm server boots the first flavor');
    const warmIds = (await warmServers()).map((server) => server.id);
    t.is(warmIds.length, 1);
    const agentKey = (JSON.parse(readFileSync(path.join(api.dataDir, 'agent', 'warm', 'key.json'), 'utf8')) as { privateKey: string }).privateKey;

    const first = await reserve('tiny-raw', 'm1.tiny');
    const [allocation] = first.view.allocations;
    t.is(allocation.machine, 'wc-m1.tiny-1');
    const [used] = await serversOf(first);
    t.true(warmIds.includes(used.id), 'the reservation has a warm server');
    const granted = (await first.events()).find((event) => event.type === 'state' && event.to === 'allocated');
    t.truthy(granted);
    t.true(Date.parse((used as Server & { created: string }).created) < Date.parse(granted!.at), 'its server was made before the grant');
    t.is(logLine(new RegExp(`"reservation":"${first.id}".*"msg":"server created"`)), -1, 'no server was created for the reservation');
    t.deepEqual(Object.keys(allocation.stages).sort(), ['addressKnown', 'bootSeen', 'powerConfirmed', 'sshReady']);
    t.is(allocation.hostKey, plane!.guests().get(used.id)?.hostKey, 'the host key is the guest’s');
    const keys = await first.run('vm', 'cat ~/.ssh/authorized_keys');
    t.is(keys.code, 0, keys.stderr);
    t.is(keys.stdout.trim().split('\n').length, 1, "authorized_keys holds the reservation's key alone");
    const refused = await t.throwsAsync(sshHandshake({ host: allocation.host!, port: 22, user: 'root', privateKey: agentKey, timeoutMs: 10_000 }));
    t.regex(refused?.message ?? '', /refused|authentication/i, "the agent's key no longer logs in");
    t.false(
      (await warmServers()).some((server) => server.id === used.id),
      'the handed-over server is the reservation’s, no longer warm',
    );

    // The pool refills on the other slot: 1 reserved + 1 warm fill its maxInstances.
    await waitFor(async () => warmMachines().join() === 'wc-m1.tiny-2', 240_000, 'the pool refilled');
    const second = await reserve('wc/cirros-fake', 'm1.small');
    t.is(second.view.allocations[0].machine, 'wc-m1.small-1');
    // Given back either by the cold boot itself or, a moment earlier, by the agent's next warm report
    // (the API's plan no longer counts room for it once the reservation holds that room).
    const givenBack = logLine(/"machine":"wc-m1\.tiny-2".*"msg":"the warm VM is given back/);
    const created = logLine(new RegExp(`"reservation":"${second.id}".*"msg":"server created"`));
    t.true(givenBack >= 0 && created > givenBack, 'a warm server was given back before the new server was made');
    t.deepEqual(await warmServers(), [], 'no warm server is left: the room is the reservations’');
    t.true(plane!.peak() <= 2, `never more servers than maxInstances (peak ${plane!.peak()})`);

    await Promise.all([released(first), released(second)]);
    t.deepEqual(await serversOf(first), [], 'the used server is deleted: it is never warm again');
    t.is((await cloud.user.server(used.id))?.status ?? 'DELETED', 'DELETED');
    t.deepEqual(plane!.problems(), []);
  },
);
