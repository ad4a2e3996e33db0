// The NoCloud seed for a VM booted from a cloud-init image: an ISO9660 volume labelled `cidata`
// holding meta-data and user-data (provisioners/cloud-init.ts), made with genisoimage and attached
// read-only. It is per reservation and per VM, in the VM's run directory (0700), written 0600: it
// holds the VM's host private key. The run directory, seed included, goes when the VM is released.
import { execFile } from 'node:child_process';
import { mkdir, open, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { cloudConfig, hostnameFor, newHostKey, noCloudMetaData } from '../cloud-init.js';

const run = promisify(execFile);

/** The Debian tool that writes the volume (package genisoimage). */
export const seedTool = 'genisoimage';

export interface SeedRequest {
  runDir: string;
  /** Unique per reservation and VM (the allocation id): cloud-init applies keys once per instance id. */
  instanceId: string;
  /** The machine's name, made into the guest's hostname. */
  machine: string;
  publicKey: string;
}

/** Writes RUNDIR/seed.iso; resolves with its path and the host public key the guest will present. */
export async function writeSeed(request: SeedRequest): Promise<{ iso: string; hostKey: string }> {
  const hostKey = newHostKey(`paddock-host:${request.instanceId}`);
  const files = path.join(request.runDir, 'seed');
  await mkdir(files, { recursive: true, mode: 0o700 });
  const iso = path.join(request.runDir, 'seed.iso');
  try {
    await writeFile(path.join(files, 'meta-data'), noCloudMetaData({ instanceId: request.instanceId, hostname: hostnameFor(request.machine) }), {
      mode: 0o600,
    });
    await writeFile(path.join(files, 'user-data'), cloudConfig({ publicKey: request.publicKey, hostKey }), { mode: 0o600 });
    // Made 0600 before genisoimage writes into it (it keeps the mode of a file that exists).
    await (await open(iso, 'w', 0o600)).close();
    await run(seedTool, ['-quiet', '-output', iso, '-volid', 'cidata', '-joliet', '-rock', path.join(files, 'user-data'), path.join(files, 'meta-data')], {
      timeout: 60_000,
    });
  } catch (error) {
    const reason =
      (error as NodeJS.ErrnoException).code === 'ENOENT'
        ? `${seedTool} is not installed`
        : String((error as { stderr?: string }).stderr || (error as Error).message);
    throw new SeedError(`cannot make the cloud-init seed: ${reason.trim().split('\n').slice(-2).join(' ')}`);
  } finally {
    // Only the volume stays; the loose copies of the key go at once.
    await rm(files, { recursive: true, force: true });
  }
  return { iso, hostKey: hostKey.publicKey };
}

export class SeedError extends Error {}
