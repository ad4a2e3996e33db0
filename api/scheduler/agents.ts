// The agents' side of the scheduler: lab-host agents take provisioning and release tasks (a
// long-poll, api/pull.ts) and report stages, readiness, failures and finished releases, which move
// reservations along. What a failure means is failure.ts's pure verdict; this file carries it out.
// An agent is the agent of one lab host (its name): it gets the tasks of that lab host's machines
// only. A lab host not heard from (lab-hosts.ts) has its machines taken offline by `watch`.
import type { AgentMachine, AgentReport, AgentTask, AgentView, MachineProblem } from '../../protocol/api.js';
import { plainRows } from '../db/index.js';
import { DomainError, notFound } from '../domain-error.js';
import { consoleSecret } from './console-secret.js';
import { failureVerdict } from './failure.js';
import type { Grants } from './grants.js';
import type { Health } from './health.js';
import type { Machines } from './machines.js';
import type { AgentInfo, LabHosts } from './lab-hosts.js';
import type { Allocation, MachineEntry, Reservation } from './records.js';
import { isCurrent, type Retries } from './retries.js';
import type { SchedulerState, Task } from './state.js';

type FailedReport = Extract<AgentReport, { kind: 'failed' }>;

export class AgentTasks {
  /** Told when a machine failed because of its image (serve.ts counts it on the image). */
  onImageFailure?: (ref: string, reason: string) => void;
  /** Told when a reservation became ready; and asked for the check command of a task (qualification.ts). */
  onReady?: (reservation: Reservation) => void;
  checkFor?: (reservation: Reservation, machine: MachineEntry) => string | undefined;
  /** Moves a member whose machine failed while being provisioned to another machine (set by scheduler.ts). */
  retries?: Retries;

  constructor(
    private readonly state: SchedulerState,
    private readonly grants: Grants,
    private readonly machines: Machines,
    private readonly labHosts: LabHosts,
    private readonly health: Health,
  ) {}

  /** At start: every lab host the machines name, with when it was last heard; those with machines stored offline stay silent. */
  async start(): Promise<void> {
    const offlineSince = new Map<string, number | undefined>();
    for (const machine of this.state.inventory.machines.values()) {
      if (machine.state === 'retired') continue;
      const since = machine.state === 'offline' ? machine.offlineSince : undefined;
      const known = offlineSince.get(machine.labHost);
      offlineSince.set(machine.labHost, known === undefined ? since : since === undefined ? known : Math.min(known, since));
    }
    this.labHosts.start(offlineSince, plainRows(await this.state.db.labHosts.findAll({ raw: true })));
  }

  /** Lab hosts the machines name since a configuration reload (lab-hosts.ts). */
  named(names: Iterable<string>): void {
    this.labHosts.named(names);
  }

  /**
   * Hands an agent the tasks for the machines of its lab host (its name) and of its kinds. `resume`
   * (an agent's first claim after it started) also hands back the tasks it had taken before a
   * crash, which provisioners redo safely. The claim counts as hearing from the agent for as long
   * as it is open and `gone` (the agent hung up) says no; it waits at most half the heartbeat
   * timeout, so an agent whose connection died without a word is not heard for long.
   */
  async claim(agent: string, kinds: string[], resume: boolean, waitMs: number, info: AgentInfo = {}, gone: () => boolean = () => false): Promise<AgentTask[]> {
    const { state } = this;
    this.hear(agent, info);
    if (resume) {
      for (const reservation of state.live.values()) {
        for (const allocation of reservation.allocations) {
          if (allocation.agent !== agent) continue;
          if (allocation.state === 'provisioning') state.tasks.set(allocation.id, { action: allocation.action?.type ?? 'provision', reservation, allocation });
          if (allocation.state === 'releasing') state.tasks.set(allocation.id, { action: 'release', reservation, allocation });
        }
      }
    }
    const closed = this.labHosts.claimOpened(agent, gone);
    let tasks: AgentTask[];
    const originals: Task[] = [];
    try {
      tasks = await state.agentPull.claim(
        () => this.take(agent, kinds, originals),
        Math.min(waitMs, this.heartbeatTimeoutMs / 2),
        () => !gone(),
        agent,
      );
    } finally {
      closed();
    }
    await state.store.flush();
    if (tasks.length > 0 && gone()) {
      // The claim's connection went away while its answer was made (an agent killed, a network cut,
      // the agent moving to another API server): nobody reads it. Its tasks go back for the next
      // claim of this lab host, rather than wait for the agent's next start.
      for (const task of originals)
        if (!state.tasks.has(task.allocation.id) && state.live.has(task.reservation.id)) state.addTask(task.action, task.reservation, task.allocation);
      return [];
    }
    return tasks;
  }

