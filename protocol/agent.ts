// What a lab-host agent and the API say to each other, and the readiness stages; protocol/api.ts
// re-exports them.

/** Readiness stages, in order. Static hosts skip the power and boot stages. */
export const stages = ['powerConfirmed', 'bootSeen', 'addressKnown', 'sshReady', 'probed'] as const;
export type Stage = (typeof stages)[number];

/**
 * A tunnel a lab-host agent is asked to open: it connects to a port of one of its ready machines
 * (SSH, or a board's console relay), then opens the WebSocket /v1/agent/tunnels/ID to the API,
 * which bridges it to the owner's stream. Lab hosts only dial out.
 */
export interface TunnelTask {
  /** Unguessable; names the agent's WebSocket. */
  id: string;
  reservationId: string;
  machine: string;
  service: TunnelService;
  /** The address as the agent reported it at readiness (on the lab host's own network). */
  host: string;
  port: number;
}

/** The ports a tunnel reaches: a machine's SSH, or a board's console relay. */
export const tunnelServices = ['ssh', 'console'] as const;
export type TunnelService = (typeof tunnelServices)[number];

/** What an owner may do to the power of a machine during a lease: `cycle` is off, the minimum off-time, on (a reboot). */
export const powerActions = ['on', 'off', 'cycle'] as const;
export type PowerAction = (typeof powerActions)[number];

/**
 * Work handed to a lab-host agent: one machine of one reservation. `provision` and `release` begin
 * and end a lease; `power` (switch the machine off, on, or off and on) and `boot` (another image in
 * place of the one running) act during it, on a machine already provisioned for it.
 */
export interface AgentTask {
  /** The allocation id. */
  id: string;
  action: 'provision' | 'release' | 'power' | 'boot';
  /** For `power`: what to do. */
  power?: PowerAction;
  reservationId: string;
  role: string;
  machine: { name: string; kind: string; labels: Record<string, string>; capacities: Record<string, number>; settings: unknown };
  publicKey: string;
  /** The reservation's private key, so readiness is proven with the key the owner will use. */
  privateKey: string;
  /**
   * What a connection to the machine's console relay must answer before it sees or types anything;
   * the API knows it, and the owner gets it only where the lab allows telnet (`consoles.telnet`).
   */
  consoleSecret: string;
  image?: string;
  /** The kernel command line in place of the boot bundle's, when the owner gave one with a re-deploy. */
  cmdline?: string;
  /** When the reservation ends at the latest (ISO 8601): keys installed for it expire then. */
  hardCapAt?: string;
  /**
   * A qualification boot's check: a shell command the agent runs over SSH, with the reservation's
   * key, once the machine is up; it is ready only if the command exits 0 (else `check_failed`).
   */
  check?: string;
}

export type AgentReport =
  | { kind: 'stage'; stage: Stage }
  /** SSH access (host, port, user, host key) when the machine has it; the console relay for boards. */
  | { kind: 'ready'; host?: string; port?: number; user?: string; hostKey?: string; console?: { host: string; port: number } }
  /**
   * Provisioning failed, or a ready machine was lost (its VM died, say). `code` is stable and
   * machine-readable (`image_corrupt`, `boot_timeout`, `machine_lost`, …).
   */
  | { kind: 'failed'; reason: string; fault: 'infrastructure' | 'request'; stage?: Stage; code?: string }
  | { kind: 'released' }
  /** A `power off` is done: the machine is off (and not ready) until a `power on`. */
  | { kind: 'off' };

/** A machine an agent serves, with the reservations that may legitimately leave traces on it. */
export interface AgentMachine {
  name: string;
  kind: string;
  labels: Record<string, string>;
  capacities: Record<string, number>;
  settings: unknown;
  liveReservations: string[];
}

/**
 * What an agent's checks found wrong with one of its machines (no such serial device, the PDU does
 * not answer, the SSH port refuses): sent in every heartbeat as the whole list, so a machine missing
 * from it is fine again. The API takes no more than `machineProblemLimits.count` of them, each
 * reason at most `machineProblemLimits.reason` characters without control characters.
 */
export interface MachineProblem {
  machine: string;
  reason: string;
}

export const machineProblemLimits = { count: 1024, reason: 500 } as const;

/** An agent's heartbeat (POST /v1/agent/heartbeat); `problems` only once its checks have run. */
export interface AgentHeartbeat {
  agent: string;
  version?: string;
  /** Its clock (ISO 8601). */
  clock?: string;
  problems?: MachineProblem[];
  /**
   * The kinds whose machines its checks covered (its `--kinds`): `problems` speaks for those only,
   * so two agents of one lab host serving other kinds do not lift each other's marks. All kinds without it.
   */
  kinds?: string[];
}

/** A machine an agent keeps warm: booted from `image` with the agent's own key, ready to be handed over. */
export interface WarmMachine {
  machine: string;
  image: string;
}

/** An agent's warm machines that are ready (POST /v1/agent/warm): the whole list for its lab host. */
export interface WarmReport {
  agent: string;
  warm: WarmMachine[];
  /** Warm boots that failed since the last report the API answered: each is in its machine's health as a failed provisioning. */
  failed?: WarmFailure[];
}

/** A warm boot that failed, as a provisioning's failure is reported. */
export interface WarmFailure {
  machine: string;
  image: string;
  /** The warm boot's id (`warm-…`): its entry in the machine's history. */
  id: string;
  reason: string;
  fault: 'infrastructure' | 'request';
  code: string;
  stage?: Stage;
  /** How long the boot ran. */
  seconds: number;
}

/** The most failed warm boots one report carries (an agent keeps no more while the API does not answer). */
export const warmFailuresKept = 16;

/**
 * The API's answer to a warm report: which machine to keep warm with which image (a warm machine
 * not named here goes), the machines reservations hold (their warm VMs wait for the reservation's
 * task, which takes or stops them), and how often to report again.
 */
export interface WarmPlan {
  targets: { machine: AgentTask['machine']; image: string }[];
  held: string[];
  intervalSeconds: number;
}
