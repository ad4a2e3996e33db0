// The JSON shapes of Paddock's HTTP API v1. The server produces them and the client library reads
// them; nothing here has behaviour, so the client may import it without pulling in the server.

export type ReservationState = 'queued' | 'allocated' | 'provisioning' | 'ready' | 'releasing' | 'released' | 'failed' | 'expired' | 'cancelled';

export const endStates: readonly ReservationState[] = ['released', 'failed', 'expired', 'cancelled'];

/** `offline`: its lab host's agent is silent (past `agents.heartbeatTimeout`); it returns to its state before when the agent is heard again. */
export type MachineState = 'new' | 'qualifying' | 'available' | 'reserved' | 'maintenance' | 'quarantined' | 'offline' | 'retired';

export { stages, powerActions } from './agent.js';
export { machineProblemLimits } from './agent.js';
export type { Stage, AgentTask, AgentReport, AgentMachine, AgentHeartbeat, MachineProblem, PowerAction, WarmMachine, WarmPlan, WarmReport } from './agent.js';
export type { RunState, RunTask, RunFinish } from './runner.js';
import type { RunState, RunTask } from './runner.js';
import type { PowerAction, Stage } from './agent.js';

/**
 * `off`: switched off by its owner during the lease (not ready until switched on). A member whose
 * power action or re-deploy failed is `failed` while the reservation lives on: the others keep
 * working, and it can be booted or switched on again. `waiting`: its machine failed while being
 * provisioned and no other matching machine is free yet; it holds no machine meanwhile (`machine` is empty).
 */
export type AllocationState = 'pending' | 'provisioning' | 'ready' | 'off' | 'failed' | 'releasing' | 'released' | 'waiting';

/** A duration is seconds, or a string such as `90s`, `10m`, `2h`, `1d`. */
export type Duration = number | string;

export interface MemberRequest {
  role: string;
  spec: string;
  count?: number;
  image?: string;
}

/** A member as stored: count filled in. */
export interface MemberView {
  role: string;
  spec: string;
  count: number;
  image?: string;
}

export interface ReservationRequest {
  members: MemberRequest[];
  lease?: Duration;
  priority?: number;
  queueTimeout?: Duration;
  idempotencyKey?: string;
}

export interface AllocationView {
  id: string;
  role: string;
  index: number;
  machine: string;
  state: AllocationState;
  stages: Partial<Record<Stage, string>>;
  host?: string;
  port?: number;
  user?: string;
  /** OpenSSH public key line of the host (`ssh-ed25519 AAAA…`), captured at readiness. */
  hostKey?: string;
  /** Set when provisioning failed or the ready machine was lost. */
  failure?: AllocationFailure;
  /**
   * A board's console relay on its lab host: several may watch, one types. The API's console stream
   * goes through it; telnet to it works where the lab allows it and asks for the console secret first.
   */
  console?: { host: string; port: number };
  /**
   * Set while the machine's lab host is silent (ISO 8601, since when): the machine may still work,
   * but its agent cannot release it, report a loss or relay its console until it is heard again.
   */
  labHostSilentSince?: string;
  /** The image booted by the last re-deploy (`paddock boot`), in place of the member's. */
  image?: string;
  /** The kernel command line given with that re-deploy. */
  cmdline?: string;
  /** The power action or re-deploy under way (the allocation is `provisioning` meanwhile). */
  action?: LeaseAction;
  /** Retry on another machine (`health.retries`): how many times this member was moved to another machine so far. */
  retries?: number;
  /** The machines this member failed on while being provisioned: it is not given them again. */
  failedOn?: string[];
  /** While `waiting`: when it gives up (ISO 8601), the request's queue timeout after the failure. */
  waitingUntil?: string;
  /** Set once this allocation failed and its member moved on: the id of the allocation that replaced it. */
  replacedBy?: string;
}

/** A power action or a re-deploy asked for during a lease. */
export type LeaseAction = { type: 'power'; power: PowerAction; by: string } | { type: 'boot'; image: string; cmdline?: string; by: string };

/**
 * Why an allocation failed. `code` is stable: `image_not_found`, `image_corrupt`, `image_invalid` (a bundle's cmdline with a control character), `image_unbootable`,
 * `boot_timeout`, `provision_timeout`, `machine_lost`, `infrastructure_failed`, `request_failed`, …
 * `fault` says whose fault it was: the machine's (`infrastructure`, counted against its health) or
 * the request's (a bad image: the machine stays healthy).
 */
export interface AllocationFailure {
  code: string;
  fault: 'infrastructure' | 'request';
  stage?: Stage;
  reason: string;
}

export interface ReservationView {
  id: string;
  owner: string;
  state: ReservationState;
  reason?: string;
  priority: number;
  leaseSeconds: number;
  createdAt: string;
  updatedAt: string;
  grantedAt?: string;
  expiresAt?: string;
  hardCapAt?: string;
  queueDeadline?: string;
  members: MemberView[];
  allocations: AllocationView[];
  /** 1-based position in the queue while queued. */
  queuePosition?: number;
}