  /**
   * An agent's heartbeat: it is heard. With what its checks found (`problems`, the whole list for
   * the machines of its lab host and of `kinds`, every kind without them), the machines named there
   * are marked unreachable and the others of those kinds lifted; a name that is not one of those
   * machines refuses the whole heartbeat (not_your_task), so an agent can mark only its own lab
   * host's machines. Answers how often to send one (a third of the timeout), in seconds.
   */
  async heartbeat(agent: string, info: AgentInfo, checked?: { problems: readonly MachineProblem[]; kinds?: readonly string[] }): Promise<number> {
    const covers = (machine: MachineEntry) =>
      machine.labHost === agent && machine.state !== 'retired' && (checked?.kinds === undefined || checked.kinds.includes(machine.kind));
    const reasons = checked === undefined ? undefined : this.problemsOf(agent, checked.problems, covers);
    // Marks first: a lab host heard again brings its machines back, and they must not be granted
    // before the marks this heartbeat carries.
    let back = false;
    if (reasons !== undefined) {
      for (const machine of this.state.inventory.ofLabHost(agent))
        if (covers(machine)) back = this.machines.setReach(machine, reasons.get(machine.name)) || back;
    }
    this.hear(agent, info);
    if (back) this.grants.schedule();
    await this.state.store.flush();
    return this.heartbeatTimeoutMs / 3000;
  }

  /** The reason by machine (one per machine: the route's schema), each machine checked to be one the heartbeat covers. */
  private problemsOf(agent: string, problems: readonly MachineProblem[], covers: (machine: MachineEntry) => boolean): Map<string, string> {
    for (const { machine: name } of problems) {
      const machine = this.state.inventory.get(name);
      if (!machine || !covers(machine))
        throw new DomainError('not_your_task', `${name} is not a machine of lab host ${agent} of the kinds it checked`, { agent, machine: name });
    }
    return new Map(problems.map((problem) => [problem.machine, problem.reason]));
  }

  private get heartbeatTimeoutMs(): number {
    return (this.state.policy.agents?.heartbeatTimeout ?? 30) * 1000;
  }

  private take(agent: string, kinds: string[], originals: Task[] = []): AgentTask[] {
    const { state } = this;
    const taken: AgentTask[] = [];
    for (const [id, task] of state.tasks) {
      const machine = state.inventory.get(task.allocation.machine);
      if (!machine || machine.labHost !== agent || !kinds.includes(machine.kind)) continue;
      state.tasks.delete(id);
      originals.push(task);
      const { reservation, allocation } = task;
      allocation.agent = agent;
      if (task.action !== 'release') this.health.taken(allocation);
      if (task.action === 'provision') {
        if (allocation.state === 'pending') state.setAllocation(reservation, allocation, 'provisioning');
        if (reservation.state === 'allocated') state.transition(reservation, 'provisioning', 'provision', `agent ${agent} took it`);
      }
      state.store.reservation(reservation);
      const member = reservation.members.find((candidate) => candidate.role === allocation.role);
      const image = allocation.image ?? member?.image;
      const check = task.action === 'provision' ? this.checkFor?.(reservation, machine) : undefined;
      taken.push({
        id: allocation.id,
        action: task.action,
        ...(task.action === 'power' && allocation.action?.type === 'power' ? { power: allocation.action.power } : {}),
        reservationId: reservation.id,
        role: allocation.role,
        machine: { name: machine.name, kind: machine.kind, labels: machine.labels, capacities: machine.capacities, settings: machine.settings },
        publicKey: reservation.publicKey,
        privateKey: reservation.privateKey,
        consoleSecret: consoleSecret(reservation),
        ...(image ? { image } : {}),
        ...(allocation.cmdline !== undefined ? { cmdline: allocation.cmdline } : {}),
        ...(reservation.hardCapAt !== undefined ? { hardCapAt: new Date(reservation.hardCapAt).toISOString() } : {}),
        ...(check !== undefined ? { check } : {}),
      });
    }
    return taken;
  }

