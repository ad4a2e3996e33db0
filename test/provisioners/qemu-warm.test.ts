// Warm pools on real QEMU guests: a pool of two slots keeps one VM booted from tiny:test with the
// agent's own key; a reservation for that image gets it with its key swapped in (the agent's key
// refused from then on, the host key the same), the pool refills on the other slot, a member of
// another image gets the cold slot, and a slot used by a reservation is warmed again only by a
// fresh boot. A restarted server keeps the warm VM, and gives it back to cold use once nobody asked
// for its image within its idle time.
import path from 'node:path';
import test from 'ava';
import { Paddock, type Reservation } from '../../client/index.js';
import { stopVm, vmProcessesUnder } from '../../provisioners/qemu/adapter.js';
import { sshHandshake } from '../../protocol/ssh.js';
import { embeddedConfig } from '../../api/config.js';
import { startApi, testConfig, type TestApi } from '../helpers/api.js';
import { waitFor } from '../helpers/wait.js';
import { testImages, type TestImages } from '../helpers/images.js';
import { warmKey, warmRecords } from '../helpers/warm.js';

let images: TestImages;
const servers: TestApi[] = [];

// The embedded defaults (two VM slots) with one of them kept warm.
const poolYaml = (idle: string) => `${embeddedConfig.trimEnd()}
    warm: [{ image: "tiny:test", count: 1, idle: ${idle} }]
`;

async function server(idle: string): Promise<{ api: TestApi; paddock: Paddock }> {
  const api = await startApi(testConfig(poolYaml(idle)));
  servers.push(api);
  const paddock = new Paddock({ url: api.url, token: api.adminToken });
  await paddock.images.upload(images.initramfs, { name: 'tiny', tag: 'test', format: 'bundle', arch: 'x86_64' });
  return { api, paddock };
}

const warmSlots = (api: TestApi) => warmRecords(api.dataDir);

const warmOn = (api: TestApi, machine: string) =>
  waitFor(async () => warmSlots(api).some((slot) => slot.machine === machine), 180_000, `a warm VM on ${machine}`);

async function tiny(paddock: Paddock, image = 'tiny:test'): Promise<Reservation> {
  const reservation = await paddock.reserve({ members: [{ role: 'vm', spec: 'arch=x86_64', image }], lease: '10m' });
  await reservation.ready({ timeout: 300 });
  return reservation;
}

const bootId = async (reservation: Reservation) => (await reservation.run('vm', 'cat /proc/sys/kernel/random/boot_id')).stdout.trim();

test.before(async () => {
  images = await testImages();
});

test.after.always(async () => {
  for (const api of servers) {
    const qemuRoot = path.join(api.dataDir, 'qemu');
    await api.close();
    // Warm VMs outlive their agent by design (the next start takes them back): these go with the test.
    for (const { pid } of await vmProcessesUnder(qemuRoot)) await stopVm(pid, qemuRoot);
  }
});

test.serial('a warm VM is handed over with the key swapped, the pool refills, another image boots cold, a used slot is warmed afresh', async (t) => {
  const { api, paddock } = await server('1h');
  await paddock.images.upload(images.initramfs, { name: 'other', tag: 'test', format: 'bundle', arch: 'x86_64' });
  await warmOn(api, 'vm-1');
  const [warm] = warmSlots(api);
  const agentKey = warmKey(api.dataDir);

  const first = await tiny(paddock);
  const [allocation] = first.view.allocations;
  t.is(allocation.machine, 'vm-1', 'the warm slot is taken');
  t.is(allocation.port, warm.port);
  t.is(allocation.hostKey, warm.hostKey, 'the host key is the warm VM’s, pinned by the client');
  t.deepEqual(Object.keys(allocation.stages).sort(), ['addressKnown', 'bootSeen', 'powerConfirmed', 'sshReady']);
  const written = await first.run('vm', 'echo first > /root/mark && cat /root/.ssh/authorized_keys');
  t.is(written.code, 0, written.stderr);
  t.is(written.stdout.trim().split('\n').length, 1, "authorized_keys holds the reservation's key alone");
  const login = { host: '127.0.0.1', port: warm.port, user: 'root', timeoutMs: 10_000 };
  const refused = await t.throwsAsync(sshHandshake({ ...login, privateKey: agentKey }));
  t.regex(refused?.message ?? '', /refused|authentication/i, "the agent's key no longer logs in");
  const firstBoot = await bootId(first);

  await warmOn(api, 'vm-2');
  await first.release();
  await waitFor(async () => (await first.refresh()).state === 'released');

  // vm-1 is free and cold, vm-2 warm: a member of another image takes the cold one.
  const other = await tiny(paddock, 'other:test');
  t.is(other.view.allocations[0].machine, 'vm-1', 'a member of another image gets the cold slot');
  t.true(
    warmSlots(api).some((slot) => slot.machine === 'vm-2'),
    'the warm VM is left for its image',
  );
  await other.release();
  await waitFor(async () => (await other.refresh()).state === 'released');

  const second = await tiny(paddock);
  t.is(second.view.allocations[0].machine, 'vm-2');
  // The refill of vm-1 is a fresh boot: nothing of the first reservation is there.
  await warmOn(api, 'vm-1');
  const third = await tiny(paddock);
  t.is(third.view.allocations[0].machine, 'vm-1', 'the used slot is handed out warm again');
  t.is((await third.run('vm', 'test -e /root/mark')).code, 1, 'the first reservation’s file is gone');
  t.not(await bootId(third), firstBoot, 'a new boot, not the VM the first reservation used');
  await Promise.all([second.release(), third.release()]);
});

test.serial('a warm VM outlives a restart; an image nobody asks for within its idle time is given back to cold use', async (t) => {
  const first = await server('1h');
  const qemuRoot = path.join(first.api.dataDir, 'qemu');
  const warmVms = async () => (await vmProcessesUnder(qemuRoot)).filter((vm) => vm.pidFile.includes(`${path.sep}warm-`));
  await warmOn(first.api, 'vm-1');
  const [before] = await warmVms();
  await first.api.server.close();

  // The same data on a server whose pool gives its image back after 10 s without a request.
  const api = await startApi(testConfig(poolYaml('10s'), first.api.dataDir));
  servers.push(api);
  await new Promise((resolve) => setTimeout(resolve, 2000));
  t.deepEqual(await warmVms(), [before], 'the warm VM is taken back, not booted again');
  t.is(warmSlots(api).length, 1);
  await waitFor(async () => (await warmVms()).length === 0, 120_000, 'the warm VM stopped after its idle time');
  t.deepEqual(warmSlots(api), []);
  await new Promise((resolve) => setTimeout(resolve, 3000));
  t.deepEqual(await warmVms(), [], 'no refill until the image is asked for again');
});
