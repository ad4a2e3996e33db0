// The TFTP server boards boot from: tftpd-hpa (`in.tftpd`), which Paddock starts itself when the
// lab host has none running for the staging root. It must run as root (as `nobody` its transfer
// children die), in the foreground, read-only, chrooted to the root (`--secure`). A running one
// for the same address and root is reused, also one started by another Paddock process.
import { spawn } from 'node:child_process';
import { mkdir, readdir, readFile } from 'node:fs/promises';

const binary = '/usr/sbin/in.tftpd';

/** Finds an in.tftpd serving `root` on `address` (host:port). */
async function running(root: string, address: string): Promise<number | undefined> {
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const args = (await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '')).split('\0');
    if (!args[0]?.endsWith('in.tftpd')) continue;
    if (args.includes(root) && args.includes(address)) return Number(entry);
  }
  return undefined;
}

const starting = new Map<string, Promise<void>>();
/** The server found or started per address and root: every provisioning checks only that pid. */
const known = new Map<string, number>();

/** Makes sure a TFTP server serves `root` on `address`; throws with the reason when it cannot. */
export async function ensureTftpd(root: string, address: string): Promise<void> {
  const key = `${address} ${root}`;
  const pid = known.get(key);
  if (pid !== undefined && (await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')).includes(root)) return;
  known.delete(key);
  let pending = starting.get(key);
  if (!pending) {
    pending = start(root, address)
      .then((started) => void known.set(key, started))
      .finally(() => starting.delete(key));
    starting.set(key, pending);
  }
  return pending;
}

async function start(root: string, address: string): Promise<number> {
  const found = await running(root, address);
  if (found !== undefined) return found;
  await mkdir(root, { recursive: true, mode: 0o755 });
  const child = spawn(binary, ['--foreground', '--secure', '--user', 'root', '--address', address, root], {
    detached: true,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = await new Promise<number | null | 'running'>((resolve) => {
    child.once('error', () => resolve(-1));
    child.once('exit', (code) => resolve(code));
    setTimeout(() => resolve('running'), 300).unref();
  });
  if (exited !== 'running') {
    throw new Error(
      `the TFTP server (${binary}) did not start on ${address}: ${stderr.trim() || (exited === -1 ? 'it is not installed (Debian package tftpd-hpa)' : `exit status ${exited}; is another server using the port?`)}`,
    );
  }
  child.stderr.destroy();
  child.unref();
  return child.pid!;
}
