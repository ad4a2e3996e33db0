// A real OpenSSH server per call, for tests: its own temp dir, host key, config and loopback port,
// logging in as the current user (root: Paddock's admin login on a static host) with keys from its
// own authorized_keys file, and a tenant: a Unix user of its own (`pdkt<port>`, created for this
// server and deleted by stop()) whose keys sshd reads from a root-owned file, as a static host
// lends one. Safe to use from parallel ava workers: ports are picked free and retried if another
// process wins the race, readiness is a real login that also checks the host key, so we never talk
// to someone else's sshd, and no two live servers share a tenant (ending one's processes at a
// release never touches another test's).
import { execFile, spawn } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import ssh2 from 'ssh2';
import { freePort } from './ports.js';

const run = promisify(execFile);
const sshdBinary = '/usr/sbin/sshd';

export interface TestSshd {
  host: '127.0.0.1';
  port: number;
  /** The login user (the user running the tests): the admin's. */
  user: string;
  dir: string;
  /** The tenant's authorized_keys (root's, mode 0644): where a static machine's reservation keys go. */
  authorizedKeysFile: string;
  /** The tenant: the login a static machine on this server lends to reservations. */
  tenant: string;
  /** The tenant's home (hers, mode 0700). */
  tenantHome: string;
  /** The admin's authorized_keys (`adminKey` and the `authorizedKeys` option's lines). */
  adminAuthorizedKeysFile: string;
  /** The server's public host key line, `ssh-ed25519 AAAA…` (no comment). */
  hostKey: string;
  /** A fresh key pair, already authorized; the private key is also written to `path` (mode 0600). */
  adminKey: { privateKey: string; publicKey: string; path: string };
  stop(): Promise<void>;
}

/** The tenant of each live test sshd by port, so a static machine's YAML can name it. */
const tenants = new Map<number, string>();
export const tenantOf = (port: number): string | undefined => tenants.get(port);

export async function startSshd(options: { authorizedKeys?: string[] } = {}): Promise<TestSshd> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'paddock-sshd-'));
  // The tenant reaches her home and sshd reads her key file as her: the folder must be open to
  // her (its private keys stay 0600).
  await chmod(dir, 0o755);
  try {
    return await startIn(dir, options.authorizedKeys ?? []);
  } catch (error) {
    await rm(dir, { recursive: true, force: true });
    throw error;
  }
}

async function startIn(dir: string, extraKeys: string[]): Promise<TestSshd> {
  const user = os.userInfo().username;
  const hostKeyPath = path.join(dir, 'ssh_host_ed25519_key');
  const adminKeyPath = path.join(dir, 'admin_key');
  await Promise.all([keygen(hostKeyPath, 'test-sshd-host'), keygen(adminKeyPath, 'paddock-test-admin')]);
  const hostKey = keyLine(await readFile(`${hostKeyPath}.pub`, 'utf8'));
  const adminKey = {
    privateKey: await readFile(adminKeyPath, 'utf8'),
    publicKey: (await readFile(`${adminKeyPath}.pub`, 'utf8')).trim(),
    path: adminKeyPath,
  };
  await chmod(adminKeyPath, 0o600);
  const keysDir = path.join(dir, 'keys');
  await mkdir(keysDir, { mode: 0o755 });
  const adminAuthorizedKeysFile = path.join(keysDir, user);
  await writeFile(adminAuthorizedKeysFile, [adminKey.publicKey, ...extraKeys].map((line) => `${line}\n`).join(''), { mode: 0o600 });
  // sshd refuses to start without its privilege separation directory.
  mkdirSync('/run/sshd', { recursive: true, mode: 0o755 });

  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    const configPath = path.join(dir, 'sshd_config');
    await writeFile(configPath, sshdConfig({ dir, port, hostKeyPath, authorizedKeysFile: path.join(keysDir, '%u') }));
    const server = launch(configPath);
    try {
      await waitReady(server, { port, user, hostKey, privateKey: adminKey.privateKey });
    } catch (error) {
      await server.kill();
      if (server.bindFailed() && attempt < 8) continue; // another process took the port meanwhile
      throw new Error(`test sshd on port ${port} did not start: ${(error as Error).message}\n${server.log()}`);
    }
    // Only the server that holds the port names its tenant after it.
    const tenant = `pdkt${port}`;
    const tenantHome = path.join(dir, 'home');
    const authorizedKeysFile = path.join(keysDir, tenant);
    try {
      await createTenant(tenant, tenantHome);
      await writeFile(authorizedKeysFile, '', { mode: 0o644 });
    } catch (error) {
      await server.kill();
      await deleteTenant(tenant);
      throw error;
    }
    tenants.set(port, tenant);
    return {
      host: '127.0.0.1',
      port,
      user,
      dir,
      authorizedKeysFile,
      tenant,
      tenantHome,
      adminAuthorizedKeysFile,
      hostKey,
      adminKey,
      async stop() {
        await server.kill();
        await deleteTenant(tenant);
        if (tenants.get(port) === tenant) tenants.delete(port);
        await rm(dir, { recursive: true, force: true });
      },
    };
  }
}

