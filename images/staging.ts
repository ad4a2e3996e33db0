// Staging: a reservation's boot files (kernel, initrd, dtb) placed where a board's bootloader
// fetches them, in a directory of their own under the TFTP root, and removed on release. The
// directory can be entered but not listed (0711): a file that holds a secret (an initrd carrying
// the reservation's host key) is staged under a name nobody can guess or list. It must still be
// world-readable, since tftpd-hpa serves only such files (without --permissive); TFTP itself lists
// nothing, so only the board told the name (on its console) fetches it.
import { randomBytes } from 'node:crypto';
import { chmod, copyFile, link, mkdir, rm } from 'node:fs/promises';
import path from 'node:path';

/** The folder under the TFTP root that holds every staged directory. */
export const stagingFolder = 'paddock';

export interface Staged {
  /** Absolute directory of the staged files. */
  dir: string;
  /** Each file's path as the bootloader asks for it (relative to the TFTP root). */
  files: Record<string, string>;
}

/** Places `files` (name → source path) in ROOT/paddock/NAME/; hard links where it can, copies otherwise. */
export async function stage(root: string, name: string, files: Record<string, string>): Promise<Staged> {
  if (!/^[A-Za-z0-9._-]+$/.test(name) || name.startsWith('.')) throw new Error(`bad staging name ${JSON.stringify(name)}`);
  const dir = path.join(root, stagingFolder, name);
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true, mode: 0o711 });
  await chmod(dir, 0o711);
  const staged: Record<string, string> = {};
  for (const [file, source] of Object.entries(files)) {
    const target = path.join(dir, file);
    await link(source, target).catch(() => copyFile(source, target));
    await chmod(target, 0o644).catch(() => undefined);
    staged[file] = path.posix.join(stagingFolder, name, file);
  }
  return { dir, files: staged };
}

/**
 * A name in the staged directory for a file holding a secret: `PREFIX-` and 32 random hex digits.
 * Returns the absolute file to write (the caller writes it, world-readable once whole) and the
 * path the bootloader asks for.
 */
export function secretFile(staged: Staged, prefix: string): { file: string; path: string } {
  const name = `${prefix}-${randomBytes(16).toString('hex')}`;
  return { file: path.join(staged.dir, name), path: path.posix.join(stagingFolder, path.basename(staged.dir), name) };
}

export async function unstage(root: string, name: string): Promise<void> {
  await rm(path.join(root, stagingFolder, name), { recursive: true, force: true });
}
