// Boot bundles: one image of format `bundle` is a tar archive (plain or compressed) holding a
// kernel and what boots with it. Provisioners that boot kernels directly (QEMU, U-Boot boards over
// TFTP) unpack a bundle once per sha256 into a directory and use its files:
//
//   kernel          required: the kernel (an ELF vmlinux, a bzImage, or an arm Image)
//   initrd          optional: initial ramdisk
//   dtb             optional: device tree blob (boards)
//   cmdline         optional: the kernel command line (one line of text)
//   rootfs.qcow2    optional: root disk, qcow2   } at most one
//   rootfs.raw      optional: root disk, raw     }
//
// Nothing else is accepted, so a bundle cannot write outside its directory (no paths, no links).
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export const bundleMembers = ['kernel', 'initrd', 'dtb', 'cmdline', 'rootfs.qcow2', 'rootfs.raw'] as const;
export type BundleMember = (typeof bundleMembers)[number];

export interface Bundle {
  dir: string;
  kernel: string;
  initrd?: string;
  dtb?: string;
  cmdline: string;
  rootfs?: { file: string; format: 'qcow2' | 'raw' };
}

/**
 * A bundle that cannot be used, with a stable code: `image_corrupt` (the archive is unreadable or its
 * members are not the ones allowed) or `image_invalid` (what it says is refused, such as a cmdline
 * with control characters).
 */
export class BundleError extends Error {
  constructor(
    message: string,
    readonly code: 'image_corrupt' | 'image_invalid' = 'image_corrupt',
  ) {
    super(message);
    this.name = 'BundleError';
  }
}

/**
 * Unpacks `archive` into `dir` unless a finished unpack is already there. The members are listed
 * and checked before anything is written; the unpack goes to a temporary directory renamed into
 * place, so a crash never leaves a half bundle that looks whole.
 */
export async function unpackBundle(archive: string, dir: string): Promise<Bundle> {
  // Machines of one gang often boot the same image at once: one unpack serves them all.
  let pending = unpacking.get(dir);
  if (!pending) {
    pending = unpack(archive, dir).finally(() => unpacking.delete(dir));
    unpacking.set(dir, pending);
  }
  await pending;
  return describe(dir);
}

const unpacking = new Map<string, Promise<void>>();

async function unpack(archive: string, dir: string): Promise<void> {
  if (!(await exists(path.join(dir, '.complete')))) {
    const listing = await tar(['--list', '--verbose', '--file', archive]);
    const names: string[] = [];
    for (const line of listing.split('\n').filter(Boolean)) {
      // GNU tar: "-rw-r--r-- 0/0  63175016 2026-11-23 12:00 kernel"; the type is the first letter.
      const type = line[0];
      const name = line.split(/\s+/).slice(5).join(' ');
      if (!(bundleMembers as readonly string[]).includes(name)) {
        throw new BundleError(`bundle member ${JSON.stringify(name)} is not allowed (allowed: ${bundleMembers.join(', ')})`);
      }
      if (type !== '-') throw new BundleError(`bundle member ${name} is not a regular file`);
      if (names.includes(name)) throw new BundleError(`bundle member ${name} appears twice`);
      names.push(name);
    }
    if (!names.includes('kernel')) throw new BundleError('the bundle has no kernel');
    if (names.includes('rootfs.qcow2') && names.includes('rootfs.raw')) throw new BundleError('the bundle has two root disks');
    const temporary = `${dir}.unpacking-${randomBytes(6).toString('hex')}`;
    await rm(temporary, { recursive: true, force: true });
    await mkdir(temporary, { recursive: true });
    try {
      await tar(['--extract', '--file', archive, '--directory', temporary, '--no-same-owner', '--no-same-permissions', '--', ...names]);
      await writeFile(path.join(temporary, '.complete'), '');
      if (await exists(path.join(dir, '.complete'))) {
        await rm(temporary, { recursive: true, force: true }); // another process finished first
      } else {
        await rm(dir, { recursive: true, force: true });
        await rename(temporary, dir);
      }
    } catch (error) {
      await rm(temporary, { recursive: true, force: true });
      throw error;
    }
  }
}

async function describe(dir: string): Promise<Bundle> {
  const file = (name: BundleMember) => path.join(dir, name);
  const bundle: Bundle = {
    dir,
    kernel: file('kernel'),
    cmdline: await readCmdline(file('cmdline')),
  };
  if (await exists(file('initrd'))) bundle.initrd = file('initrd');
  if (await exists(file('dtb'))) bundle.dtb = file('dtb');
  if (await exists(file('rootfs.qcow2'))) bundle.rootfs = { file: file('rootfs.qcow2'), format: 'qcow2' };
  else if (await exists(file('rootfs.raw'))) bundle.rootfs = { file: file('rootfs.raw'), format: 'raw' };
  return bundle;
}

/**
 * The kernel command line: one line of printable ASCII (surrounding blanks and a final newline are
 * dropped). A control character would end or cancel the bootloader's line that carries it (a
 * newline, ^C) and let the rest run as bootloader commands, so the bundle is refused.
 */
async function readCmdline(file: string): Promise<string> {
  const text = (await readFile(file, 'latin1').catch(() => '')).trim();
  const index = text.search(/[^\x20-\x7e]/);
  if (index >= 0) {
    const byte = `0x${text.charCodeAt(index).toString(16).padStart(2, '0')}`;
    throw new BundleError(`the bundle cmdline may hold only printable ASCII: byte ${byte} at offset ${index}`, 'image_invalid');
  }
  return text;
}

async function tar(args: string[]): Promise<string> {
  try {
    const { stdout } = await run('tar', args, { maxBuffer: 1024 * 1024, env: { ...process.env, LC_ALL: 'C' } });
    return stdout;
  } catch (error) {
    const stderr = String((error as { stderr?: string }).stderr ?? '')
      .trim()
      .split('\n')
      .slice(-2)
      .join('; ');
    throw new BundleError(`not a readable bundle archive${stderr ? `: ${stderr}` : ''}`);
  }
}

async function exists(file: string): Promise<boolean> {
  return stat(file).then(
    () => true,
    () => false,
  );
}
