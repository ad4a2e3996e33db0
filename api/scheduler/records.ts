// In-memory records of what the scheduler manages, and their conversions to database rows and to
// the API's views. The scheduler keeps every live reservation and every machine in memory; the
// database is written through the store on every change and read back on start.
import type {
  AllocationFailure,
  AllocationState,
  AllocationView,
  EventView,
  LeaseAction,
  MachineState,
  MachineView,
  QualificationView,
  MemberView,
  ReservationState,
  ReservationView,
  Stage,
  UnavailableMachine,
} from '../../protocol/api.js';
import type { EventRow, MachineRow, ReservationRow } from '../db/index.js';

export interface Allocation {
  id: string;
  role: string;
  index: number;
  machine: string;
  state: AllocationState;
  stages: Partial<Record<Stage, string>>;
  host?: string;
  port?: number;
  user?: string;
  hostKey?: string;
  /** The agent that took the current task, so it can resume that task after a restart. */
  agent?: string;
  reason?: string;
  /** Why provisioning failed or the ready machine was lost. */
  failure?: AllocationFailure;
  /** A board's console relay (telnet host:port) while reserved. */
  console?: { host: string; port: number };
  /** While the machine's lab host is silent: since when (ISO 8601). */
  labHostSilentSince?: string;
  /** The image of the last re-deploy, in place of the member's, and its kernel command line. */
  image?: string;
  cmdline?: string;
  /** The power action or re-deploy under way (lease-actions.ts). */
  action?: LeaseAction;
  /** Retry on another machine (retries.ts): moves so far, machines failed on, the waiting deadline, the successor. */
  retries?: number;
  failedOn?: string[];
  waitingUntil?: string;
  replacedBy?: string;
}

export interface Reservation {
  id: string;
  owner: string;
  state: ReservationState;
  /** While releasing: the end state it will reach. */
  outcome?: ReservationState;
  reason?: string;
  priority: number;
  leaseSeconds: number;
  members: MemberView[];
  allocations: Allocation[];
  publicKey: string;
  privateKey: string;
  idempotencyKey?: string;
  createdAt: number;
  updatedAt: number;
  grantedAt?: number;
  expiresAt?: number;
  hardCapAt?: number;
  queueDeadline?: number;
  /** Times it went back to the queue because the cloud was full. */
  requeues?: number;
}

/** Qualification before service: `boots` boots from `image` with `check`, `pass` of them to pass. */
export interface QualifyPolicy {
  image?: string;
  check: string;
  boots: number;
  pass: number;
}

export interface MachineEntry {
  name: string;
  kind: string;
  /** The lab host whose agent provisions it. */
  labHost: string;
  /** How owners reach it: directly, or through a tunnel via the API. */
  access: 'direct' | 'paddock';
  state: MachineState;
  labels: Record<string, string>;
  capacities: Record<string, number>;
  settings: unknown;
  reservationId?: string;
  reason?: string;
  failures: number;
  shapeKey: string;
  /** Set when a machine is put in maintenance or quarantined while reserved: applied on release. */
  pendingState?: MachineState;
  /** While offline: the state it goes back to when its lab host is heard again, and since when it is offline. */
  onlineState?: MachineState;
  offlineSince?: number;
  /** Reported by its lab host's agent (a missing serial device, a PDU that does not answer): not matched meanwhile. */
  unreachable?: { since: number; reason: string };
  /** Its qualification policy (config), and its last qualification (qualification.ts). */
  qualify?: QualifyPolicy;
  qualification?: QualificationView;
}

const iso = (ms: number | undefined) => (ms === undefined ? undefined : new Date(ms).toISOString());
const date = (ms: number | undefined) => (ms === undefined ? null : new Date(ms));
// SQLite hands dates back as text when read raw; Date accepts both forms.
export const ms = (value: Date | string | null) => (value === null ? undefined : new Date(value).getTime());

export function reservationView(reservation: Reservation, queuePosition?: number): ReservationView {
  const view: ReservationView = {
    id: reservation.id,
    owner: reservation.owner,
    state: reservation.state,
    priority: reservation.priority,
    leaseSeconds: reservation.leaseSeconds,
    createdAt: iso(reservation.createdAt)!,
    updatedAt: iso(reservation.updatedAt)!,
    members: reservation.members,
    allocations: reservation.allocations.map(allocationView),
  };
  if (reservation.reason !== undefined) view.reason = reservation.reason;
  if (reservation.grantedAt !== undefined) view.grantedAt = iso(reservation.grantedAt);
  if (reservation.expiresAt !== undefined) view.expiresAt = iso(reservation.expiresAt);
  if (reservation.hardCapAt !== undefined) view.hardCapAt = iso(reservation.hardCapAt);
  if (reservation.queueDeadline !== undefined && reservation.state === 'queued') view.queueDeadline = iso(reservation.queueDeadline);
  if (queuePosition !== undefined) view.queuePosition = queuePosition;
  return view;
}

function allocationView(allocation: Allocation): AllocationView {
  const { agent: _agent, reason: _reason, ...view } = allocation;
  return view;
}