/** useradd and userdel lock /etc/passwd: parallel workers retry (exit 10: locked; 1: could not update; 8: logged in). */
async function userCommand(args: string[], okCodes: number[] = []): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      await run(args[0], args.slice(1));
      return;
    } catch (error) {
      const code = (error as { code?: number }).code;
      if (typeof code === 'number' && okCodes.includes(code)) return;
      if (attempt >= 50 || ![1, 8, 10].includes(code ?? -1)) throw new Error(`${args.join(' ')}: ${(error as { stderr?: string }).stderr ?? String(error)}`);
      await new Promise((resolve) => setTimeout(resolve, 50 + Math.random() * 150));
    }
  }
}

async function createTenant(tenant: string, home: string): Promise<void> {
  await deleteTenant(tenant); // a leftover of a test run that was killed
  // '*', not useradd's '!': sshd refuses every login to a locked account, keys included.
  await userCommand(['useradd', '--password', '*', '--no-create-home', '--home-dir', home, '--shell', '/bin/sh', '--user-group', tenant]);
  await mkdir(home, { mode: 0o700 });
  await run('chown', [`${tenant}:${tenant}`, home]);
}

async function deleteTenant(tenant: string): Promise<void> {
  await run('pkill', ['-KILL', '-u', tenant]).catch(() => undefined);
  // 6: no such user.
  await userCommand(['userdel', '--force', tenant], [6]);
}

export function sshdConfig(options: { dir: string; port: number; hostKeyPath: string; authorizedKeysFile: string; address?: string }): string {
  return [
    `ListenAddress ${options.address ?? '127.0.0.1'}`,
    `Port ${options.port}`,
    `HostKey ${options.hostKeyPath}`,
    `PidFile ${path.join(options.dir, 'sshd.pid')}`,
    `AuthorizedKeysFile ${options.authorizedKeysFile}`,
    'StrictModes no',
    'UsePAM no',
    'PasswordAuthentication no',
    'KbdInteractiveAuthentication no',
    'PubkeyAuthentication yes',
    'PermitRootLogin prohibit-password',
    'UseDNS no',
    // Many tests log in at once; do not drop unauthenticated connections early.
    'MaxStartups 200',
    'Subsystem sftp internal-sftp',
    'MaxSessions 50',
    'LogLevel INFO',
    // bash runs ~/.bashrc for a command sshd starts when it thinks it is a top-level shell
    // (SHLVL unset): the login user here is the tester's own, whose ~/.bashrc is no part of the
    // lab (a `pyenv init` there takes a machine-wide lock on every command, seconds each under load).
    'SetEnv SHLVL=1',
    '',
  ].join('\n');
}

export interface Server {
  exited(): boolean;
  bindFailed(): boolean;
  log(): string;
  kill(): Promise<void>;
}

// sshd runs under a tiny shell watchdog holding our end of a pipe on fd 3: when the pipe closes,
// because stop() closed it or because this process died in any way (an ava worker killed on
// timeout, kill -9), the watchdog stops sshd. So a crashed test never leaves servers behind.
// With a home, sshd runs in a mount namespace of its own where that folder is /root.
const watchdog = `[ -z "$2" ] || mount --bind "$2" /root || exit 1
exec 3<&0
${sshdBinary} -D -e -f "$1" </dev/null 3<&- &
sshd_pid=$!
(read -r _ <&3; kill "$sshd_pid" 2>/dev/null) &
exec 3<&-
wait "$sshd_pid"`;

