// Initramfs overlays: how a reservation's key reaches a board image that has no Paddock hook (an
// image stored with access `overlay`). The kernel unpacks every archive concatenated in the initrd,
// later ones over earlier ones, before it runs /init; so a small newc cpio appended to the bundle's
// own initrd puts root's authorized_keys and a host key made for the reservation in place, and the
// image's own SSH server finds them as if they had been built in. The base initrd is never changed:
// each reservation gets its own copy with the overlay after it.
//
// What the overlay holds, in this order (parents first: the kernel silently drops a file whose
// folder does not exist yet; every entry owned by 0:0; no `.` entry, which would set the mode of /):
//   root/ 0700, root/.ssh/ 0700, root/.ssh/authorized_keys 0600
//   for dropbear: etc/ 0755, etc/dropbear/ 0755, etc/dropbear/dropbear_ed25519_host_key 0600 (dropbear's own format)
//   for OpenSSH:  etc/ 0755, etc/ssh/ 0755, etc/ssh/ssh_host_ed25519_key 0600 (+ .pub 0644)
// The SSH server is found in the base initrd's file list (a file named dropbear or dropbearmulti,
// or sshd), once per initrd. The key is made with ssh-keygen (openssh-client) and, for dropbear,
// converted with dropbearconvert (dropbear-bin), which reads only its own format. The base is
// zero-padded to a multiple of 4 bytes before the overlay: the kernel skips zeros between archives
// but looks for an uncompressed cpio header only at 4-byte offsets.
import { execFile, spawn } from 'node:child_process';
import { chmod, copyFile, lstat, mkdir, mkdtemp, open, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { gzipSync } from 'node:zlib';

const run = promisify(execFile);

export type SshServer = 'dropbear' | 'openssh';

/** An initrd an overlay cannot be made for, with a stable code (the request's fault: the image). */
export class OverlayError extends Error {
  constructor(
    message: string,
    readonly code: 'image_invalid' | 'overlay_failed' = 'image_invalid',
  ) {
    super(message);
    this.name = 'OverlayError';
  }
}

/** The first archive's compression, by its magic bytes, and the Debian tool that undoes it. */
const decompressors: { magic: Buffer; command: string[] }[] = [
  { magic: Buffer.from([0x1f, 0x8b]), command: ['gzip', '-dc'] },
  { magic: Buffer.from([0x28, 0xb5, 0x2f, 0xfd]), command: ['zstd', '-dcq'] },
  { magic: Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]), command: ['xz', '-dcq'] },
  { magic: Buffer.from([0x02, 0x21, 0x4c, 0x18]), command: ['lz4', '-dcq'] },
  { magic: Buffer.from('BZh'), command: ['bzip2', '-dcq'] },
  { magic: Buffer.from('0707'), command: ['cat'] },
];

const servers = new Map<string, Promise<SshServer[]>>();

/**
 * The SSH servers an initrd holds, from the file list of its first archive (read once per file:
 * a bundle's files never change). Empty when it has none the overlay knows.
 */
export function sshServersOf(initrd: string): Promise<SshServer[]> {
  let found = servers.get(initrd);
  if (!found) {
    found = readServers(initrd);
    found.catch(() => servers.delete(initrd));
    servers.set(initrd, found);
  }
  return found;
}

async function readServers(initrd: string): Promise<SshServer[]> {
  const listed = await throughInitrd(initrd, ['cpio', '-it', '--quiet']);
  if (listed.code !== 0)
    throw new OverlayError(`the initrd is not a readable cpio archive: ${listed.stderr.trim().split('\n').pop() ?? `cpio exit ${listed.code}`}`);
  const names = new Set(listed.stdout.split('\n').map((name) => name.split('/').pop()));
  const result: SshServer[] = [];
  if (names.has('dropbear') || names.has('dropbearmulti')) result.push('dropbear');
  if (names.has('sshd')) result.push('openssh');
  return result;
}

/** The marker of Paddock's key hook: what an init that reads the key from the kernel command line looks for. */
const hookMarker = 'paddock.authorized_key';

