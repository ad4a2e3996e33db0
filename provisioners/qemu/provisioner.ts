// The `qemu` kind's provisioner: VM slots on the agent's host. For a reservation it fetches the
// image, makes a copy-on-write overlay (the stored image is never written and nothing outlives the
// reservation), starts QEMU with user networking forwarding a free loopback port to the guest's SSH
// and the reservation's public key (in fw_cfg for images with Paddock's hook; for `cloud-init`
// images in a NoCloud seed volume, seed.ts, with a host key made for this VM), and captures the serial
// console. Readiness: the process runs (powerConfirmed), the console shows the kernel (bootSeen), the
// forwarded port is known (addressKnown), an SSH login with the reservation's key works and its host
// key is captured (sshReady; a cloud-init guest must present the host key its seed gave it). A ready
// VM is watched: if QEMU ends mid-lease the reservation fails.
//
// On disk, per slot and reservation: DATA/qemu/SLOT/RESERVATION/ (0700) holds the key or the seed,
// the overlay, QEMU's pid file and its console socket; the agent copies the console, capped at consoles.maxLogSize, to
// DATA/agent/consoles/RESERVATION/SLOT.log, which it sends on to the API (kept there after
// release), and relays it to the owner, who may type at it (console-relay.ts). What a restarted agent needs to judge and
// re-adopt its VM (the forwarded port, QEMU's pid, the host key) is the kind's detail in the loop's
// provisioning record (QemuDetail, saved through request.state); the loop writes that record before
// the kind acts and removes it only after a release, so the records say which VMs are Paddock's and
// none is leaked. A release also finds QEMU by its pid file and by the process table (the -pidfile
// path), in case the record lost a pid to a crash.
import { setTimeout as sleep } from 'node:timers/promises';
import { mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { unpackBundle, BundleError } from '../../images/bundle.js';
import type { PowerAction, Stage } from '../../protocol/agent.js';
import { SshProber } from '../ssh-probe.js';
import {
  parseSettings,
  ProvisionError,
  type KindContext,
  type LocalImage,
  type MachineRecord,
  type Provisioner,
  type ProvisionerFactory,
  type ProvisionRequest,
  type SshReadiness,
  type StageReporter,
} from '../types.js';
import {
  attachConsole,
  consoleSocketPath,
  consoleTail,
  createOverlay,
  freeLoopbackPort,
  hostProblems,
  isVmProcess,
  qemuArgs,
  QemuStartError,
  readConsole,
  startVm,
  stopVm,
  vmProcessesUnder,
  type VmSpec,
} from './adapter.js';
import { qemuSettings, type QemuSettings } from './settings.js';
import { SeedError, writeSeed } from './seed.js';
import { VmConsoleRelays } from './console-relay.js';
import { bootNote, CappedLog, defaultConsoleLogMax } from '../../boards/console/capped-log.js';

export const createQemuProvisioner: ProvisionerFactory<QemuSettings, QemuDetail> = (context) => new QemuProvisioner(context);

/** The kind's detail in the provisioning record, so a restarted agent can find and judge its VM. */
export interface QemuDetail {
  /** The loopback port forwarded to the guest's SSH. */
  port: number;
  /** QEMU's process, once started. */
  pid?: number;
  /** The guest's host key, once an SSH login worked. */
  hostKey?: string;
  /** The host key the guest was given in its cloud-init seed: readiness accepts no other. */
  pinnedHostKey?: string;
  /** Where the current boot starts in the console log (earlier boots of the lease come before it). */
  consoleOffset?: number;
  /** The reservation whose run directory the VM uses when not its own: a warm VM handed over keeps the one it booted in. */
  dir?: string;
}

type QemuRequest = ProvisionRequest<QemuSettings, QemuDetail>;

/** Console lines that show a kernel is running (generic Linux, and the test images' marker). */
const bootPatterns = [/Linux version \d/, /paddock: kernel booted/, /\blogin: /, /Run \/init|Run \/sbin\/init|Freeing unused kernel/];
/** Console lines after which the guest will not become ready. */
const deadPatterns = [/Kernel panic - not syncing/, /paddock: error: /];

const MiB = 1024 ** 2;

export class QemuProvisioner implements Provisioner<QemuSettings, QemuDetail> {
  private readonly root: string;
  private readonly consoles: string;
  private readonly watchers = new Map<string, NodeJS.Timeout>();
  /** The agent's copy of each running VM's console into its capped log (the log's path), by run directory. */
  private readonly consoleCopies = new Map<string, { log: string; detach(): void; write(bytes: Buffer): void }>();
  /** The owner's console relay of each ready VM (console-relay.ts), fed by those copies. */
  private readonly relays = new VmConsoleRelays((runDir) => this.consoleCopies.get(runDir)?.write);

  constructor(private readonly context: KindContext) {
    this.root = path.join(context.dataDir, 'qemu');
    this.consoles = context.consolesDir;
  }

  async close(): Promise<void> {
    // VMs keep running when the agent stops: a restarted agent finds them again.
    for (const timer of this.watchers.values()) clearInterval(timer);
    this.watchers.clear();
    for (const copy of this.consoleCopies.values()) copy.detach();
    this.consoleCopies.clear();
    await this.relays.closeAll();
  }

  /** QEMU and qemu-img are here (and /dev/kvm where the slot asks for KVM). */
  async check(machine: MachineRecord<QemuSettings>): Promise<string[]> {
    return hostProblems(settingsOf(machine));
  }

  async provision(request: QemuRequest, report: StageReporter, signal: AbortSignal): Promise<SshReadiness> {
    const settings = settingsOf(request.machine);
    // After an agent restart the VM may still run: carry on with it rather than boot twice (the
    // loop hands back only a detail this same allocation saved).
    const earlier = await request.state.read();
    const runDir = this.runDir(request.machine.name, earlier?.dir ?? request.reservationId);
    const consoleLog = path.join(this.consoles, request.reservationId, `${request.machine.name}.log`);
    const started = Date.now();
    let vm: Booted;
    if (earlier?.pid !== undefined && (await isVmProcess(earlier.pid, runDir))) {
      vm = {
        pid: earlier.pid,
        port: earlier.port,
        consoleOffset: earlier.consoleOffset ?? 0,
        ...(earlier.pinnedHostKey ? { pinnedHostKey: earlier.pinnedHostKey } : {}),
        ...(earlier.dir ? { dir: earlier.dir } : {}),
      };
      this.copyConsole(runDir, consoleLog);
    } else {
      await this.discard(runDir, earlier);
      vm = await this.boot(request, settings, runDir, consoleLog, signal);
    }
    return this.untilReady(request, settings, vm, runDir, consoleLog, report, signal, started);
  }

  /**
   * Power during the lease: `off` stops QEMU and keeps the run directory (the overlay disk with
   * everything written to it); `on` starts QEMU again on that disk; `cycle` is both (a reboot from
   * the firmware up, the disk kept). Readiness is tracked again from the new boot's console output.
   */
  async power(request: QemuRequest, action: PowerAction, report: StageReporter, signal: AbortSignal): Promise<SshReadiness | undefined> {
    const settings = settingsOf(request.machine);
    const detail = await request.state.read();
    const runDir = this.runDir(request.machine.name, detail?.dir ?? request.reservationId);
    const consoleLog = path.join(this.consoles, request.reservationId, `${request.machine.name}.log`);
    const started = Date.now();
    this.unwatch(request.allocationId);
    await this.stop(runDir, detail);
    if (action === 'off') {
      const log = new CappedLog(consoleLog, this.context.consoleLogMax ?? defaultConsoleLogMax, 'head');
      log.write(Buffer.from(bootNote('power off')));
      log.end();
      return undefined;
    }
    // The same forwarded port where it is still free, so the owner's address stays.
    const vm = await this.boot(request, settings, runDir, consoleLog, signal, {
      note: `power ${action}`,
      port: detail?.port,
      pinnedHostKey: detail?.pinnedHostKey,
    });
    return this.untilReady(request, settings, vm, runDir, consoleLog, report, signal, started);
  }

  /** From a started VM to a login: the stages, the detail saved, the VM watched. */
  private async untilReady(
    request: QemuRequest,
    settings: QemuSettings,
    vm: Booted,
    runDir: string,
    consoleLog: string,
    report: StageReporter,
    signal: AbortSignal,
    started: number,
  ): Promise<SshReadiness> {
    await report.stage('powerConfirmed');
    const hostKey = await this.awaitReady(request, settings, vm, runDir, consoleLog, report, signal, started);
    await request.state.save({ ...vm, hostKey });
    this.watch(request, vm.pid, runDir, consoleLog);
    // The owner types at the serial console through a relay that asks for the reservation's console
    // secret (a warm VM, booted for no reservation yet, has none: its console is only watched).
    const secret = request.consoleSecret;
    const console = secret === undefined ? undefined : await this.relays.open(request.allocationId, runDir, secret, this.relays.port(request.allocationId));
    return { host: '127.0.0.1', port: vm.port, user: settings.user, hostKey, ...(console ? { console } : {}) };
  }

  async release(request: QemuRequest): Promise<void> {
    this.unwatch(request.allocationId);
    await this.relays.close(request.allocationId);
    const detail = await request.state.read();
    await this.discard(this.runDir(request.machine.name, detail?.dir ?? request.reservationId), detail);
  }

  /** A VM that was ready when the agent stopped: its console is copied and it is watched again. */
  async adopt(request: QemuRequest): Promise<void> {
    const detail = await request.state.read();
    if (detail?.pid === undefined || this.watchers.has(request.allocationId)) return;
    const runDir = this.runDir(request.machine.name, detail.dir ?? request.reservationId);
    const consoleLog = path.join(this.consoles, request.reservationId, `${request.machine.name}.log`);
    this.copyConsole(runDir, consoleLog);
    this.watch(request, detail.pid, runDir, consoleLog);
  }

  /** A warm VM (booted for the agent's pool) becomes the reservation's: its detail, watch and console follow; its run directory stays. */
  async handOver(warm: QemuRequest, request: QemuRequest): Promise<void> {
    const detail = await warm.state.read();
    if (detail?.pid === undefined) throw new ProvisionError(`${request.machine.name}: the warm VM has no process`, 'infrastructure');
    this.unwatch(warm.allocationId);
    // The reservation's console log starts with this VM's hand-over: readiness reads it from 0.
    await request.state.save({ ...detail, dir: detail.dir ?? warm.reservationId, consoleOffset: 0 });
    await this.adopt(request);
  }

  private runDir(machine: string, reservationId: string): string {
    if (!/^[A-Za-z0-9._-]+$/.test(reservationId) || reservationId.startsWith('.'))
      throw new ProvisionError(`bad reservation id ${JSON.stringify(reservationId)}`, 'infrastructure');
    return path.join(this.root, machine, reservationId);
  }

  /**
   * Copies the VM's console into its log, capped at consoles.maxLogSize (once per run directory).
   * A later boot in the same lease (a power action, a re-deploy) appends to the same log after a
   * line saying what started it.
   */
  private copyConsole(runDir: string, consoleLog: string, note?: string): void {
    const copy = this.consoleCopies.get(runDir);
    if (copy?.log === consoleLog) return;
    // A warm VM handed over: its console goes on in the reservation's log.
    copy?.detach();
    const log = new CappedLog(consoleLog, this.context.consoleLogMax ?? defaultConsoleLogMax, 'head');
    if (note) log.write(Buffer.from(bootNote(note)));
    this.consoleCopies.set(runDir, { log: consoleLog, ...attachConsole(consoleSocketPath(runDir), log, (chunk) => this.relays.feed(runDir, chunk)) });
  }

  /** Stops whatever VM belongs to the run directory and removes the directory (overlay included). */
  private async discard(runDir: string, detail: QemuDetail | undefined): Promise<void> {
    await this.stop(runDir, detail);
    await rm(runDir, { recursive: true, force: true });
  }

  /**
   * Stops whatever VM belongs to the run directory, keeping the directory. The VM is found by the
   * recorded pid, its pid file and the process table (a crash may have cost the record its pid, or
   * the pid file).
   */
  private async stop(runDir: string, detail: QemuDetail | undefined): Promise<void> {
    this.consoleCopies.get(runDir)?.detach();
    this.consoleCopies.delete(runDir);
    const pids = new Set<number>();
    if (Number.isSafeInteger(detail?.pid) && detail!.pid! > 0) pids.add(detail!.pid!);
    const fromFile = Number((await readFile(path.join(runDir, 'qemu.pid'), 'utf8').catch(() => '')).trim());
    if (fromFile > 0) pids.add(fromFile);
    for (const { pid } of await vmProcessesUnder(runDir)) pids.add(pid);
    for (const pid of pids) await stopVm(pid, runDir);
  }

  /**
   * Prepares the disk or kernel from the image and starts QEMU. `again` (a power action) boots on
   * the overlay already there, and says so in the console log.
   */
  private async boot(
    request: QemuRequest,
    settings: QemuSettings,
    runDir: string,
    consoleLog: string,
    signal: AbortSignal,
    again?: { note: string; port?: number; pinnedHostKey?: string },
  ): Promise<Booted> {
    const machine = request.machine;
    if (!request.image) {
      throw new ProvisionError(`${machine.name}: a QEMU machine boots an image: name one in the request (image: NAME[:TAG])`, 'request', undefined, {
        code: 'image_required',
      });
    }
    const image = await this.context.images.fetch(request.image, signal);
    const arch = machine.labels.arch;
    if (arch !== undefined && image.arch !== arch) {
      throw new ProvisionError(`${machine.name}: image ${image.ref} is for ${image.arch}, this slot runs ${arch}`, 'request', undefined, {
        code: 'image_arch_mismatch',
      });
    }
    signal.throwIfAborted();
    await mkdir(runDir, { recursive: true, mode: 0o700 });
    await mkdir(path.dirname(consoleLog), { recursive: true });
    // A power action boots the same disk again: its cloud-init has run for this instance and keeps
    // the host key the first seed gave it, so the seed and the pinned key stay as they are.
    const access = again?.pinnedHostKey
      ? { seed: path.join(runDir, 'seed.iso'), pinnedHostKey: again.pinnedHostKey }
      : await this.keyAccess(request, image, runDir);
    const boot = await this.bootMedia(image, runDir, settings, machine.name, request.cmdline, again !== undefined);
    // Output of earlier boots of the lease is in the log already: readiness reads from here on.
    const consoleOffset = await stat(consoleLog).then(
      (file) => file.size,
      () => 0,
    );

    const pidFile = path.join(runDir, 'qemu.pid');
    const dir = path.basename(runDir) === request.reservationId ? {} : { dir: path.basename(runDir) };
    for (let attempt = 1; ; attempt++) {
      const port = attempt === 1 && again?.port !== undefined ? again.port : await freeLoopbackPort();
      const pinned = { ...(access.pinnedHostKey ? { pinnedHostKey: access.pinnedHostKey } : {}), ...dir };
      await request.state.save({ port, consoleOffset, ...pinned });
      const spec: VmSpec = {
        binary: settings.binary,
        machine: settings.machine,
        accel: settings.accel,
        cpu: settings.cpu,
        cpus: Math.max(1, Math.floor(machine.capacities.cpus ?? 1)),
        memoryMiB: Math.max(64, Math.floor((machine.capacities.ram ?? 256 * MiB) / MiB)),
        nic: settings.nic,
        port,
        guestPort: settings.guestPort,
        name: `paddock-${request.reservationId}`,
        pidFile,
        consoleSocket: consoleSocketPath(runDir),
        ...(access.keyFile ? { keyFile: access.keyFile } : {}),
        ...(access.seed ? { seed: access.seed } : {}),
        ...boot,
        extraArgs: settings.extraArgs,
      };
      try {
        const pid = await startVm(settings.binary, qemuArgs(spec), pidFile);
        this.copyConsole(runDir, consoleLog, again?.note ?? (consoleOffset > 0 ? `boot ${image.ref}` : undefined));
        await request.state.save({ port, pid, consoleOffset, ...pinned });
        return { pid, port, consoleOffset, ...pinned };
      } catch (error) {
        if (error instanceof QemuStartError && error.portTaken && attempt < 3) continue;
        const reason = error instanceof QemuStartError ? error.message : `cannot run ${settings.binary}: ${(error as Error).message}`;
        throw new ProvisionError(`${machine.name}: QEMU did not start: ${reason}`, 'infrastructure', 'powerConfirmed', { code: 'vm_start_failed' });
      }
    }
  }

  /**
   * How the reservation's key reaches the guest, by the image's access: a file for the fw_cfg hook of
   * Paddock's images, or a NoCloud seed (with the host key the guest will present) for cloud-init.
   */
  private async keyAccess(request: QemuRequest, image: LocalImage, runDir: string): Promise<{ keyFile?: string; seed?: string; pinnedHostKey?: string }> {
    if (image.access === 'cloud-init') {
      try {
        const seed = await writeSeed({ runDir, instanceId: request.allocationId, machine: request.machine.name, publicKey: request.publicKey });
        return { seed: seed.iso, pinnedHostKey: seed.hostKey };
      } catch (error) {
        if (!(error instanceof SeedError)) throw error;
        throw new ProvisionError(`${request.machine.name}: ${error.message}`, 'infrastructure', undefined, { code: 'vm_start_failed' });
      }
    }
    const keyFile = path.join(runDir, 'authorized_keys');
    await writeFile(keyFile, `${request.publicKey}\n`, { mode: 0o600 });
    return { keyFile };
  }

  /** The overlay disk and/or the kernel to boot, from a disk image or a boot bundle. */
  private async bootMedia(
    image: LocalImage,
    runDir: string,
    settings: QemuSettings,
    machine: string,
    cmdline: string | undefined,
    keepDisk: boolean,
  ): Promise<Pick<VmSpec, 'disk' | 'kernel'>> {
    const corrupt = (reason: string, code = 'image_corrupt') =>
      new ProvisionError(`${machine}: image ${image.ref} cannot be used: ${reason}`, 'request', undefined, { code });
    const overlay = path.join(runDir, 'overlay.qcow2');
    let base: { file: string; format: 'qcow2' | 'raw' } | undefined;
    let kernel: VmSpec['kernel'];
    if (image.format === 'bundle') {
      let bundle;
      try {
        bundle = await unpackBundle(image.file, path.join(this.context.dataDir, 'agent', 'bundles', image.sha256));
      } catch (error) {
        if (error instanceof BundleError) throw corrupt(error.message, error.code);
        throw error;
      }
      kernel = {
        kernel: bundle.kernel,
        append: cmdline ?? bundle.cmdline,
        ...(bundle.initrd ? { initrd: bundle.initrd } : {}),
        ...(bundle.dtb ? { dtb: bundle.dtb } : {}),
      };
      base = bundle.rootfs;
    } else {
      if (cmdline !== undefined) {
        throw new ProvisionError(
          `${machine}: image ${image.ref} is a disk image: its kernel command line is its own (--cmdline goes with a boot bundle)`,
          'request',
          undefined,
          {
            code: 'cmdline_not_supported',
          },
        );
      }
      base = { file: image.file, format: image.format };
    }
    if (!base) return { ...(kernel ? { kernel } : {}) };
    if (
      keepDisk &&
      (await stat(overlay).then(
        () => true,
        () => false,
      ))
    )
      return { disk: overlay, ...(kernel ? { kernel } : {}) };
    try {
      await createOverlay(settings.qemuImg, base.file, base.format, overlay);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
        throw new ProvisionError(`${machine}: cannot run ${settings.qemuImg}`, 'infrastructure', undefined, { code: 'vm_start_failed' });
      }
      throw corrupt((error as Error).message);
    }
    return { disk: overlay, ...(kernel ? { kernel } : {}) };
  }

  /** Follows the console and tries SSH until a login with the reservation's key works. */
  private async awaitReady(
    request: QemuRequest,
    settings: QemuSettings,
    vm: Booted,
    runDir: string,
    consoleLog: string,
    report: StageReporter,
    signal: AbortSignal,
    started: number,
  ): Promise<string> {
    const machine = request.machine.name;
    const deadline = started + settings.bootTimeout * 1000;
    let offset = vm.consoleOffset;
    let seen = '';
    let stage: Stage = 'powerConfirmed';
    let consoleHostKey: string | undefined;
    const prober = new SshProber({ host: '127.0.0.1', port: vm.port, user: settings.user, privateKey: request.privateKey ?? '', signal });
    const order: Stage[] = ['powerConfirmed', 'bootSeen', 'addressKnown', 'sshReady'];
    const reach = async (next: Stage) => {
      for (const each of order.slice(order.indexOf(stage) + 1, order.indexOf(next) + 1)) await report.stage(each);
      stage = next;
    };
    const fail = async (code: string, fault: 'request' | 'infrastructure', what: string) => {
      const tail = await consoleTail(consoleLog);
      return new ProvisionError(`${machine}: ${what}; console tail:\n${tail}`, fault, order[order.indexOf(stage) + 1] ?? stage, { code });
    };

    for (;;) {
      signal.throwIfAborted();
      const read = await readConsole(consoleLog, offset);
      offset = read.offset;
      // Keep a window of recent text so a pattern split across reads is still found.
      seen = (seen + read.text).slice(-16_384);
      if (stage === 'powerConfirmed' && bootPatterns.some((pattern) => pattern.test(seen))) await reach('addressKnown');
      const marker = /paddock: ssh host key (ssh-[a-z0-9-]+ [A-Za-z0-9+/=]+)/.exec(seen);
      if (marker) consoleHostKey = marker[1];
      if (deadPatterns.some((pattern) => pattern.test(seen))) throw await fail('image_unbootable', 'request', 'the guest failed to boot');
      if (!(await isVmProcess(vm.pid, runDir))) throw await fail('image_unbootable', 'request', 'QEMU exited before the guest was ready');
      // A console line saying SSH is up starts a fresh login attempt at once.
      const announced = /paddock: ssh ready/.test(seen);
      if (announced) seen = seen.replace(/paddock: ssh ready/g, 'paddock: ssh up');
      prober.poke(announced, vm.pinnedHostKey ?? consoleHostKey);
      if (prober.hostKey !== undefined) {
        await reach('sshReady');
        return prober.hostKey;
      }
      if (Date.now() > deadline) {
        throw await fail('boot_timeout', 'request', `not ready within ${settings.bootTimeout}s (last SSH attempt: ${prober.last})`);
      }
      await sleep(100);
    }
  }

  /** Watches a ready VM; if QEMU ends while the reservation holds it, the reservation fails. */
  private watch(request: Pick<ProvisionRequest, 'reservationId' | 'allocationId'>, pid: number, runDir: string, consoleLog: string): void {
    this.unwatch(request.allocationId);
    const timer = setInterval(() => {
      void isVmProcess(pid, runDir).then(async (alive) => {
        if (alive || this.watchers.get(request.allocationId) !== timer) return;
        this.unwatch(request.allocationId);
        const tail = await consoleTail(consoleLog, 10);
        const poweredOff = /reboot: Power down|System halted/.test(tail);
        this.context.lost(
          request,
          `the VM ${poweredOff ? 'was powered off from inside' : 'stopped'} (QEMU process ${pid} ended); console tail:\n${tail}`,
          poweredOff ? 'request' : 'infrastructure',
        );
      });
    }, 1000);
    timer.unref();
    this.watchers.set(request.allocationId, timer);
  }

  private unwatch(allocationId: string): void {
    clearInterval(this.watchers.get(allocationId));
    this.watchers.delete(allocationId);
  }
}

/** A VM started: its process, its forwarded SSH port, and where its boot starts in the console log. */
/** A started VM: its process, its forwarded port, where its boot starts in the console log, and the host key its seed gave it (cloud-init images). */
interface Booted {
  pid: number;
  port: number;
  consoleOffset: number;
  pinnedHostKey?: string;
  dir?: string;
}

const settingsOf = (machine: MachineRecord<QemuSettings>) => parseSettings(qemuSettings, machine);
