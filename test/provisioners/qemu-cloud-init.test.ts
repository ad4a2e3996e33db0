// A user's own image on the qemu kind: the stock Debian cloud image of images/recipes/debian-cloud.sh
// (cloud-init, nothing of Paddock), uploaded with access `cloud-init`, booted fully from its disk
// with a NoCloud seed, and logged in with the real OpenSSH client against the pinned host key. Under
// TCG one boot takes a minute or more (two at once on a busy machine, several): generous timeouts.
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import test from 'ava';
import { Paddock, type Reservation } from '../../client/index.js';
import type { CredentialsView } from '../../protocol/api.js';
import { normalizeKeyLine } from '../../protocol/ssh-keys.js';
import { vmProcessesUnder } from '../../provisioners/qemu/adapter.js';
import { startApi, testConfig, type TestApi } from '../helpers/api.js';
import { testImages } from '../helpers/images.js';
import { runSsh } from '../helpers/sshd.js';
import { waitFor } from '../helpers/wait.js';

let api: TestApi;
let paddock: Paddock;
let scratch: string;

const config = `
machines:
  - name: vm
    kind: qemu
    count: 2
    labels: { arch: x86_64 }
    capacities: { cpus: 1, ram: 1GiB }
    settings: { bootTimeout: 1200 }
`;

test.before(async () => {
  const images = await testImages();
  if (!images.cloud) throw new Error('no Debian cloud image: build it as root with images/recipes/build-test-images.sh (scripts/setup.sh does)');
  scratch = mkdtempSync(path.join(os.tmpdir(), 'paddock-cloud-init-test-'));
  api = await startApi(testConfig(config));
  paddock = new Paddock({ url: api.url, token: api.adminToken });
  await paddock.images.upload(images.cloud, { name: 'debian-cloud', tag: 'test', format: 'qcow2', arch: 'x86_64', access: 'cloud-init' });
});

test.after.always(async () => {
  await api?.close();
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

/** The OpenSSH client with only `privateKey`, the host key checked against `credentials.knownHosts`. */
function ssh(credentials: CredentialsView, privateKey: string, user: string, command: string): Promise<{ code: number; stdout: string; stderr: string }> {
  const { host, port } = credentials.machines[0];
  return runSsh({ host, port, user, dir: scratch }, { privateKey, knownHosts: credentials.knownHosts, command, timeout: 120_000 });
}

test.serial(
  'two reservations of a stock cloud image: each VM has its own instance id and host key, pinned; keys do not cross; seeds go on release',
  async (t) => {
    t.timeout(40 * 60_000);
    const reserve = () => paddock.reserve({ members: [{ role: 'vm', spec: 'arch=x86_64 ram>=1GiB', image: 'debian-cloud:test' }], lease: '60m' });
    const first = await reserve();
    const second = await reserve();
    t.teardown(() => Promise.all([first, second].map((each: Reservation) => each.release().catch(() => undefined))));
    await Promise.all([first.ready({ timeout: 2400 }), second.ready({ timeout: 2400 })]);

    const seen = [];
    for (const reservation of [first, second]) {
      const allocation = reservation.view.allocations[0];
      t.deepEqual(Object.keys(allocation.stages).sort(), ['addressKnown', 'bootSeen', 'powerConfirmed', 'sshReady']);
      const runDir = path.join(api.dataDir, 'qemu', allocation.machine, reservation.id);
      const seed = path.join(runDir, 'seed.iso');
      t.true(existsSync(seed), 'the seed volume is in the VM run directory');
      t.is(statSync(seed).mode & 0o777, 0o600, 'and only its owner can read it (it holds a host private key)');
      t.is(statSync(runDir).mode & 0o777, 0o700);
      t.deepEqual(
        readdirSync(runDir).filter((name) => /data|key/.test(name)),
        [],
        'no loose user-data, meta-data or key file beside it',
      );

      const credentials = await reservation.credentials();
      const login = await ssh(
        credentials,
        credentials.privateKey,
        'root',
        'cloud-init query instance_id; hostname; cut -d" " -f1,2 /etc/ssh/ssh_host_ed25519_key.pub; ls /etc/ssh | grep -c "^ssh_host_.*_key$"',
      );
      t.is(login.code, 0, login.stderr);
      const [instanceId, hostname, hostKey, hostKeyCount] = login.stdout.trim().split('\n');
      t.is(instanceId, allocation.id, 'the instance id is the allocation: new for every reservation');
      t.is(hostname, allocation.machine);
      t.is(hostKey, normalizeKeyLine(allocation.hostKey ?? ''), 'the guest presents the host key its seed gave it, the one pinned');
      t.is(hostKeyCount, '1', 'and no other: cloud-init made none');
      const asDefaultUser = await ssh(credentials, credentials.privateKey, 'debian', 'id -un');
      t.is(asDefaultUser.code, 0, asDefaultUser.stderr);
      t.is(asDefaultUser.stdout.trim(), 'debian', "the image's default user has the key too");
      seen.push({ instanceId, hostKey, credentials, runDir });
    }
    t.not(seen[0].instanceId, seen[1].instanceId);
    t.not(seen[0].hostKey, seen[1].hostKey);

    // The first reservation's key, against the second's VM (its host key pinned): refused.
    const crossed = await ssh(seen[1].credentials, seen[0].credentials.privateKey, 'root', 'true');
    t.not(crossed.code, 0);
    t.regex(crossed.stderr, /Permission denied/);
    // The second's pinned host key does not fit the first VM: OpenSSH refuses before logging in.
    const swapped = await ssh(
      { ...seen[0].credentials, knownHosts: seen[1].credentials.knownHosts.replace(/:\d+\]/, `:${seen[0].credentials.machines[0].port}]`) },
      seen[0].credentials.privateKey,
      'root',
      'true',
    );
    t.not(swapped.code, 0);
    t.regex(swapped.stderr, /HOST IDENTIFICATION HAS CHANGED|Host key verification failed/);

    t.false(
      api.logs.some((line) => line.includes('PRIVATE KEY')),
      'no private key in the server log',
    );

    await Promise.all([first.release(), second.release()]);
    await waitFor(async () => (await first.refresh()).state === 'released' && (await second.refresh()).state === 'released', 120_000, 'released');
    for (const { runDir } of seen) t.false(existsSync(runDir), 'the seed and the overlay are gone');
    t.deepEqual(await vmProcessesUnder(path.join(api.dataDir, 'qemu')), []);
  },
);