  /** Applies what an agent reports about one allocation. Reports for finished work are ignored. */
  async report(agent: string, allocationId: string, report: AgentReport): Promise<void> {
    const { state } = this;
    const reservation = state.live.get(allocationId.slice(0, allocationId.lastIndexOf('.')));
    const allocation = reservation?.allocations.find((candidate) => candidate.id === allocationId);
    if (!reservation || !allocation) throw notFound(`allocation ${allocationId} of a live reservation`);
    // Only the agent that took the task may move it: another lab host's agent cannot declare a
    // machine ready (or released) that it does not run.
    const machine = state.inventory.get(allocation.machine)!;
    if (allocation.agent !== agent || machine.labHost !== agent)
      throw new DomainError('not_your_task', `allocation ${allocationId} is not held by agent ${agent}`);
    this.hear(agent);
    const provisioning = allocation.state === 'provisioning';
    switch (report.kind) {
      case 'stage':
        if (provisioning) {
          allocation.stages[report.stage] = new Date(state.now()).toISOString();
          state.record(reservation, { type: 'stage', to: report.stage, machine: machine.name });
        }
        break;
      case 'ready':
        if (provisioning) {
          const { kind: _kind, ...access } = report;
          // A reboot or re-deploy may come back with another address, host key or relay.
          for (const field of ['host', 'port', 'user', 'hostKey', 'console'] as const) delete allocation[field];
          delete allocation.action;
          Object.assign(allocation, access);
          state.setAllocation(reservation, allocation, 'ready');
          this.health.ready(reservation, allocation, machine);
          if (reservation.state === 'provisioning' && reservation.allocations.filter(isCurrent).every((each) => each.state === 'ready')) {
            state.transition(reservation, 'ready', 'ready', 'every machine is ready');
            const now = state.now();
            reservation.expiresAt = Math.min(Math.max(reservation.expiresAt ?? 0, now + reservation.leaseSeconds * 1000), reservation.hardCapAt ?? Infinity);
            this.onReady?.(reservation);
          }
        }
        break;
      case 'failed':
        this.failed(reservation, allocation, machine, report);
        break;
      case 'off':
        if (provisioning && allocation.action) {
          delete allocation.action;
          state.setAllocation(reservation, allocation, 'off', 'switched off by its owner');
        }
        break;
      case 'released':
        if (allocation.state === 'releasing') this.released(reservation, allocation, machine);
        break;
    }
    await state.store.flush();
  }

