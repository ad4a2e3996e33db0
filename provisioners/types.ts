// The provisioner interface: what a machine kind implements so the shared loop (lab-host/loop.ts)
// can turn (machine, image, credentials) into a reachable host and tear it down again. A kind
// declares its settings schema (validated when the config loads, unknown keys rejected) and acts on
// one machine at a time; timeouts, retries, reporting to the API and the persisted provisioning
// record belong to the loop, not to the kind: a kind keeps what it must remember across an agent
// crash in the record's `detail`, through the ProvisionState handle the loop passes in.
import type { ImageAccess, ImageFormat, ProviderImage } from '../protocol/api.js';
import type { z } from 'zod';
import type { PowerAction, Stage } from '../protocol/agent.js';
import type { Log } from '../protocol/log.js';
import type { PowerObserver } from '../boards/power/types.js';

export interface MachineRecord<Settings = unknown> {
  name: string;
  kind: string;
  labels: Record<string, string>;
  capacities: Record<string, number>;
  settings: Settings;
}

export interface ProvisionRequest<Settings = unknown, Detail = unknown> {
  reservationId: string;
  allocationId: string;
  machine: MachineRecord<Settings>;
  /** OpenSSH public key line of the reservation's fresh key pair. */
  publicKey: string;
  /** The reservation's private key, when known, so readiness is proven with the key the owner will use. */
  privateKey?: string;
  /** What a connection to the console relay must answer first (boards); see AgentTask. */
  consoleSecret?: string;
  image?: string;
  /** A kernel command line in place of the boot bundle's (a re-deploy's `--cmdline`); kinds that boot no bundle refuse it. */
  cmdline?: string;
  /** The reservation's hard cap (ms since the epoch): credentials a kind installs expire then. */
  hardCapAt?: number;
  /** The kind's part of the loop's provisioning record for this machine and reservation. */
  state: ProvisionState<Detail>;
}

/**
 * The kind's own part (`detail`) of the provisioning record the shared loop keeps for one machine
 * and one reservation on the agent's disk: what the kind needs to find its work again after an
 * agent crash (a VM's pid and port, say). The loop owns the record (written at the start, on every
 * stage, at readiness; removed once a release succeeds); the kind only reads and replaces its detail.
 */
export interface ProvisionState<Detail = unknown> {
  /**
   * The detail saved for this machine and reservation, if any. While provisioning, only a detail
   * saved by the same allocation is returned (one an earlier allocation saved describes other work).
   */
  read(): Promise<Detail | undefined>;
  /** Replaces the detail; resolves once the record is on disk (an atomic replace). */
  save(detail: Detail): Promise<void>;
}

/**
 * Where the owner logs in over SSH, and the host key seen on the handshake (so clients can pin it);
 * for boards also the console relay (telnet). A console-only board has no SSH fields.
 */
export type Readiness = SshReadiness | { console: { host: string; port: number } };

export interface SshReadiness {
  host: string;
  port: number;
  user: string;
  /** Absent only where readiness stops before SSH (an OpenStack pool with `ready: active`). */
  hostKey?: string;
  console?: { host: string; port: number };
}

export interface StageReporter {
  stage(stage: Stage): Promise<void>;
}