export function launch(configPath: string, rootHome?: string): Server {
  const shell = ['/bin/sh', '-c', watchdog, 'sshd-watchdog', configPath, rootHome ?? ''];
  const [command, ...args] = rootHome ? ['unshare', '--mount', '--propagation', 'private', ...shell] : shell;
  const child = spawn(command, args, { stdio: ['pipe', 'ignore', 'pipe'] });
  let stderr = '';
  let exitedWith: string | undefined;
  const done = new Promise<void>((resolve) => {
    child.once('exit', (code, signal) => {
      exitedWith = signal ?? String(code);
      resolve();
    });
    child.once('error', (error) => {
      exitedWith = error.message;
      resolve();
    });
  });
  child.stdin?.on('error', () => undefined); // the watchdog may be gone already
  // Always drain stderr (a full pipe would block sshd); keep the tail for error messages.
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
    stderr = (stderr + chunk).slice(-8000);
  });
  return {
    exited: () => exitedWith !== undefined,
    bindFailed: () => /Address already in use|Cannot bind any address/.test(stderr),
    log: () => (exitedWith === undefined ? stderr : `${stderr}(sshd exited: ${exitedWith})`),
    async kill() {
      child.stdin?.end();
      if (exitedWith !== undefined) return;
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await done;
      clearTimeout(timer);
    },
  };
}

/** Polls with a real login (admin key, host key checked) until it works, sshd dies, or 2 minutes pass. */
async function waitReady(server: Server, target: { port: number; user: string; hostKey: string; privateKey: string }): Promise<void> {
  const deadline = Date.now() + 120_000;
  let last = 'no attempt';
  while (Date.now() < deadline) {
    if (server.exited()) throw new Error('sshd exited');
    try {
      await probe(target);
      return;
    } catch (error) {
      last = (error as Error).message;
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`not ready within 10 s (last: ${last})`);
}

function probe(target: { port: number; user: string; hostKey: string; privateKey: string }): Promise<void> {
  const expectedBlob = target.hostKey.split(' ')[1];
  return new Promise((resolve, reject) => {
    const client = new ssh2.Client();
    client.on('ready', () => {
      client.end();
      resolve();
    });
    client.on('error', (error) => {
      client.end();
      reject(error);
    });
    client.connect({
      host: '127.0.0.1',
      port: target.port,
      username: target.user,
      privateKey: target.privateKey,
      readyTimeout: 2000,
      hostVerifier: (key: Buffer) => key.toString('base64') === expectedBlob,
    });
  });
}

async function keygen(file: string, comment: string): Promise<void> {
  await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', comment, '-f', file]);
}

function keyLine(publicKeyFile: string): string {
  const [type, blob] = publicKeyFile.trim().split(/\s+/);
  return `${type} ${blob}`;
}

let keyFiles = 0;

/**
 * Runs the real OpenSSH client against `sshd` with only `privateKey`, checking the host key against
 * `knownHosts` (StrictHostKeyChecking=yes). Never throws for a failed login: look at `code`.
 */
export async function runSsh(
  sshd: Pick<TestSshd, 'port' | 'user' | 'dir'> & { host: string },
  options: { privateKey: string; knownHosts: string; command: string; user?: string; timeout?: number },
): Promise<{ code: number; stdout: string; stderr: string }> {
  keyFiles += 1;
  const keyPath = path.join(sshd.dir, `client_key_${process.pid}_${keyFiles}`);
  const knownHostsPath = `${keyPath}.known_hosts`;
  await writeFile(keyPath, options.privateKey, { mode: 0o600 });
  await writeFile(knownHostsPath, `${options.knownHosts}\n`);
  const args = [
    '-F',
    '/dev/null',
    '-i',
    keyPath,
    '-o',
    'IdentitiesOnly=yes',
    '-o',
    'IdentityAgent=none',
    '-o',
    'BatchMode=yes',
    '-o',
    'PasswordAuthentication=no',
    '-o',
    `UserKnownHostsFile=${knownHostsPath}`,
    '-o',
    'GlobalKnownHostsFile=/dev/null',
    '-o',
    'StrictHostKeyChecking=yes',
    '-o',
    'ConnectTimeout=10',
    '-p',
    String(sshd.port),
    `${options.user ?? sshd.user}@${sshd.host}`,
    options.command,
  ];
  try {
    const { stdout, stderr } = await run('ssh', args, { timeout: options.timeout ?? 30_000 });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const failure = error as { code?: number | string; stdout?: string; stderr?: string };
    return { code: typeof failure.code === 'number' ? failure.code : -1, stdout: failure.stdout ?? '', stderr: failure.stderr ?? '' };
  } finally {
    await rm(keyPath, { force: true });
    await rm(knownHostsPath, { force: true });
  }
}