export function machineView(machine: MachineEntry): MachineView {
  const view: MachineView = {
    name: machine.name,
    kind: machine.kind,
    labHost: machine.labHost,
    // A machine busy with a boot of its qualification is shown qualifying, not reserved.
    state: machine.state === 'reserved' && machine.qualification?.current === machine.reservationId ? 'qualifying' : machine.state,
    labels: machine.labels,
    capacities: configured(machine.capacities),
    failures: machine.failures,
    health: machine.capacities.health ?? 1,
  };
  if (machine.reservationId !== undefined) view.reservationId = machine.reservationId;
  if (machine.reason !== undefined) view.reason = machine.reason;
  if (machine.state === 'offline' && machine.offlineSince !== undefined) {
    view.offlineSince = iso(machine.offlineSince);
    view.reason = `its lab host ${machine.labHost} is silent: its agent was not heard within agents.heartbeatTimeout`;
  }
  if (machine.unreachable !== undefined) view.unreachable = { since: iso(machine.unreachable.since)!, reason: machine.unreachable.reason };
  if (machine.qualification !== undefined) view.qualification = machine.qualification;
  return view;
}

/** The capacities as configured: without the health score the scheduler keeps among them (health.ts). */
function configured(capacities: Record<string, number>): Record<string, number> {
  const { health: _health, ...rest } = capacities;
  return rest;
}

/** Why a machine that matches cannot be handed out now; undefined when it can. */
export function unavailableMachine(machine: MachineEntry): UnavailableMachine | undefined {
  if (machine.state === 'available' && machine.unreachable === undefined) return undefined;
  const reasons: string[] = [];
  if (machine.state === 'offline') reasons.push(`offline: its lab host ${machine.labHost} is silent since ${iso(machine.offlineSince) ?? '?'}`);
  if (machine.unreachable !== undefined) {
    reasons.push(`unreachable: its lab host ${machine.labHost} reports since ${iso(machine.unreachable.since)}: ${machine.unreachable.reason}`);
  }
  const state = machine.state === 'offline' ? machine.onlineState : machine.state;
  if (state !== undefined && state !== 'available') reasons.push(machine.reason !== undefined && state !== 'reserved' ? `${state}: ${machine.reason}` : state);
  return { machine: machine.name, state: machine.state, reason: reasons.join('; ') };
}

export function reservationToRow(reservation: Reservation): ReservationRow {
  return {
    id: reservation.id,
    owner: reservation.owner,
    state: reservation.state,
    outcome: reservation.outcome ?? null,
    reason: reservation.reason ?? null,
    priority: reservation.priority,
    leaseSeconds: reservation.leaseSeconds,
    members: JSON.stringify(reservation.members),
    allocations: JSON.stringify(reservation.allocations),
    publicKey: reservation.publicKey,
    privateKey: reservation.privateKey,
    idempotencyKey: reservation.idempotencyKey ?? null,
    createdAt: new Date(reservation.createdAt),
    updatedAt: new Date(reservation.updatedAt),
    grantedAt: date(reservation.grantedAt),
    expiresAt: date(reservation.expiresAt),
    hardCapAt: date(reservation.hardCapAt),
    queueDeadline: date(reservation.queueDeadline),
    requeues: reservation.requeues ?? 0,
  };
}

export function reservationFromRow(row: ReservationRow): Reservation {
  const reservation: Reservation = {
    id: row.id,
    owner: row.owner,
    state: row.state as ReservationState,
    priority: row.priority,
    leaseSeconds: row.leaseSeconds,
    members: JSON.parse(row.members) as MemberView[],
    allocations: JSON.parse(row.allocations) as Allocation[],
    publicKey: row.publicKey,
    privateKey: row.privateKey,
    createdAt: ms(row.createdAt)!,
    updatedAt: ms(row.updatedAt)!,
    grantedAt: ms(row.grantedAt),
    expiresAt: ms(row.expiresAt),
    hardCapAt: ms(row.hardCapAt),
    queueDeadline: ms(row.queueDeadline),
  };
  if (row.outcome !== null) reservation.outcome = row.outcome as ReservationState;
  if (row.reason !== null) reservation.reason = row.reason;
  if (row.idempotencyKey !== null) reservation.idempotencyKey = row.idempotencyKey;
  if (row.requeues) reservation.requeues = row.requeues;
  return reservation;
}

export function machineToRow(machine: MachineEntry, now: number): MachineRow {
  return {
    name: machine.name,
    kind: machine.kind,
    state: machine.state,
    reservationId: machine.reservationId ?? null,
    reason: machine.reason ?? null,
    failures: machine.failures,
    labels: JSON.stringify(machine.labels),
    capacities: JSON.stringify(machine.capacities),
    updatedAt: new Date(now),
    onlineState: machine.onlineState ?? null,
    offlineSince: date(machine.offlineSince),
    unreachableSince: date(machine.unreachable?.since),
    unreachableReason: machine.unreachable?.reason ?? null,
    qualification: machine.qualification ? JSON.stringify(machine.qualification) : null,
    pendingState: machine.pendingState ?? null,
  };
}

/** A machine's unreachable mark as a row holds it. */
export function unreachableFromRow(row: Pick<MachineRow, 'unreachableSince' | 'unreachableReason'>): MachineEntry['unreachable'] {
  const since = ms(row.unreachableSince);
  return since === undefined || row.unreachableReason === null ? undefined : { since, reason: row.unreachableReason };
}

export function eventView(row: EventRow): EventView {
  const view: EventView = {
    id: row.id,
    reservationId: row.reservationId,
    at: new Date(row.at).toISOString(),
    type: row.type as EventView['type'],
    to: row.to,
  };
  if (row.from !== null) view.from = row.from;
  if (row.machine !== null) view.machine = row.machine;
  if (row.reason !== null) view.reason = row.reason;
  return view;
}
