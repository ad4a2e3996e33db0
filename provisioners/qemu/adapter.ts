// What the qemu kind does to the host: free loopback ports, copy-on-write overlays with qemu-img,
// QEMU's command line, starting it (daemonized, so a VM outlives an agent that crashes), finding
// the VMs a run directory or the process table says belong to Paddock, reading the console, and
// stopping a VM. No reservation logic lives here.
import { setTimeout as sleep } from 'node:timers/promises';
import { execFile, spawn } from 'node:child_process';
import { constants } from 'node:fs';
import { access, open, readdir, readFile, stat } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { promisify } from 'node:util';
import { CappedLog } from '../../boards/console/capped-log.js';
import { consoleLines } from '../../boards/console/types.js';
import type { QemuSettings } from './settings.js';

const run = promisify(execFile);

/** QEMU option values separate fields with commas; a comma inside a value is written twice. */
export function optionValue(value: string): string {
  return value.replaceAll(',', ',,');
}

/** A loopback port nothing listens on right now (QEMU's hostfwd binds it; a lost race is retried). */
export async function freeLoopbackPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** Whether `command` (a path, or a name looked up on PATH as a shell would) is an executable file here. */
export async function isExecutable(command: string): Promise<boolean> {
  const candidates = command.includes('/')
    ? [command]
    : (process.env.PATH ?? '')
        .split(':')
        .filter(Boolean)
        .map((dir) => path.join(dir, command));
  for (const candidate of candidates) {
    const file = await stat(candidate).catch(() => undefined);
    if (
      file?.isFile() &&
      (await access(candidate, constants.X_OK).then(
        () => true,
        () => false,
      ))
    )
      return true;
  }
  return false;
}

/** What keeps this host from running the slot's VMs: its QEMU or qemu-img missing, KVM asked for and not there. */
export async function hostProblems(settings: Pick<QemuSettings, 'binary' | 'qemuImg' | 'accel'>): Promise<string[]> {
  const problems: string[] = [];
  for (const command of [settings.binary, settings.qemuImg]) {
    if (!(await isExecutable(command))) problems.push(`${command} is not an executable file${command.includes('/') ? '' : ' on PATH'} on this lab host`);
  }
  if (settings.accel === 'kvm') {
    await access('/dev/kvm', constants.R_OK | constants.W_OK).catch((error: unknown) =>
      problems.push(`accel kvm, but /dev/kvm cannot be opened (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`),
    );
  }
  return problems;
}

/** Makes `overlay` (qcow2) backed by `base`, which is never written. Throws with qemu-img's reason. */
export async function createOverlay(qemuImg: string, base: string, format: 'qcow2' | 'raw', overlay: string): Promise<void> {
  try {
    await run(qemuImg, ['create', '-q', '-f', 'qcow2', '-F', format, '-b', base, overlay], { timeout: 60_000 });
  } catch (error) {
    throw new Error(lastLines(String((error as { stderr?: string }).stderr ?? (error as Error).message), 2));
  }
}

/** One VM as QEMU is told to run it: the slot's settings, its size, and this reservation's files. */
export interface VmSpec extends Pick<QemuSettings, 'binary' | 'machine' | 'accel' | 'cpu' | 'nic' | 'guestPort' | 'extraArgs'> {
  cpus: number;
  memoryMiB: number;
  port: number;
  name: string;
  pidFile: string;
  /** A unix socket QEMU listens on for the serial console (consoleSocket). */
  consoleSocket: string;
  /** The reservation's public key for the guest's fw_cfg hook (images with access `hook`). */
  keyFile?: string;
  /** A NoCloud `cidata` volume, attached read-only after the disk (images with access `cloud-init`). */
  seed?: string;
  disk?: string;
  kernel?: { kernel: string; initrd?: string; dtb?: string; append: string };
}

/** QEMU's arguments for a VM: no display, user networking with SSH forwarded, the key in fw_cfg or a cloud-init seed. */
export function qemuArgs(vm: VmSpec): string[] {
  const args = [
    '-name',
    `${optionValue(vm.name)},process=${optionValue(vm.name)}`,
    '-machine',
    `${vm.machine},accel=${vm.accel}`,
    '-cpu',
    vm.cpu,
    '-smp',
    String(vm.cpus),
    '-m',
    String(vm.memoryMiB),
    '-nodefaults',
    '-no-user-config',
    '-display',
    'none',
    // The console goes to a socket, not a file: the agent writes the log, capped (attachConsole).
    // With nobody connected QEMU drops the output, so the guest never blocks on it.
    '-chardev',
    `socket,id=console,path=${optionValue(vm.consoleSocket)},server=on,wait=off`,
    '-serial',
    'chardev:console',
    '-nic',
    `user,model=${vm.nic},hostfwd=tcp:127.0.0.1:${vm.port}-:${vm.guestPort}`,
    '-device',
    'virtio-rng-pci',
  ];
  // The reservation's public key: the guest reads it at boot (no key is built into images).
  if (vm.keyFile) args.push('-fw_cfg', `name=opt/paddock/authorized_keys,file=${optionValue(vm.keyFile)}`);
  if (vm.kernel) {
    args.push('-kernel', vm.kernel.kernel, '-append', vm.kernel.append);
    if (vm.kernel.initrd) args.push('-initrd', vm.kernel.initrd);
    if (vm.kernel.dtb) args.push('-dtb', vm.kernel.dtb);
  }
  if (vm.disk) args.push('-drive', `file=${optionValue(vm.disk)},if=virtio,format=qcow2,cache=unsafe`);
  if (vm.seed) args.push('-drive', `file=${optionValue(vm.seed)},if=virtio,format=raw,readonly=on`);
  args.push(...vm.extraArgs, '-daemonize', '-pidfile', vm.pidFile);
  return args;
}

