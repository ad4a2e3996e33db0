// A stand-in for the data plane the test cloud lacks (Nova's fake driver runs nothing): for each
// ACTIVE server it is told to watch, what a real guest with cloud-init does at first boot, seen from
// outside: an OpenSSH server answers on the server's fixed IP, port 22, for root, with the keys Nova
// would give the guest (its keypair, read through the keypairs API, and its user data's
// `ssh_authorized_keys`), and the host key its user data gives (`ssh_keys`) or one of its own. The
// guest's root home is a folder of its own (the sshd runs in a mount namespace where it is /root),
// so what a login writes there (authorized_keys) stays with that server, as a guest's disk would.
// A server that is deleted, or no longer ACTIVE, stops answering; a deleted one loses its home.
//
// Everything is found through the cloud's public API (servers, keypairs, and the user data an
// admin may read), polled. The addresses are /32s on the loopback interface, labelled with this
// process (`lo:pdPID`), removed by stop(); those a killed run left are removed by the next start.
// Runs as root; never used outside tests.
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { load } from 'js-yaml';
import type { Server as CloudServer } from '../../provisioners/openstack/client.js';
import type { TestCloud } from './cloud.js';
import { launch, sshdConfig, type Server as Sshd } from './sshd.js';

const run = promisify(execFile);

export interface Guest {
  serverId: string;
  address: string;
  /** `ssh-ed25519 AAAA…`: what it presents. */
  hostKey: string;
  /** Its root's home: .ssh/authorized_keys as the guest has it now. */
  home: string;
}

export interface DataPlane {
  /** The guests answering now, by server id. */
  guests(): ReadonlyMap<string, Guest>;
  /** The most guests that answered at once. */
  peak(): number;
  /** Why guests could not be brought up (each once). */
  problems(): string[];
  stop(): Promise<void>;
}

interface Running extends Guest {
  sshd: Sshd;
  dir: string;
}

/** What a server's user data gives its guest: keys to log in with, a host key. */
interface UserData {
  ssh_authorized_keys?: string[];
  users?: (string | { ssh_authorized_keys?: string[] })[];
  ssh_keys?: { ed25519_private?: string; ed25519_public?: string };
}

/**
 * Watches the servers of the test project that have every tag of `tags` (Nova's `tags` filter: a
 * test's own servers, never another run's) until stop().
 */