  private failed(reservation: Reservation, allocation: Allocation, machine: MachineEntry, report: FailedReport): void {
    const verdict = failureVerdict(allocation.state, report, allocation.action !== undefined, this.retries?.retriesLeft(reservation, allocation) ?? 0);
    const where = `${allocation.role}[${allocation.index}] on ${machine.name}`;
    const failure = (code: string) => ({ code, fault: report.fault, reason: report.reason, ...(report.stage ? { stage: report.stage } : {}) });
    switch (verdict.action) {
      case 'requeue':
        allocation.failure = failure(verdict.code);
        this.grants.requeue(reservation, `${where}: ${report.reason}; waiting for room`);
        break;
      case 'retry':
        this.retries!.retry(reservation, allocation, machine, failure(verdict.code), verdict.countAgainstMachine);
        break;
      case 'fail': {
        const { code } = verdict;
        allocation.failure = failure(code);
        this.state.setAllocation(reservation, allocation, 'failed', `${code}: ${report.reason}`);
        this.health.failed(reservation, allocation, machine, verdict.countAgainstMachine, report.reason);
        this.blameImage(reservation, allocation, machine, verdict, report.reason);
        this.grants.beginRelease(reservation, 'failed', `${where}${report.stage ? ` at ${report.stage}` : ''}: ${code}: ${report.reason}`);
        break;
      }
      case 'failMember': {
        const { code } = verdict;
        const action = allocation.action;
        delete allocation.action;
        allocation.failure = failure(code);
        const during = action ? `${action.type === 'power' ? `power ${action.power}` : `boot ${action.image}`} failed: ` : '';
        this.state.setAllocation(reservation, allocation, 'failed', `${during}${code}: ${report.reason}`);
        this.health.failed(reservation, allocation, machine, verdict.countAgainstMachine, report.reason);
        this.blameImage(reservation, allocation, machine, verdict, report.reason);
        break;
      }
      case 'quarantine':
        this.machines.quarantineAfterRelease(machine, report.reason);
        this.released(reservation, allocation, machine, `release failed: ${report.reason}`);
        break;
      case 'ignore':
        break;
    }
  }

  /** Tells serve.ts the image the machine booted (a re-deploy's, else the member's) failed, where the verdict blames it. */
  private blameImage(
    reservation: Reservation,
    allocation: Allocation,
    machine: MachineEntry,
    verdict: { code: string; blameImage: boolean },
    reason: string,
  ): void {
    const image = allocation.image ?? reservation.members.find((member) => member.role === allocation.role)?.image;
    if (image && verdict.blameImage) this.onImageFailure?.(image, `${verdict.code} on ${machine.name}: ${reason}`);
  }

  private released(reservation: Reservation, allocation: Allocation, machine: MachineEntry, reason?: string): void {
    this.state.setAllocation(reservation, allocation, 'released', reason);
    this.state.freeMachine(machine.name);
    this.grants.finishIfReleased(reservation);
    // A machine torn down after its member moved on (retries.ts) is free for others now.
    if (!isCurrent(allocation)) this.grants.schedule();
  }

  /**
   * The machines of the given kinds (of one lab host, when `agent` names it), with the reservations
   * that may leave traces on each. Asked in an agent's name, it counts as hearing from it.
   */
  async agentMachines(agent: string | undefined, kinds: string[]): Promise<AgentMachine[]> {
    if (agent !== undefined) {
      this.hear(agent);
      await this.state.store.flush();
    }
    const live = new Map<string, string[]>();
    for (const reservation of this.state.live.values()) {
      for (const allocation of reservation.allocations) {
        if (allocation.state !== 'released') live.set(allocation.machine, [...(live.get(allocation.machine) ?? []), reservation.id]);
      }
    }
    const { inventory } = this.state;
    return [...(agent === undefined ? inventory.machines.values() : inventory.ofLabHost(agent))]
      .filter((machine) => kinds.includes(machine.kind) && machine.state !== 'retired' && (agent === undefined || machine.labHost === agent))
      .map((machine) => ({
        name: machine.name,
        kind: machine.kind,
        labels: machine.labels,
        capacities: machine.capacities,
        settings: machine.settings,
        liveReservations: live.get(machine.name) ?? [],
      }));
  }