/**
 * Starts QEMU daemonized: the command returns once the VM runs (its pid in the pid file) or with
 * QEMU's error. The VM is in its own session, so it outlives the agent; the agent finds it again
 * through the pid file.
 */
export async function startVm(binary: string, args: string[], pidFile: string): Promise<number> {
  const child = spawn(binary, args, { stdio: ['ignore', 'ignore', 'pipe'], detached: true });
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk: string) => {
    if (stderr.length < 16_384) stderr += chunk;
  });
  const code = await new Promise<number | null>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (exitCode) => resolve(exitCode));
  });
  if (code !== 0) throw new QemuStartError(lastLines(stderr, 3) || `${binary} exited with ${code}`);
  const pid = Number((await readFile(pidFile, 'utf8')).trim());
  if (!Number.isInteger(pid) || pid <= 0) throw new QemuStartError(`QEMU wrote no pid to ${pidFile}`);
  return pid;
}

export class QemuStartError extends Error {
  get portTaken(): boolean {
    return /host forwarding|Could not set up host|Address already in use/i.test(this.message);
  }
}

/** Whether `pid` is a running (not zombie) process whose command line mentions `marker`. */
export async function isVmProcess(pid: number, marker: string): Promise<boolean> {
  try {
    const [cmdline, status] = await Promise.all([readFile(`/proc/${pid}/cmdline`, 'utf8'), readFile(`/proc/${pid}/stat`, 'utf8')]);
    const state = status.slice(status.lastIndexOf(')') + 2, status.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X' && cmdline.split('\0').some((arg) => arg.includes(marker));
  } catch {
    return false;
  }
}

/** Processes whose `-pidfile` lies under `root`, with that pid file: VMs Paddock started. */
export async function vmProcessesUnder(root: string): Promise<{ pid: number; pidFile: string }[]> {
  const found: { pid: number; pidFile: string }[] = [];
  const prefix = root.endsWith(path.sep) ? root : `${root}${path.sep}`;
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const cmdline = await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '');
    const args = cmdline.split('\0');
    const at = args.indexOf('-pidfile');
    if (at >= 0 && args[at + 1]?.startsWith(prefix) && (await isVmProcess(Number(entry), prefix))) {
      found.push({ pid: Number(entry), pidFile: args[at + 1] });
    }
  }
  return found;
}

/** Stops a VM: SIGTERM (QEMU exits at once), then SIGKILL if it lingers; resolves when it is gone. */
export async function stopVm(pid: number, marker: string): Promise<void> {
  if (!(await isVmProcess(pid, marker))) return;
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return;
  }
  for (let waited = 0; await isVmProcess(pid, marker); waited += 50) {
    if (waited === 3000) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        return;
      }
    }
    if (waited > 10_000) throw new Error(`QEMU process ${pid} does not stop`);
    await sleep(50);
  }
}

/** Unix socket paths are limited to 107 bytes; a longer data dir cannot host QEMU's console socket. */
export function consoleSocketPath(runDir: string): string {
  const socket = path.join(runDir, 'console.sock');
  if (Buffer.byteLength(socket) > 107)
    throw new Error(`the console socket path ${socket} is longer than a unix socket allows (107 bytes): use a shorter dataDir`);
  return socket;
}

/**
 * Copies a running VM's console from its socket into `log` (capped) until the VM ends or `detach`
 * is called, passing each chunk to `onData` too (the owner's console relay); `write` types on the
 * console. QEMU may take a moment to listen: connecting is retried for a few seconds.
 */
export function attachConsole(socket: string, log: CappedLog, onData?: (chunk: Buffer) => void): { detach(): void; write(bytes: Buffer): void } {
  let connection: net.Socket | undefined;
  let detached = false;
  const connect = (attempt: number) => {
    if (detached) return;
    connection = net.connect(socket);
    connection.on('data', (chunk: Buffer) => {
      log.write(chunk);
      onData?.(chunk);
    });
    connection.on('error', () => {
      if (!detached && attempt < 50) setTimeout(() => connect(attempt + 1), 100).unref();
    });
    connection.on('close', (hadError) => {
      if (!hadError) log.end();
    });
  };
  connect(1);
  return {
    detach() {
      detached = true;
      connection?.destroy();
      log.end();
    },
    write(bytes) {
      if (connection?.writable) connection.write(bytes);
    },
  };
}

/** Reads what the console log gained since `offset`. */
export async function readConsole(file: string, offset: number): Promise<{ text: string; offset: number }> {
  const handle = await open(file, 'r').catch(() => undefined);
  if (!handle) return { text: '', offset };
  try {
    const { size } = await handle.stat();
    if (size <= offset) return { text: '', offset: size < offset ? 0 : offset };
    const length = Math.min(size - offset, 1024 * 1024);
    const buffer = Buffer.alloc(length);
    const { bytesRead } = await handle.read(buffer, 0, length, offset);
    return { text: buffer.subarray(0, bytesRead).toString('utf8'), offset: offset + bytesRead };
  } finally {
    await handle.close();
  }
}

/** The last lines of the console log, for failure reasons (control characters removed). */
export async function consoleTail(file: string, lines = 15): Promise<string> {
  const size = await stat(file).then(
    (info) => info.size,
    () => 0,
  );
  const { text } = await readConsole(file, Math.max(0, size - 8192));
  return consoleLines(text, lines);
}

function lastLines(text: string, count: number): string {
  return text.trim().split('\n').slice(-count).join('\n');
}