export interface CredentialsView {
  reservationId: string;
  /** OpenSSH private key of the reservation's fresh key pair: returned to the owner only. */
  privateKey: string;
  publicKey: string;
  /** known_hosts lines pinning every ready machine's host key. */
  knownHosts: string;
  /**
   * `via: paddock`: reach the machine through the API's tunnel (`paddock tunnel`, GET
   * /v1/reservations/ID/tunnel); host and port are then its address on its lab host's network.
   */
  machines: { role: string; index: number; machine: string; host: string; port: number; user: string; hostKey: string; via: 'direct' | 'paddock' }[];
  /**
   * Only where the lab allows telnet to console relays (`consoles.telnet`): the relays of the
   * ready boards, and the secret to answer first (`telnet HOST PORT`, then type the secret).
   */
  console?: { secret: string; relays: { role: string; index: number; machine: string; host: string; port: number }[] };
}

export interface EventView {
  id: number;
  reservationId: string;
  at: string;
  /** `action`: a power action or re-deploy asked for (`to` says which: `power cycle`, `boot IMAGE`, …). */
  type: 'state' | 'stage' | 'allocation' | 'action';
  from?: string;
  to: string;
  machine?: string;
  reason?: string;
}

export interface MachineView {
  name: string;
  kind: string;
  /** The lab host whose agent provisions it (config `labHost`). */
  labHost: string;
  state: MachineState;
  labels: Record<string, string>;
  capacities: Record<string, number>;
  reservationId?: string;
  reason?: string;
  failures: number;
  /** While offline: since when (ISO 8601); `reason` says why. */
  offlineSince?: string;
  /**
   * While its lab host's agent reports it cannot reach the machine (its serial device, its PDU, its
   * SSH port): since when and why. It is not matched meanwhile, whatever its state.
   */
  unreachable?: { since: string; reason: string };
  /**
   * Its health score: the share of its last `health.window` provisionings that came up (a request's
   * fault left out), to two decimals, rounded down; 1 with no history. Specs match it as the
   * capacity `health` (`health>=0.95`).
   */
  health: number;
  /** GET /v1/machines/NAME only: its last provisionings, newest first. */
  provisionings?: ProvisioningView[];
  /** Its last qualification run (boots from its pool's reference image before service), when it had one. */
  qualification?: QualificationView;
}

/** One provisioning of a machine (the first boot of a reservation, or a re-deploy or power-on during its lease) as it ended. */
export interface ProvisioningView {
  reservationId: string;
  /** The reservation's owner (`paddock` for the system's own boots). */
  owner: string;
  image?: string;
  outcome: 'ready' | 'failed';
  /** When it failed: the stable code, whose fault, and the stage it failed at (when known). */
  code?: string;
  fault?: 'infrastructure' | 'request';
  stage?: Stage;
  /** Whether it counts toward the health score: a success, or a failure that is the machine's. */
  counted: boolean;
  /** A qualification boot rather than a user's reservation. */
  qualification: boolean;
  startedAt: string;
  endedAt: string;
  /** From start to end. */
  seconds: number;
  /** Each stage reached, with how long it took since the one before (or the start). */
  stages: { stage: Stage; at: string; seconds: number }[];
}

/**
 * A qualification: the machine booted `boots` times from its pool's reference image with a check
 * command; it goes into service when `needed` of them passed, and is quarantined as soon as that can
 * no longer happen. Stops early once the outcome is certain.
 */
export interface QualificationView {
  state: 'running' | 'passed' | 'failed' | 'stopped';
  boots: number;
  needed: number;
  passed: number;
  failed: number;
  /** The failed boots, oldest first: the failure's code, stage and reason, and the boot's reservation. */
  failures: { reservationId: string; code: string; stage?: string; reason: string }[];
  /** The boot under way (its reservation, owned by `paddock`). */
  current?: string;
  startedAt: string;
  endedAt?: string;
  /** Why it ended, when it did not pass. */
  reason?: string;
}

/** A lab host's agent as the API knows it (GET /v1/agents): the lab hosts the machines name, and every agent heard. */
export interface AgentView {
  name: string;
  /** `silent`: not heard within `agents.heartbeatTimeout`, its machines are offline. */
  state: 'online' | 'silent';
  /** What it said in its last claim. */
  version?: string;
  /** When it was last heard (a claim, a report); absent if not since the API started. */
  lastHeard?: string;
  silentSince?: string;
  /** Its clock minus the API's, in seconds, as its last claim showed it. */
  clockOffsetSeconds?: number;
  /** The machines whose `labHost` is this name. */
  machines: string[];
  /** The allocations it holds a provisioning or release task of. */
  tasks: string[];
  /** What is wrong with it: an older version, a clock off by more than the bound, machines it cannot reach. */
  warnings: string[];
}

export interface ExplainView {
  spec: string;
  matches: string[];
  /** Every other machine with the first term it fails. */
  rejected: { machine: string; term: string; reason: string }[];
  /** The matching machines that cannot be handed out now, and why (reserved, offline, unreachable, …). */
  unavailable: UnavailableMachine[];
}

