// The `board` kind's provisioner: physical boards on this lab host, booted per reservation from a
// boot bundle the reservation names. Provisioning: unpack the bundle, stage kernel/initrd/dtb under
// the TFTP root (ROOT/paddock/RESERVATION-BOARD/), open the console (kept for the agent's lifetime,
// logged) and a relay for the owner, power the board off and on through its PDU, drive U-Boot to
// boot the kernel with the reservation's key on the command line, then wait for the kernel and,
// when the board has SSH, for a login with the reservation's key. A bundle stored with access
// `overlay` (an image with no Paddock hook) gets no key on the command line: its initrd is staged
// with an initramfs overlay appended (images/initrd-overlay.ts) that carries the key and a host key
// made for the reservation, which readiness then pins. Release powers the board off,
// removes the staged files and closes the relay. The board is driven as a board: nothing here knows
// it may be QEMU. Which folder under the TFTP root was staged for the reservation is the kind's
// detail in the loop's provisioning record (BoardDetail, saved through request.state before staging),
// so a crash right after staging still leaves a record the agent's sweep releases; the TFTP root may
// be shared with other servers on the host, so what is staged there is never taken for Paddock's.
// A board kept warm (lab-host/warm.ts) is provisioned the same way for the agent's own key and
// handed over as it runs (handOver): its staged folder goes with it, its relay is the reservation's.
import { setTimeout as sleep } from 'node:timers/promises';
import { randomBytes } from 'node:crypto';
import { readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { BoardConsole, ExpectTimeout } from '../../boards/console/index.js';
import { createTransport } from '../../boards/console/transport.js';
import { bootNote, CappedLog, defaultConsoleLogMax } from '../../boards/console/capped-log.js';
import { ConsoleRelay } from '../../boards/console/relay.js';
import { ubootBoot, BootError } from '../../boards/boot/uboot.js';
import { ensureTftpd } from '../../boards/boot/tftpd.js';
import { createPowerDriver, PowerControl } from '../../boards/power/index.js';
import { PowerError } from '../../boards/power/types.js';
import { BundleError, unpackBundle, type Bundle } from '../../images/bundle.js';
import { OverlayError, writeOverlayInitrd, type Overlay } from '../../images/initrd-overlay.js';
import { secretFile, stage, unstage, type Staged } from '../../images/staging.js';
import type { PowerAction, Stage } from '../../protocol/agent.js';
import { SshProber } from '../ssh-probe.js';
import {
  parseSettings,
  ProvisionError,
  type KindContext,
  type MachineRecord,
  type Provisioner,
  type ProvisionerFactory,
  type ProvisionRequest,
  type Readiness,
  type StageReporter,
} from '../types.js';
import { boardSettingsSchema, tftpServerAddress, type BoardSettings } from '../../boards/board.js';

export const createBoardProvisioner: ProvisionerFactory<BoardSettings, BoardDetail> = (context) => new BoardProvisioner(context);

/** The kind's detail in the provisioning record. */
export interface BoardDetail {
  /** The folder staged for the reservation under the TFTP root's paddock/ folder. */
  staging: string;
}

type BoardRequest = ProvisionRequest<BoardSettings, BoardDetail>;

const settingsOf = (machine: MachineRecord<BoardSettings>) => parseSettings({ kind: 'board', settingsSchema: boardSettingsSchema }, machine);

interface Session {
  relay: ConsoleRelay;
  address: { host: string; port: number };
  log: CappedLog;
  untap: () => void;
}

export class BoardProvisioner implements Provisioner<BoardSettings, BoardDetail> {
  private readonly consoles = new Map<string, BoardConsole>();
  private readonly powers = new Map<string, PowerControl>();
  private readonly sessions = new Map<string, Session>();

  /** Overlays half built when an agent stopped hold host keys: gone before this agent builds any. */
  private readonly overlaysCleared: Promise<void>;

  constructor(private readonly context: KindContext) {
    this.overlaysCleared = rm(this.overlaysDir(), { recursive: true, force: true }).catch(() => undefined);
  }

  private overlaysDir(): string {
    return path.join(this.context.dataDir, 'agent', 'overlays');
  }

  async close(): Promise<void> {
    for (const session of this.sessions.values()) {
      session.untap();
      await session.relay.close();
    }
    this.sessions.clear();
    await Promise.all([...this.consoles.values()].map((console) => console.close()));
    this.consoles.clear();
  }

  /**
   * The console line (a serial device that exists, a TCP console that answers: the line this agent
   * holds open counts) and the PDU (it answers, where its driver can ask without switching).
   */
  async check(machine: MachineRecord<BoardSettings>, signal: AbortSignal): Promise<string[]> {
    const settings = settingsOf(machine);
    const console = this.consoles.get(machine.name);
    const outcomes = await Promise.allSettled([
      console ? console.check(signal) : createTransport(settings.console).check(signal),
      this.powerOf(machine.name, settings).driver.check?.(signal),
    ]);
    return outcomes.flatMap((outcome) => (outcome.status === 'rejected' ? [(outcome.reason as Error).message] : []));
  }

  async provision(request: BoardRequest, report: StageReporter, signal: AbortSignal, again?: string): Promise<Readiness> {
    const board = request.machine.name;
    const settings = settingsOf(request.machine);
    let stageNow: Stage = 'powerConfirmed';
    const fail = (message: string, fault: 'infrastructure' | 'request', code: string) => new ProvisionError(`${board}: ${message}`, fault, stageNow, { code });

    if (!request.image)
      throw fail('a board boots an image: name a boot bundle or a raw disk image in the request (image: NAME[:TAG])', 'request', 'image_required');
    const image = await this.context.images.fetch(request.image, signal);
    const storage = settings.boot.storage;
    const flashing = image.format === 'raw' && storage !== undefined;
    if (image.format !== 'bundle' && !flashing) {
      const why =
        image.format === 'raw' ? 'this board has no storage to flash it to (boot.storage)' : 'boards boot a bundle over TFTP or flash a raw disk image';
      throw fail(`image ${image.ref} is ${image.format}: ${why}`, 'request', 'image_format_unsupported');
    }
    const arch = request.machine.labels.arch;
    if (arch !== undefined && image.arch !== arch)
      throw fail(`image ${image.ref} is for ${image.arch}, this board is ${arch}`, 'request', 'image_arch_mismatch');
    let bundle: Bundle | undefined;
    if (!flashing) {
      try {
        bundle = await unpackBundle(image.file, path.join(this.context.dataDir, 'agent', 'bundles', image.sha256));
      } catch (error) {
        if (error instanceof BundleError) throw fail(`image ${image.ref} cannot be used: ${error.message}`, 'request', error.code);
        throw error;
      }
    }

    const root = this.tftpRoot(settings);
    const tftpServer = tftpServerAddress(settings.boot);
    if (tftpServer !== 'external') {
      await ensureTftpd(root, tftpServer).catch((error: unknown) => {
        throw fail((error as Error).message, 'infrastructure', 'tftp_unavailable');
      });
    }
    const overlaid = bundle !== undefined && image.access === 'overlay' && settings.ssh !== undefined;
    if (overlaid && !bundle?.initrd) throw fail(`image ${image.ref} has access overlay but its bundle has no initrd to append to`, 'request', 'image_invalid');
    if (overlaid && settings.ssh?.user !== 'root') {
      throw fail(
        `image ${image.ref} has access overlay, which installs root's key; this board logs in as ${settings.ssh?.user}`,
        'request',
        'overlay_unsupported',
      );
    }
    const files: Record<string, string> = bundle ? { kernel: bundle.kernel } : { disk: image.file };
    if (bundle?.initrd && !overlaid) files.initrd = bundle.initrd;
    if (bundle?.dtb) files.dtb = bundle.dtb;
    const staging = stagingName(request.reservationId, board);
    // A board handed over warm was staged under its warm boot's name: a boot again in the lease stages it anew under the reservation's.
    const earlier = await this.recordedStaging(request);
    if (earlier !== undefined && earlier !== staging) await unstage(root, earlier);
    // Recorded first, so a crash right after staging still leaves a trace the next start cleans.
    await request.state.save({ staging });
    const staged = await stage(root, staging, files);
    const overlay = overlaid ? await this.stageOverlay(request, bundle!.initrd!, staged, fail) : undefined;
    if (overlay) staged.files.initrd = overlay.path;

    const console = await this.console(board, settings).catch((error: unknown) => {
      throw fail(`cannot open the console: ${(error as Error).message}`, 'infrastructure', 'console_unavailable');
    });
    const relay = await this.openSession(request, settings, console, again);

    // Power cycle with the console already listening, so nothing U-Boot prints is missed. A board
    // known to be off (Paddock switched it off at the last release) is only switched on; on() keeps
    // the minimum off-time either way.
    const power = this.powerOf(board, settings);
    try {
      if (power.state !== 'off') await power.off(AbortSignal.any([signal, AbortSignal.timeout(settings.timeouts.power * 1000)]));
      console.mark();
      await power.on(AbortSignal.any([signal, AbortSignal.timeout(settings.timeouts.power * 1000)]));
    } catch (error) {
      signal.throwIfAborted();
      throw fail(`power: ${(error as Error).message}`, 'infrastructure', 'power_failed');
    }
    await report.stage('powerConfirmed');
    stageNow = 'bootSeen';

    const kernelCompressed = bundle ? (await readFile(bundle.kernel).then((data) => data.subarray(0, 2))).equals(Buffer.from([0x1f, 0x8b])) : false;
    const key = Buffer.from(request.publicKey).toString('base64');
    try {
      await ubootBoot({
        console,
        prompt: settings.boot.prompt,
        network: settings.boot,
        files:
          flashing && storage
            ? { disk: staged.files.disk, storage }
            : {
                kernel: staged.files.kernel,
                ...(staged.files.initrd ? { initrd: staged.files.initrd } : {}),
                ...(staged.files.dtb ? { dtb: staged.files.dtb } : {}),
              },
        kernelCompressed,
        bootCommand: settings.boot.command,
        decompressAddress: settings.boot.decompressAddress,
        bootargs: overlay ? (request.cmdline ?? bundle?.cmdline ?? '') : `${request.cmdline ?? bundle?.cmdline ?? ''} paddock.authorized_key=${key}`.trim(),
        timeouts: { bootloader: settings.timeouts.bootloader * 1000, tftp: settings.timeouts.tftp * 1000, kernel: settings.timeouts.kernel * 1000 },
        signal,
      });
      // The kernel runs: wait for it to reach user space (or to panic). An image with no hook may
      // boot without a word (`quiet`, no markers): for it the kernel starting is the boot seen, and
      // the SSH wait below still catches a panic.
      const booted = overlay
        ? undefined
        : await console.expect(
            [/paddock: kernel booted|Run \/init|Freeing unused kernel/, /Kernel panic - not syncing[^\n]*/],
            settings.timeouts.kernel * 1000,
            'the kernel reaching user space',
            signal,
          );
      if (booted?.index === 1)
        throw new BootError('kernel', 'image_unbootable', 'request', `kernel step: ${booted.match[0].trim()}; console tail:\n${console.tail()}`);
    } catch (error) {
      if (error instanceof BootError) throw fail(`${error.message}`, error.fault, error.code);
      if (error instanceof ExpectTimeout) throw fail(`kernel step: ${error.message}; console tail:\n${error.tail}`, 'request', 'kernel_timeout');
      throw error;
    }
    await report.stage('bootSeen');

    if (!settings.ssh) {
      stageNow = 'addressKnown';
      try {
        await console.expect([/paddock: (console|ssh) ready|\n[^\n]*[#$] /], settings.timeouts.login * 1000, 'a shell on the console', signal);
      } catch (error) {
        if (error instanceof ExpectTimeout) throw fail(`login step: ${error.message}; console tail:\n${error.tail}`, 'request', 'boot_timeout');
        throw error;
      }
      return { console: relay };
    }
    await report.stage('addressKnown');
    stageNow = 'sshReady';
    const hostKey = await this.awaitSsh(request, settings, console, signal, overlay?.hostKey).catch((error: unknown) => {
      if (error instanceof ProvisionError) throw error;
      signal.throwIfAborted();
      throw fail(`ssh step: ${(error as Error).message}; console tail:\n${console.tail()}`, 'request', 'boot_timeout');
    });
    await report.stage('sshReady');
    return { host: settings.ssh.host, port: settings.ssh.port, user: settings.ssh.user, hostKey, console: relay };
  }

  /**
   * Power during the lease: `off` switches the board off through its PDU; `on` and `cycle` boot the
   * staged image again from the bootloader up, as provisioning does (off unless it is off, the
   * minimum off-time, on), keeping the owner's console relay and appending to the console log.
   */
  async power(request: BoardRequest, action: PowerAction, report: StageReporter, signal: AbortSignal): Promise<Readiness | undefined> {
    if (action !== 'off') return this.provision(request, report, signal, `power ${action}`);
    const settings = settingsOf(request.machine);
    this.sessions.get(request.allocationId)?.log.write(Buffer.from(bootNote('power off')));
    try {
      await this.powerOf(request.machine.name, settings).off(AbortSignal.any([signal, AbortSignal.timeout(settings.timeouts.power * 1000)]));
    } catch (error) {
      signal.throwIfAborted();
      throw new ProvisionError(`${request.machine.name}: power off: ${(error as Error).message}`, 'infrastructure', 'powerConfirmed', { code: 'power_failed' });
    }
    return undefined;
  }

  async release(request: BoardRequest): Promise<void> {
    const board = request.machine.name;
    const settings = settingsOf(request.machine);
    await this.closeSession(request.allocationId);
    // The staged files go first: a PDU that does not answer must not leave them behind. The folder
    // recorded is taken only if it is a folder name (the record is data like any other).
    const staging = (await this.recordedStaging(request)) ?? stagingName(request.reservationId, board);
    await unstage(this.tftpRoot(settings), staging);
    try {
      await this.powerOf(board, settings).off(AbortSignal.timeout(settings.timeouts.power * 1000));
    } catch (error) {
      if (error instanceof PowerError) throw new ProvisionError(`${board}: power off: ${error.message}`, 'infrastructure', undefined, { code: 'power_failed' });
      throw error;
    }
  }

  /**
   * A board booted for the agent's warm pool becomes the reservation's: its staged folder (the
   * detail) goes with it, so the reservation's release unstages it and powers the board off. The
   * warm boot's relay and log are closed; the reservation gets a relay of its own (its console
   * secret) and a console log that starts at the hand-over.
   */
  async handOver(warm: BoardRequest, request: BoardRequest): Promise<{ console: { host: string; port: number } }> {
    const detail = await warm.state.read();
    if (detail?.staging === undefined) throw new ProvisionError(`${request.machine.name}: the warm board has no staged boot`, 'infrastructure');
    await request.state.save(detail);
    await this.closeSession(warm.allocationId);
    const settings = settingsOf(request.machine);
    const console = await this.console(request.machine.name, settings);
    return { console: await this.openSession(request, settings, console) };
  }

  private async closeSession(allocationId: string): Promise<void> {
    const session = this.sessions.get(allocationId);
    if (!session) return;
    this.sessions.delete(allocationId);
    session.untap();
    await session.relay.close();
  }

  /** The folder the record says was staged, if it is a folder name. */
  private async recordedStaging(request: BoardRequest): Promise<string | undefined> {
    const recorded = (await request.state.read())?.staging;
    return typeof recorded === 'string' && /^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(recorded) ? recorded : undefined;
  }

  /** The board's TFTP root: its own setting, or this lab host's (each agent has its own data directory). */
  private tftpRoot(settings: BoardSettings): string {
    return settings.boot.tftpRoot ?? path.join(this.context.dataDir, 'tftp');
  }

  private console(board: string, settings: BoardSettings): Promise<BoardConsole> {
    let console = this.consoles.get(board);
    if (!console) {
      console = new BoardConsole(settings.console, path.join(this.context.dataDir, 'boards', board, 'console.log'), this.context.consoleLogMax);
      this.consoles.set(board, console);
    }
    const opened = console;
    return opened.open().then(() => opened);
  }

  private powerOf(board: string, settings: BoardSettings): PowerControl {
    let power = this.powers.get(board);
    if (!power) {
      power = new PowerControl(createPowerDriver(settings.power), {
        board,
        minOffTimeMs: settings.minOffTime * 1000,
        stateFile: path.join(this.context.dataDir, 'boards', board, 'power.json'),
        ...(this.context.observePower ? { observe: { driver: settings.power.driver, observer: this.context.observePower } } : {}),
      });
      this.powers.set(board, power);
    }
    return power;
  }

  /**
   * The relay for the owner and the reservation's copy of the console log. A boot again in the same
   * lease (`again`: a power action) keeps both, and notes in the log what started it; after a
   * re-deploy (the session was closed with the release) the log is appended to.
   */
  private async openSession(request: BoardRequest, settings: BoardSettings, console: BoardConsole, again?: string): Promise<{ host: string; port: number }> {
    const previous = this.sessions.get(request.allocationId);
    if (previous && again !== undefined) {
      previous.log.write(Buffer.from(bootNote(again)));
      return previous.address;
    }
    if (previous) {
      previous.untap();
      await previous.relay.close();
    }
    const logFile = path.join(this.context.consolesDir, request.reservationId, `${request.machine.name}.log`);
    const log = new CappedLog(logFile, this.context.consoleLogMax ?? defaultConsoleLogMax, 'head');
    if (log.bytes > 0) log.write(Buffer.from(bootNote(again ?? (request.image ? `boot ${request.image}` : 'boot'))));
    const untapLog = console.tap((chunk) => log.write(chunk));
    // Without the secret (a task from an older API) the relay lets nobody in.
    const relay = new ConsoleRelay(console, request.consoleSecret ?? randomBytes(24).toString('base64url'));
    const address = await relay.listen(settings.relay.host);
    this.sessions.set(request.allocationId, {
      relay,
      address,
      log,
      untap: () => {
        untapLog();
        log.end();
      },
    });
    return address;
  }

  /**
   * The bundle's initrd with the reservation's overlay appended, staged under a name nobody can
   * guess (it holds the host key's private half), for the board to fetch instead of the initrd.
   */
  private async stageOverlay(
    request: BoardRequest,
    initrd: string,
    staged: Staged,
    fail: (message: string, fault: 'infrastructure' | 'request', code: string) => ProvisionError,
  ): Promise<Overlay & { path: string }> {
    const target = secretFile(staged, 'initrd');
    await this.overlaysCleared;
    try {
      const overlay = await writeOverlayInitrd({
        base: initrd,
        target: target.file,
        mode: 0o644,
        authorizedKeys: request.publicKey,
        workDir: this.overlaysDir(),
      });
      const { key, archive, total } = overlay.timings;
      this.context.log.info(
        { reservation: request.reservationId, machine: request.machine.name },
        `${request.machine.name}: initrd overlay for ${request.reservationId} (${overlay.servers.join(', ')}) in ${total.toFixed(0)} ms (host key ${key.toFixed(0)} ms, archive ${archive.toFixed(0)} ms)`,
      );
      return { ...overlay, path: target.path };
    } catch (error) {
      if (error instanceof OverlayError) throw fail(error.message, error.code === 'image_invalid' ? 'request' : 'infrastructure', error.code);
      throw error;
    }
  }

  /**
   * Tries SSH logins with the reservation's key until one works. The host key is pinned: to the one
   * the overlay installed, else to the one the console prints (when it prints one).
   */
  private async awaitSsh(request: BoardRequest, settings: BoardSettings, console: BoardConsole, signal: AbortSignal, pinned?: string): Promise<string> {
    const ssh = settings.ssh!;
    const deadline = Date.now() + settings.timeouts.login * 1000;
    // The console announcing SSH starts a login attempt at once (the marker may span chunks).
    let announced = false;
    let recent = '';
    const untap = console.tap((chunk) => {
      recent = (recent + chunk.toString('latin1')).slice(-64);
      if (recent.includes('paddock: ssh ready')) {
        announced = true;
        recent = '';
      }
    });
    const prober = new SshProber({ host: ssh.host, port: ssh.port, user: ssh.user, privateKey: request.privateKey ?? '', signal }, 0);
    try {
      for (;;) {
        signal.throwIfAborted();
        const tail = console.tail(200);
        // The last key printed: earlier boots of the board printed theirs too.
        prober.poke(announced, pinned ?? [...tail.matchAll(/paddock: ssh host key (ssh-[a-z0-9-]+ [A-Za-z0-9+/=]+)/g)].pop()?.[1]);
        announced = false;
        if (prober.hostKey !== undefined) return prober.hostKey;
        // Only this boot's output: the console holds earlier boots of the board (an earlier image's panic, say).
        if (/Kernel panic - not syncing/.test(console.unread())) {
          throw new ProvisionError(`${request.machine.name}: the kernel panicked; console tail:\n${console.tail()}`, 'request', 'sshReady', {
            code: 'image_unbootable',
          });
        }
        if (Date.now() > deadline) throw new Error(`no SSH login within ${settings.timeouts.login}s (last attempt: ${prober.last})`);
        await sleep(100);
      }
    } finally {
      untap();
    }
  }
}

function stagingName(reservationId: string, board: string): string {
  return `${reservationId}-${board}`;
}