/**
 * How a key reaches a system booted from this initrd, where it can be told: `hook` when it holds
 * the hook's marker (`paddock.authorized_key`, the kernel command line argument its init reads),
 * `overlay` when it holds an SSH server the overlay knows and no marker; undefined when it cannot
 * tell (no SSH server, or not a cpio archive it can read).
 */
export async function detectAccess(initrd: string): Promise<'hook' | 'overlay' | undefined> {
  const found = await readServers(initrd).catch(() => undefined);
  if (!found?.length) return undefined;
  const marker = await throughInitrd(initrd, ['grep', '-qaF', hookMarker]);
  return marker.code === 0 ? 'hook' : 'overlay';
}

/** Runs `consumer` on the initrd's decompressed bytes (its first archive's compression: concatenated members of the same kind too). */
async function throughInitrd(initrd: string, consumer: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const handle = await open(initrd, 'r');
  const head = Buffer.alloc(8);
  try {
    await handle.read(head, 0, head.length, 0);
  } finally {
    await handle.close();
  }
  const decompressor = decompressors.find(({ magic }) => head.subarray(0, magic.length).equals(magic));
  if (!decompressor) throw new OverlayError(`the initrd is neither a cpio archive nor compressed in a known way (starts with ${head.toString('hex')})`);
  return new Promise((resolve, reject) => {
    const [command, ...args] = decompressor.command;
    const unpack = spawn(command, [...args, initrd], { stdio: ['ignore', 'pipe', 'ignore'] });
    const [program, ...options] = consumer;
    const reader = spawn(program, options, { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, LC_ALL: 'C' } });
    unpack.stdout.pipe(reader.stdin);
    reader.stdin.on('error', () => undefined); // the reader may stop early (cpio at its trailer, grep -q at a match)
    unpack.on('error', (error) => reject(new OverlayError(`cannot read the initrd with ${command}: ${error.message}`, 'overlay_failed')));
    let stdout = '';
    let stderr = '';
    reader.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString('latin1')));
    reader.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('latin1')));
    reader.on('error', (error) => reject(new OverlayError(`cannot read the initrd with ${program}: ${error.message}`, 'overlay_failed')));
    reader.on('close', (code) => {
      unpack.kill();
      resolve({ code, stdout, stderr });
    });
  });
}

/**
 * detectAccess for a bundle archive (its `initrd` member, copied to a temporary file in `workDir`);
 * undefined for a bundle with no initrd or one that cannot be read.
 */