  /** Every lab host the machines name and every agent heard, by name: machines, tasks held, warnings. */
  agentViews(): AgentView[] {
    const machines = new Map<string, string[]>(this.labHosts.names().map((name) => [name, []]));
    for (const machine of this.state.inventory.machines.values()) {
      if (machine.state !== 'retired') machines.set(machine.labHost, [...(machines.get(machine.labHost) ?? []), machine.name]);
    }
    const tasks = new Map<string, string[]>();
    for (const reservation of this.state.live.values()) {
      for (const allocation of reservation.allocations) {
        if (allocation.agent === undefined || (allocation.state !== 'provisioning' && allocation.state !== 'releasing')) continue;
        tasks.set(allocation.agent, [...(tasks.get(allocation.agent) ?? []), allocation.id]);
      }
    }
    const unreachable = (name: string) => machines.get(name)!.filter((machine) => this.state.inventory.get(machine)?.unreachable !== undefined);
    return [...machines.keys()]
      .sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))
      .map((name) => this.labHosts.view(name, machines.get(name)!.sort(), tasks.get(name) ?? [], unreachable(name)));
  }

  /**
   * Brings the machines of lab hosts heard again back, and takes those of silent lab hosts offline:
   * their provisioning fails (an infrastructure failure, not the machine's), their ready machines go
   * on with the allocation flagged (`labHostSilentSince`). Runs with the reaper; safe to run again.
   */
  async watch(): Promise<void> {
    const { state } = this;
    const silent = this.labHosts.silent();
    let back = false;
    for (const machine of state.inventory.machines.values()) {
      const since = silent.get(machine.labHost);
      if (since !== undefined) this.machines.takeOffline(machine, since);
      else if (machine.state === 'offline') {
        this.machines.bringOnline(machine);
        back = true;
      }
    }
    for (const reservation of [...state.live.values()]) {
      for (const allocation of [...reservation.allocations]) {
        const machine = state.inventory.get(allocation.machine);
        if (!machine) continue;
        const since = silent.get(machine.labHost);
        if (since === undefined) {
          if (allocation.labHostSilentSince !== undefined) this.flag(reservation, allocation, undefined);
        } else if (allocation.state === 'pending' || allocation.state === 'provisioning') {
          this.labHostLost(reservation, allocation, machine);
        } else if (allocation.state === 'ready' && allocation.labHostSilentSince === undefined) {
          this.flag(reservation, allocation, since);
        }
      }
    }
    if (back) this.grants.schedule();
    await state.store.flush();
  }

  /** An agent was heard: if its lab host was silent, its machines come back at once. */
  private hear(agent: string, info?: AgentInfo): void {
    const wasSilent = this.labHosts.heard(agent, info);
    const { state } = this;
    const row = this.labHosts.due(agent);
    if (row) state.store.labHost(row);
    if (!wasSilent) return;
    for (const machine of state.inventory.ofLabHost(agent)) this.machines.bringOnline(machine);
    for (const reservation of state.live.values()) {
      for (const allocation of reservation.allocations) {
        if (allocation.labHostSilentSince !== undefined && state.inventory.get(allocation.machine)?.labHost === agent)
          this.flag(reservation, allocation, undefined);
      }
    }
    this.grants.schedule();
  }

  private flag(reservation: Reservation, allocation: Allocation, since: number | undefined): void {
    const labHost = this.state.inventory.get(allocation.machine)?.labHost;
    if (since === undefined) delete allocation.labHostSilentSince;
    else allocation.labHostSilentSince = new Date(since).toISOString();
    this.state.record(reservation, {
      type: 'allocation',
      from: allocation.state,
      to: allocation.state,
      machine: allocation.machine,
      reason: since === undefined ? `lab host ${labHost} is heard again` : `lab host ${labHost} is silent: the machine goes on, unwatched`,
    });
  }

  /** Provisioning on a silent lab host fails: the infrastructure's fault, not the machine's. */
  private labHostLost(reservation: Reservation, allocation: Allocation, machine: MachineEntry): void {
    const reason = `lab host ${machine.labHost} is silent (its agent was not heard for ${this.heartbeatTimeoutMs / 1000}s)`;
    if (allocation.state === 'provisioning') {
      this.failed(reservation, allocation, machine, { kind: 'failed', fault: 'infrastructure', code: 'lab_host_offline', reason });
      return;
    }
    // Never taken by an agent: nothing to undo on the machine, released as it is.
    allocation.failure = { code: 'lab_host_offline', fault: 'infrastructure', reason };
    this.grants.beginRelease(reservation, 'failed', `${allocation.role}[${allocation.index}] on ${machine.name}: lab_host_offline: ${reason}`);
  }
}
