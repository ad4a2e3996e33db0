// Staging: a reservation's boot files (kernel, initrd, dtb) placed where a board's bootloader
// fetches them, in a directory of their own under the TFTP root, and removed on release.
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
  await mkdir(dir, { recursive: true, mode: 0o755 });
  const staged: Record<string, string> = {};
  for (const [file, source] of Object.entries(files)) {
    const target = path.join(dir, file);
    await link(source, target).catch(() => copyFile(source, target));
    await chmod(target, 0o644).catch(() => undefined);
    staged[file] = path.posix.join(stagingFolder, name, file);
  }
  return { dir, files: staged };
}

export async function unstage(root: string, name: string): Promise<void> {
  await rm(path.join(root, stagingFolder, name), { recursive: true, force: true });
}