export interface Provisioner<Settings = unknown, Detail = unknown> {
  /**
   * Brings the machine up for the reservation. Must be safe to call again after a crash: the
   * detail the same allocation saved before is in `request.state`.
   */
  provision(request: ProvisionRequest<Settings, Detail>, report: StageReporter, signal: AbortSignal): Promise<Readiness>;
  /**
   * Tears down what provision did. Idempotent: releasing twice, or what was never provisioned,
   * succeeds. The leak sweep calls it with only the ids (no keys) and whatever detail was saved.
   */
  release(request: ProvisionRequest<Settings, Detail>): Promise<void>;
  /**
   * Switches a machine provisioned for the reservation off, on, or off and on again (a reboot that
   * keeps its disk), during the lease. `on` and `cycle` track readiness again as provision does
   * (stages from powerConfirmed) and resolve to it; `off` resolves to undefined once the machine is
   * off. Kinds whose descriptor says `leaseActions` implement it. A re-deploy needs nothing of the
   * kind: the loop releases the machine and provisions it again with the new image.
   */
  power?(request: ProvisionRequest<Settings, Detail>, action: PowerAction, report: StageReporter, signal: AbortSignal): Promise<Readiness | undefined>;
  /**
   * Takes back a machine that was ready when the agent stopped and whose reservation lives on (a
   * VM to watch again), from the detail in `request.state`. Called by the agent's sweeps, once per
   * allocation and agent run; kinds that hold nothing between tasks leave it out.
   */
  adopt?(request: ProvisionRequest<Settings, Detail>): Promise<void>;
  /**
   * Reservation ids that leave traces outside the agent's provisioning records (servers in a
   * cloud, keys on a static host), for leak cleanup. Kinds whose every trace is covered by the
   * records (the loop writes one before a kind acts and removes it only after a release) leave it out.
   */
  owned?(machine: MachineRecord<Settings>): Promise<string[]>;
  /**
   * What keeps this lab host from using the machine now, one sentence each (no such serial device,
   * a PDU that does not answer, an SSH port that refuses); empty when nothing does. Cheap, and
   * never powers, boots or changes anything: the agent runs it periodically on every machine,
   * reserved or not, and gives up on it when `signal` fires. Kinds with nothing to check leave it out.
   */
  check?(machine: MachineRecord<Settings>, signal: AbortSignal): Promise<string[]>;
  /**
   * Hands a machine made ready for a warm pool (`warm`: booted ahead of demand with the agent's own
   * key) over to a reservation (`request`): what the kind keeps of it (its detail, its watch, its
   * console log) becomes the reservation's. The key swap is the agent's (lab-host/warm.ts); kinds
   * whose machines are never kept warm leave it out. Resolves to what differs from the warm
   * machine's readiness for the reservation (a board's console relay, opened for its secret), if anything.
   */
  handOver?(warm: ProvisionRequest<Settings, Detail>, request: ProvisionRequest<Settings, Detail>): Promise<Pick<SshReadiness, 'console'> | void>;
  /** Lets go of what the provisioner keeps open between tasks (connections), when the agent stops. */
  close?(): Promise<void>;
  /**
   * Removes leftovers that belong to no machine (copies of images a provider holds for Paddock),
   * called by the agent's periodic sweeps. Only what two sweeps in a row found unwanted goes.
   */
  sweep?(machines: MachineRecord<Settings>[]): Promise<void>;
}

/** Makes a kind's provisioner for an agent. */
export type ProvisionerFactory<Settings = unknown, Detail = unknown> = (context: KindContext) => Provisioner<Settings, Detail>;

/**
 * A machine kind as the config and the API know it: its settings schema, defaults and pool
 * expansion (the kind's index.ts). A descriptor is light: it loads no driver, no SSH, no serial
 * port; the provisioner (the kind's provisioner.ts) is imported by `load`, which only agents call.
 */
export interface KindDescriptor<Settings = unknown> {
  kind: string;
  settingsSchema: z.ZodType<Settings>;
  /** Settings that name local files; a relative path in them is taken from the config file's folder. */
  pathSettings?: readonly string[];
  /** Labels and capacities a machine of this kind has unless its config says otherwise. */
  defaults?: { labels?: Record<string, string>; capacities?: Record<string, number> };
  /**
   * The outside things a machine of this kind stands for (a static host's login, its key file),
   * for kinds whose machines are not interchangeable slots. Two machines that share one would hand
   * one account to two reservations at once, and the leak sweep of one would remove the other's
   * keys: the config refuses them, and refuses `count` on such a kind.
   */
  identities?(settings: Settings): string[];
  /**
   * Whether a machine of this kind can be powered off, on and rebooted, and booted with another
   * image, during a lease (its provisioner implements `power`). Static hosts cannot: the API refuses
   * both with `power_not_supported`.
   */
  leaseActions?: boolean;
  /**
   * Kinds whose machines can be kept warm (`warm` in the config; the provisioner implements
   * `handOver`) say why a machine of theirs cannot, from its settings, or undefined when it can.
   */
  warm?(settings: Settings): string | undefined;
  /** For kinds whose config entry is a pool offered by a provider (OpenStack flavors). */
  pool?: PoolSupport<Settings>;
  /** The kind's provisioner, imported on first use. */
  load(): Promise<ProvisionerFactory<Settings>>;
}