export async function detectBundleAccess(bundle: string, workDir: string): Promise<'hook' | 'overlay' | undefined> {
  await mkdir(workDir, { recursive: true, mode: 0o700 });
  const work = await mkdtemp(path.join(workDir, 'detect-'));
  try {
    const initrd = path.join(work, 'initrd');
    await run('tar', ['-xf', bundle, '--occurrence=1', '-C', work, '--no-same-owner', '--no-same-permissions', 'initrd']);
    if (!(await lstat(initrd)).isFile()) return undefined; // a link could point anywhere on this host
    return await detectAccess(initrd);
  } catch {
    return undefined;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

export interface OverlayRequest {
  /** The bundle's initrd (never written). */
  base: string;
  /** Where the per-reservation initrd goes (written as TARGET.tmp, then renamed). */
  target: string;
  /** The mode the finished target gets. */
  mode: number;
  /** root's authorized_keys, one OpenSSH public key line or more. */
  authorizedKeys: string;
  /** A private folder (0700) for the overlay's files while it is built; removed afterwards. */
  workDir: string;
}

export interface Overlay {
  /** The host key's public line (`ssh-ed25519 AAAA...`), for readiness to pin. */
  hostKey: string;
  /** The SSH server(s) the host key was written for. */
  servers: SshServer[];
  /** Milliseconds: key, overlay archive, the whole per-reservation initrd. */
  timings: { key: number; archive: number; total: number };
}

/** Writes the bundle's initrd with the reservation's overlay after it to `target`. */
export async function writeOverlayInitrd(request: OverlayRequest): Promise<Overlay> {
  const started = performance.now();
  const found = await sshServersOf(request.base);
  if (found.length === 0) {
    throw new OverlayError('access overlay: the initrd has no SSH server the overlay knows (a file named dropbear, dropbearmulti or sshd)');
  }
  await mkdir(request.workDir, { recursive: true, mode: 0o700 });
  const work = await mkdtemp(path.join(request.workDir, 'overlay-'));
  try {
    const tree = path.join(work, 'tree');
    const key = path.join(work, 'key');
    await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', '', '-f', key]).catch((error: unknown) => {
      throw new OverlayError(`ssh-keygen: ${tail(error)}`, 'overlay_failed');
    });
    const hostKey = (await readFile(`${key}.pub`, 'utf8')).trim().split(/\s+/).slice(0, 2).join(' ');
    const keyDone = performance.now();

    const entries: string[] = [];
    const directory = async (name: string, mode: number) => {
      await mkdir(path.join(tree, name), { recursive: true });
      await chmod(path.join(tree, name), mode);
      entries.push(name);
    };
    const file = async (name: string, mode: number, content?: string) => {
      if (content !== undefined) await writeFile(path.join(tree, name), content);
      await chmod(path.join(tree, name), mode);
      entries.push(name);
    };
    await mkdir(tree, { mode: 0o700 });
    await directory('root', 0o700);
    await directory('root/.ssh', 0o700);
    await file('root/.ssh/authorized_keys', 0o600, `${request.authorizedKeys.trim()}\n`);
    await directory('etc', 0o755);
    if (found.includes('dropbear')) {
      await directory('etc/dropbear', 0o755);
      await run('dropbearconvert', ['openssh', 'dropbear', key, path.join(tree, 'etc/dropbear/dropbear_ed25519_host_key')]).catch((error: unknown) => {
        throw new OverlayError(`dropbearconvert: ${tail(error)}`, 'overlay_failed');
      });
      await file('etc/dropbear/dropbear_ed25519_host_key', 0o600);
    }
    if (found.includes('openssh')) {
      await directory('etc/ssh', 0o755);
      await copyFile(key, path.join(tree, 'etc/ssh/ssh_host_ed25519_key'));
      await file('etc/ssh/ssh_host_ed25519_key', 0o600);
      await file('etc/ssh/ssh_host_ed25519_key.pub', 0o644, `${hostKey}\n`);
    }
    const archive = gzipSync(await cpio(tree, entries), { level: 9 });
    const archiveDone = performance.now();

    // TARGET.tmp is made private first and only gets its mode once whole.
    const partial = `${request.target}.tmp`;
    await rm(partial, { force: true });
    await copyFile(request.base, partial);
    await chmod(partial, 0o600);
    const padding = (4 - ((await stat(partial)).size % 4)) % 4;
    await writeFile(partial, Buffer.concat([Buffer.alloc(padding), archive]), { flag: 'a' });
    await chmod(partial, request.mode);
    await rename(partial, request.target);
    const done = performance.now();
    return { hostKey, servers: found, timings: { key: keyDone - started, archive: archiveDone - keyDone, total: done - started } };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/** `cpio -o -H newc -R 0:0` of exactly `entries` (relative to `dir`, in that order). */
function cpio(dir: string, entries: string[]): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const child = spawn('cpio', ['-o', '-H', 'newc', '-R', '0:0', '--quiet'], { cwd: dir, stdio: ['pipe', 'pipe', 'pipe'] });
    const chunks: Buffer[] = [];
    let errors = '';
    child.stdout.on('data', (chunk: Buffer) => chunks.push(chunk));
    child.stderr.on('data', (chunk: Buffer) => (errors += chunk.toString()));
    child.on('error', (error) => reject(new OverlayError(`cpio: ${error.message}`, 'overlay_failed')));
    child.on('close', (code) =>
      code === 0 ? resolve(Buffer.concat(chunks)) : reject(new OverlayError(`cpio: ${errors.trim() || `exit ${code}`}`, 'overlay_failed')),
    );
    child.stdin.end(`${entries.join('\n')}\n`);
  });
}

function tail(error: unknown): string {
  const stderr = String((error as { stderr?: string }).stderr ?? '').trim();
  return stderr.split('\n').pop() || (error as Error).message;
}
