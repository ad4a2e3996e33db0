// The test cloud: a real OpenStack (Keystone, Glance, Placement, Nova with the fake driver,
// Neutron, RabbitMQ) that test/cloud/up.sh brings up on this machine, or finds already up.
import { execFile } from 'node:child_process';
import { closeSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { OpenStackClient, type CloudOptions } from '../../provisioners/openstack/client.js';
import { cloudFromEnvironment } from '../../provisioners/openstack/cloud.js';

const run = promisify(execFile);

export interface TestCloud {
  /** The env file's variables: OS_* for user paddock, PADDOCK_TEST_*. */
  env: Record<string, string>;
  /** Options for user paddock (password) and for the cloud admin. */
  options: CloudOptions;
  adminOptions: CloudOptions;
  user: OpenStackClient;
  admin: OpenStackClient;
  /**
   * Stops the cloud if this process brought it up (it was not up before), unless
   * PADDOCK_KEEP_CLOUD=1: a test run leaves the machine as it found it.
   */
  release(): Promise<void>;
}

function readEnv(file: string): Record<string, string> {
  return Object.fromEntries(
    readFileSync(file, 'utf8')
      .split('\n')
      .map((line) => /^export ([A-Z_]+)=['"]?(.*?)['"]?$/.exec(line.trim()))
      .filter((match): match is RegExpExecArray => match !== null)
      .map((match) => [match[1], match[2]]),
  );
}

// One test file at a time uses the cloud: files change what every user of the project sees (the
// instance quota, which compute host works, the room in a pool's maxInstances), and two files
// run at once. A lock file holds the holder's pid; one whose holder died is taken over.
const lockFile = path.join(os.tmpdir(), 'paddock-test-cloud.lock');
let holding = false;

function holderAlive(): boolean {
  const pid = Number(readFileSync(lockFile, 'utf8').trim());
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function releaseLock(): void {
  if (!holding) return;
  holding = false;
  try {
    if (readFileSync(lockFile, 'utf8').trim() === String(process.pid)) unlinkSync(lockFile);
  } catch {
    // gone already
  }
}

async function holdCloud(): Promise<void> {
  if (holding) return;
  for (;;) {
    try {
      const fd = openSync(lockFile, 'wx');
      writeSync(fd, String(process.pid));
      closeSync(fd);
      holding = true;
      process.once('exit', releaseLock);
      return;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
    let alive = true;
    try {
      alive = holderAlive();
    } catch {
      continue; // released between the two looks
    }
    if (!alive) {
      try {
        unlinkSync(lockFile);
      } catch {
        // another waiter took it over first
      }
      continue;
    }
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
}

/**
 * Brings the cloud up (about 25 s; the first time also about 1 minute of apt) or finds it up, and
 * holds it for this test file alone until `release` (or the file's process ends).
 */
export async function testCloud(): Promise<TestCloud> {
  await holdCloud();
  const { stdout, stderr } = await run('bash', [path.resolve(import.meta.dirname, '../cloud/up.sh')], { maxBuffer: 16 * 1024 * 1024, timeout: 15 * 60_000 });
  const startedHere = !/ is already up$/m.test(stderr);
  const envFile = stdout.trim().split('\n').pop()!;
  const env = readEnv(envFile);
  const adminEnv = readEnv(path.join(path.dirname(envFile), 'admin-env'));
  const options = { ...cloudFromEnvironment({ ...env, OS_CLOUD: '' }), computeVersion: '2.79' };
  const adminOptions = { ...cloudFromEnvironment({ ...adminEnv, OS_CLOUD: '' }), computeVersion: '2.79' };
  const release = async () => {
    try {
      if (!startedHere || process.env.PADDOCK_KEEP_CLOUD === '1') return;
      await run('bash', [path.resolve(import.meta.dirname, '../cloud/down.sh')], { timeout: 5 * 60_000 });
    } finally {
      releaseLock();
    }
  };
  return { env, options, adminOptions, user: new OpenStackClient(options), admin: new OpenStackClient(adminOptions), release };
}

/** Sets the paddock project's Nova instance quota. */
export async function setInstanceQuota(cloud: TestCloud, instances: number): Promise<void> {
  await cloud.admin.call('compute', 'PUT', `/os-quota-sets/${cloud.env.PADDOCK_TEST_PROJECT_ID}`, { json: { quota_set: { instances } } });
}

/** Enables or disables the two compute hosts: the working one, and the one that fails every build. */
export async function setComputeHosts(cloud: TestCloud, enabled: { working: boolean; broken: boolean }): Promise<void> {
  const { services } = await cloud.admin.call<{ services: { id: string; host: string; binary: string }[] }>(
    'compute',
    'GET',
    '/os-services?binary=nova-compute',
  );
  const set = (host: string, on: boolean) => {
    const service = services.find((each) => each.host === host)!;
    return cloud.admin.call('compute', 'PUT', `/os-services/${service.id}`, {
      json: on ? { status: 'enabled' } : { status: 'disabled', disabled_reason: 'paddock tests' },
    });
  };
  // Enable before disabling, so a switch from one host to the other never leaves none.
  const order: [string, boolean][] = [
    ['paddock-fake-compute', enabled.working],
    ['paddock-fake-broken', enabled.broken],
  ];
  for (const [host, on] of order.sort((a, b) => Number(b[1]) - Number(a[1]))) await set(host, on);
}

/** Sends new servers to the compute host that fails every build (`broken: true`), or back to the working one. */
export function breakCompute(cloud: TestCloud, broken: boolean): Promise<void> {
  return setComputeHosts(cloud, { working: !broken, broken });
}

/**
 * A config's `machines` entry for an OpenStack pool on the test cloud: m1.tiny on net1, ready when
 * ACTIVE (the fake driver's servers have no SSH), short polls; `extra` adds settings lines.
 */
export function testPoolYaml(cloud: TestCloud, name: string, extra: string[] = []): string {
  return [
    `  - name: ${name}`,
    '    kind: openstack',
    '    labels: { arch: x86_64 }',
    '    settings:',
    '      auth:',
    `        authUrl: ${cloud.env.OS_AUTH_URL}`,
    '        username: paddock',
    `        password: "${cloud.env.OS_PASSWORD}"`,
    '        project: paddock',
    '      network: net1',
    '      maxInstances: 2',
    '      flavors: [m1.tiny]',
    '      ready: active',
    '      pollInterval: 0.3',
    '      watchInterval: 1',
    ...extra.map((line) => `      ${line}`),
  ].join('\n');
}