/** A pool's entry in the config, before it is expanded into machines. */
export interface PoolEntry<Settings = unknown> {
  name: string;
  kind: string;
  labels: Record<string, string>;
  capacities: Record<string, number>;
  settings: Settings;
}

export interface PoolContext {
  dataDir: string;
  log: Log;
  /** The most bytes one console log may hold (consoles.maxLogSize); 16 MiB when not given. */
  consoleLogMax?: number;
}

export interface PoolSupport<Settings = unknown> {
  /**
   * The pool's machines (one per offer and slot, named after the pool) and the most of them that may
   * be reserved at once. Called when the server starts.
   */
  expand(entry: PoolEntry<Settings>, context: PoolContext): Promise<{ machines: Omit<MachineRecord<Settings>, 'kind'>[]; maxInstances: number }>;
  /** The images the provider can boot. */
  images?(entry: PoolEntry<Settings>, context: PoolContext): Promise<ProviderImage[]>;
}

/** What an agent gives the provisioners it creates. */
export interface KindContext {
  /** The agent's own directory: run directories, caches (provisioning records are the loop's: agent/provisioning/). */
  dataDir: string;
  /**
   * Where reservations' console logs go, CONSOLES/RESERVATION/MACHINE.log (a kind writes them with
   * CappedLog, policy `head`); the agent sends them on to the API and removes them after release.
   */
  consolesDir: string;
  /** Images fetched from the API into a local cache, verified by sha256. */
  images: ImageSource;
  /**
   * Tells the API that a ready machine was lost (its VM died): the reservation fails with this
   * reason. Provisioners that watch what they started call it; it is never called for a machine
   * being released.
   */
  lost(request: Pick<ProvisionRequest, 'reservationId' | 'allocationId'>, reason: string, fault: 'infrastructure' | 'request'): void;
  log: Log;
  /** The most bytes one console log may hold (consoles.maxLogSize); 16 MiB when not given. */
  consoleLogMax?: number;
  /** Told of every PDU command as it ends (the agent's metrics). */
  observePower?: PowerObserver;
}

/** An image as a file on the agent's host. */
export interface LocalImage {
  ref: string;
  sha256: string;
  format: ImageFormat;
  arch: string;
  /** How the reservation's key reaches a machine booted from it. */
  access: ImageAccess;
  size: number;
  file: string;
}

export interface ImageSource {
  /** The image `name` or `name:tag` as a local file (downloaded once per sha256). */
  fetch(ref: string, signal?: AbortSignal): Promise<LocalImage>;
  /** The sha256 of every image the store holds now (to tell which copies elsewhere are still wanted). */
  stored(): Promise<Set<string>>;
}

/**
 * A provisioning failure says whose fault it is: the infrastructure's (retry elsewhere, count
 * against the machine's health) or the request's (bad image: fail the reservation, machine stays
 * healthy).
 */
export class ProvisionError extends Error {
  /** Stable and machine-readable, shown with the failed allocation: `image_corrupt`, `boot_timeout`, … */
  readonly code: string;

  constructor(
    message: string,
    readonly fault: 'infrastructure' | 'request',
    readonly stage?: Stage,
    options?: { cause?: unknown; code?: string },
  ) {
    super(message, options);
    this.name = 'ProvisionError';
    this.code = options?.code ?? (fault === 'request' ? 'request_failed' : 'infrastructure_failed');
  }
}

/** A machine's settings as its kind reads them: parsed again so defaults hold for records built elsewhere. */
export function parseSettings<Settings>(kind: Pick<KindDescriptor<Settings>, 'kind' | 'settingsSchema'>, machine: MachineRecord<Settings>): Settings {
  const parsed = kind.settingsSchema.safeParse(machine.settings ?? {});
  if (!parsed.success) {
    const problems = parsed.error.issues.map((issue) => `${issue.path.join('.') || '(settings)'}: ${issue.message}`).join('; ');
    throw new ProvisionError(`${machine.name}: bad ${kind.kind} settings: ${problems}`, 'infrastructure');
  }
  return parsed.data;
}