/**
 * A machine that matches but cannot be handed out now. `reason` starts with what stops it:
 * `offline` (its lab host is silent), `unreachable` (its lab host's agent cannot reach it), or its state.
 */
export interface UnavailableMachine {
  machine: string;
  state: MachineState;
  reason: string;
}

export interface ReservationExplainView {
  id: string;
  state: ReservationState;
  queuePosition?: number;
  members: {
    role: string;
    count: number;
    spec: string;
    matches: string[];
    available: string[];
    rejected: ExplainView['rejected'];
    unavailable: UnavailableMachine[];
    /** Its machines that failed while being provisioned and wait for another (never one of `failedOn`) until `waitingUntil`. */
    waiting?: { index: number; code: string; failedOn: string[]; waitingUntil: string }[];
  }[];
}

export interface TokenView {
  name: string;
  role: Role;
  createdAt: string;
  /** When it stops being accepted (401 `token_expired`); absent: never. */
  expiresAt?: string;
  /** Whether `expiresAt` has passed (only with `expiresAt`). */
  expired?: boolean;
  /** Only in the answer to the request that created it. */
  token?: string;
}

export type Role = 'admin' | 'user' | 'agent' | 'runner';

/** Who a request speaks for: a token's name and role. */
export interface Caller {
  name: string;
  role: Role;
}

export interface ApiErrorBody {
  code: string;
  message: string;
  details?: unknown;
  /** The request's X-Request-Id, to quote when asking about it. */
  requestId?: string;
}

export type ImageFormat = 'qcow2' | 'raw' | 'bundle';

/**
 * How a reservation's key reaches a machine booted from an image: `hook`, the image reads it the
 * Paddock way (QEMU fw_cfg, the board kernel's `paddock.authorized_key=`); `cloud-init`, a NoCloud
 * seed (an attached `cidata` volume on QEMU, user data on OpenStack); `overlay`, an initramfs
 * archive appended to a board bundle's initrd. Set at upload (default `hook`).
 */
export const imageAccesses = ['hook', 'cloud-init', 'overlay'] as const;
export type ImageAccess = (typeof imageAccesses)[number];

/** An image a provider can boot, as the API lists it beside Paddock's own. */
export interface ProviderImage {
  /** What a reservation member's `image` names: `POOL/NAME`. */
  ref: string;
  name: string;
  id: string;
  pool: string;
  /** The provider it comes from (only OpenStack so far). */
  origin: 'openstack';
  status: string;
  format?: string;
  size?: number;
  createdAt?: string;
  /** Set when Paddock uploaded it: the stored image it came from, and that image's sha256. */
  paddockRef?: string;
  sha256?: string;
}

/** The same, by the name the client library uses. */
export type ProviderImageView = ProviderImage;

/** What GET /v1/images lists: the images Paddock stores, then those of each provider pool. */
export type ImageListEntry = ImageView | ProviderImage;

/** An image Paddock stores (origin `paddock`); providers such as OpenStack add their own. */
export interface ImageView {
  /** `name:tag`, what a reservation member's `image` names. */
  ref: string;
  name: string;
  tag: string;
  format: ImageFormat;
  arch: string;
  /** How a reservation's key reaches a machine booted from it. */
  access: ImageAccess;
  size: number;
  sha256: string;
  owner: string;
  createdAt: string;
  expiresAt?: string;
  origin: 'paddock';
  /** Reservations that failed because this image did not boot (a kernel panic, no login, unreadable). */
  bootFailures: number;
  lastBootFailure?: string;
}

/** A job: a script in a git repository, run on a runner host with parameters and a time limit. */
export interface JobView {
  id: string;
  name: string;
  owner: string;
  repository: string;
  ref: string;
  script: string;
  parameters: Record<string, string>;
  timeLimitSeconds: number;
  createdAt: string;
}

/** One run of a job: what its runner host was given (but the token and the repository rules), and how it went. */
export interface RunView extends Omit<RunTask, 'token' | 'repositoryRules'> {
  jobId: string;
  owner: string;
  state: RunState;
  runner?: string;
  cancelRequested?: boolean;
  exitCode?: number;
  signal?: string;
  /** Why it failed or was stopped; `fault` says whose fault (infrastructure: the runner host or Paddock). */
  reason?: string;
  fault?: 'infrastructure' | 'request';
  /** What the script wrote to $PADDOCK_RESULT. */
  result?: unknown;
  createdAt: string;
  startedAt?: string;
  endedAt?: string;
}

/**
 * A reproduction of a run (`paddock jobs reproduce`): what to run, and a token made for it alone.
 * Every reservation made with the token is released, and the token revoked, when the caller ends
 * the reproduction or at `expiresAt` (the run's time limit and a margin), whichever comes first.
 */
export interface ReproductionView {
  id: string;
  run: string;
  token: string;
  expiresAt: string;
  task: RunTask;
}

/** A runner host as the API knows it: heard from since the API started. */
export interface RunnerView {
  name: string;
  lastSeen: string;
  /** Heard from within the heartbeat timeout. */
  alive: boolean;
  /** The live runs it holds. */
  runs: string[];
}