export async function startDataPlane(cloud: TestCloud, tags: string, intervalMs = 300): Promise<DataPlane> {
  const label = `lo:pd${process.pid}`;
  await removeStaleAddresses();
  const root = await mkdtemp(path.join(os.tmpdir(), 'paddock-data-plane-'));
  const guests = new Map<string, Running>();
  const problems = new Set<string>();
  let stopped = false;
  let peak = 0;

  const down = async (guest: Running, forget: boolean) => {
    guests.delete(guest.serverId);
    await guest.sshd.kill();
    await run('ip', ['addr', 'del', `${guest.address}/32`, 'dev', 'lo']).catch(() => undefined);
    if (forget) await rm(guest.dir, { recursive: true, force: true });
  };

  const up = async (server: CloudServer, address: string) => {
    const dir = path.join(root, server.id);
    const home = path.join(dir, 'root');
    await mkdir(path.join(home, '.ssh'), { recursive: true, mode: 0o700 });
    const given = await userData(cloud, server.id);
    const keys = [
      ...(given.ssh_authorized_keys ?? []),
      ...(given.users ?? []).flatMap((user) => (typeof user === 'string' ? [] : (user.ssh_authorized_keys ?? []))),
    ];
    const keyName = (server as CloudServer & { key_name?: string | null }).key_name;
    if (keyName) {
      const { keypair } = await cloud.user.call<{ keypair: { public_key: string } }>('compute', 'GET', `/os-keypairs/${encodeURIComponent(keyName)}`);
      keys.unshift(keypair.public_key.trim());
    }
    // cloud-init writes the keys once per instance; a reboot keeps what the guest has since written.
    const authorized = path.join(home, '.ssh', 'authorized_keys');
    const first = !(await run('test', ['-e', authorized]).then(
      () => true,
      () => false,
    ));
    if (first) await writeFile(authorized, keys.map((key) => `${key}\n`).join(''), { mode: 0o600 });
    const hostKeyPath = path.join(dir, 'ssh_host_ed25519_key');
    if (given.ssh_keys?.ed25519_private) {
      await writeFile(hostKeyPath, given.ssh_keys.ed25519_private.trimEnd() + '\n', { mode: 0o600 });
    } else if (first) {
      await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', `guest-${server.id}`, '-f', hostKeyPath]);
    }
    const hostKey = (await run('ssh-keygen', ['-y', '-f', hostKeyPath])).stdout.trim().split(/\s+/).slice(0, 2).join(' ');
    await run('ip', ['addr', 'add', `${address}/32`, 'dev', 'lo', 'label', label]);
    const configPath = path.join(dir, 'sshd_config');
    await writeFile(configPath, sshdConfig({ dir, port: 22, hostKeyPath, authorizedKeysFile: '.ssh/authorized_keys', address }));
    guests.set(server.id, { serverId: server.id, address, hostKey, home, dir, sshd: launch(configPath, home) });
    peak = Math.max(peak, guests.size);
  };

  const tick = async () => {
    const servers = await cloud.user.servers({ tags });
    const active = new Map<string, { server: CloudServer; address: string }>();
    for (const server of servers) {
      const address = Object.values(server.addresses ?? {})
        .flat()
        .find((each) => each.version === 4)?.addr;
      if (server.status === 'ACTIVE' && address) active.set(server.id, { server, address });
    }
    const listed = new Set(servers.filter((server) => server.status !== 'DELETED').map((server) => server.id));
    for (const guest of [...guests.values()]) {
      const wanted = active.get(guest.serverId);
      if (!wanted || wanted.address !== guest.address || guest.sshd.exited()) {
        if (guest.sshd.exited()) problems.add(`the guest of ${guest.serverId} stopped: ${guest.sshd.log().trim().slice(-500)}`);
        await down(guest, !listed.has(guest.serverId));
      }
    }
    for (const [id, { server, address }] of active) {
      if (guests.has(id) || stopped) continue;
      await up(server, address).catch((error: unknown) => problems.add(`the guest of ${id} did not come up: ${(error as Error).message}`));
    }
  };

  let timer: NodeJS.Timeout | undefined;
  let ticking: Promise<void> = Promise.resolve();
  const loop = () => {
    ticking = tick()
      .catch((error: unknown) => void problems.add(`the cloud could not be read: ${(error as Error).message}`))
      .finally(() => {
        if (!stopped) timer = setTimeout(loop, intervalMs);
      });
  };
  loop();

  return {
    guests: () => guests,
    peak: () => peak,
    problems: () => [...problems],
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await ticking;
      for (const guest of [...guests.values()]) await down(guest, true);
      await rm(root, { recursive: true, force: true });
    },
  };
}

/** The server's user data as cloud-init would read it (a `#cloud-config` document); empty when none. */
async function userData(cloud: TestCloud, id: string): Promise<UserData> {
  const { server } = await cloud.admin.call<{ server: { 'OS-EXT-SRV-ATTR:user_data'?: string | null } }>('compute', 'GET', `/servers/${id}`);
  const encoded = server['OS-EXT-SRV-ATTR:user_data'];
  if (!encoded) return {};
  const text = Buffer.from(encoded, 'base64').toString('utf8');
  if (!text.startsWith('#cloud-config')) return {};
  return (load(text) as UserData | null) ?? {};
}

/** Guest addresses on lo whose process is gone (a run that was killed). */
async function removeStaleAddresses(): Promise<void> {
  const { stdout } = await run('ip', ['-o', '-4', 'addr', 'show', 'dev', 'lo']);
  for (const match of stdout.matchAll(/ inet (\S+) .* lo:pd(\d+)/g)) {
    let alive = true;
    try {
      process.kill(Number(match[2]), 0);
    } catch {
      alive = false;
    }
    if (!alive) await run('ip', ['addr', 'del', match[1], 'dev', 'lo']).catch(() => undefined);
  }
}
