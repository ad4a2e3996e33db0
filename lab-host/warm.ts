// Warm pools, the agent's half: VMs (and boards: "VM" below means either) booted ahead of demand on the machines the API plans warm
// (api/scheduler/warm.ts), with a key pair only this agent holds (made once, kept under
// DATA/agent/warm/, never sent anywhere), and handed over to a reservation that asks for their
// image: the agent logs in with its key, replaces authorized_keys with the reservation's public key
// alone (its own key no longer works), proves a login with the reservation's key on the same host
// key, and the VM is the reservation's (Provisioner.handOver). A warm VM is never warmed again: a
// reservation's VM is released as any other, and the pool refills with a fresh boot.
//
// A warm VM is a provisioning record of its own in the loop's journal (reservation id `warm-…`,
// its kind's detail as for any reservation) and a note DATA/agent/warm/MACHINE.json (its id, its
// image, the machine as it was given), so an agent restart finds its warm VMs again and stops those
// no longer planned, even on a machine gone from the config. Warm boots and stops run in the
// machine's queue of the task loop, so they never overlap its tasks; a provisioning task for
// another image aborts a warm boot in flight, and stops a ready warm VM, before it boots cold.
// A warm boot that fails goes to the API with the next report, for the machine's health.
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { warmFailuresKept, type AgentTask, type Stage, type WarmFailure, type WarmPlan, type WarmReport } from '../protocol/agent.js';
import { generateKeyPair, sshConnect, sshExec, sshHandshake, type SshClient } from '../protocol/ssh.js';
import {
  ProvisionError,
  type Provisioner,
  type ProvisionRequest,
  type ProvisionState,
  type Readiness,
  type SshReadiness,
  type StageReporter,
} from '../provisioners/types.js';
import { recordVersion, type ProvisioningJournal, type ProvisioningRecord } from './journal.js';
import type { Log } from '../protocol/log.js';

/** The reservation ids of warm VMs' records: never a reservation's (`r-…`). */
export const warmPrefix = 'warm-';

type MachineTask = AgentTask['machine'];

/** A warm VM as this agent keeps it. */
interface WarmVm {
  id: string;
  image: string;
  machine: MachineTask;
  ready?: SshReadiness;
  /** Aborts its boot (a task for another image, a plan that dropped it). */
  booting?: AbortController;
  /** An SSH session with the agent's key, opened once it is warm, for the key swap. */
  session?: Promise<SshClient | undefined>;
  /** When its release last failed (a PDU that did not answer): it is released again before the machine boots anything. */
  releaseFailed?: number;
}

/** How long after a failed release of a warm machine it is tried again. */
const releaseRetryMs = 30_000;

/** Replaces authorized_keys with what comes on stdin, in one rename. */
const swapKeys = 'umask 077 && mkdir -p ~/.ssh && cat > ~/.ssh/authorized_keys.new && mv -f ~/.ssh/authorized_keys.new ~/.ssh/authorized_keys';

/** What DATA/agent/warm/MACHINE.json holds. */
interface WarmNote {
  id: string;
  image: string;
  machine: MachineTask;
}

export interface WarmOptions {
  dataDir: string;
  /** KindContext.consolesDir: a warm VM's console log until it is handed over goes with it. */
  consolesDir: string;
  agent: string;
  journal: ProvisioningJournal;
  provisioner: (kind: string) => Provisioner;
  /** Runs work in the machine's queue of the task loop. */
  exclusive: (machine: string, work: () => Promise<void>) => Promise<void>;
  /** Sends the report, answers the plan. */
  exchange: (report: WarmReport) => Promise<WarmPlan>;
  log: Log;
  provisionTimeoutMs: number;
}

/** After warm boots failed in a row, the machine is not warmed again for 5 s, 10 s, 20 s, … up to 5 min (an image not uploaded yet, say). */
const retryAfterMs = (failures: number) => Math.min(300_000, 5000 * 2 ** (failures - 1));

const sameImage = (a: string | undefined, b: string) => a !== undefined && (a.includes(':') ? a : `${a}:latest`) === b;

export class WarmPool {
  private readonly vms = new Map<string, WarmVm>();
  /** Machines with a warm boot or stop queued. */
  private readonly busy = new Set<string>();
  /** Warm boots that failed in a row per machine, and when the last did. */
  private readonly failures = new Map<string, { count: number; at: number }>();
  /** Warm boots that failed, for the next report (the API keeps them in the machines' health). */
  private readonly failedBoots: WarmFailure[] = [];
  private readonly dir: string;
  private key?: { privateKey: string; publicKey: string };
  private timer?: NodeJS.Timeout;
  private stopped = false;
  private syncing?: Promise<void>;

  constructor(private readonly options: WarmOptions) {
    this.dir = path.join(options.dataDir, 'agent', 'warm');
  }

  /** Finds the warm VMs of an earlier run, then reports and follows the plan periodically. */
  async start(): Promise<void> {
    this.key = await this.loadKey();
    await this.restore().catch((error: unknown) => this.options.log.error({ error: (error as Error).message }, 'could not take back the warm VMs'));
    this.schedule(0);
  }

  /** Stops reporting; warm VMs keep running (the next start finds them). */
  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    for (const vm of this.vms.values()) {
      vm.booting?.abort(new Error('agent stopping'));
      void vm.session?.then((client) => client?.end());
      delete vm.session;
    }
  }

  /** Reports now rather than at the next tick (a warm VM was handed over or became ready). */
  kick(): void {
    if (!this.stopped && this.key) this.schedule(0);
  }

  /** Whether a lost machine is a warm VM (not a reservation's): then it is stopped and forgotten here. */
  lost(allocationId: string): boolean {
    if (!allocationId.startsWith(warmPrefix)) return false;
    const vm = [...this.vms.values()].find((each) => `${each.id}.0` === allocationId);
    if (vm?.ready) {
      this.options.log.warn({ machine: vm.machine.name }, 'the warm VM stopped');
      void this.cool(vm.machine.name);
    }
    return true;
  }

  /** A provisioning task arrived: a warm boot of another image on its machine stops at once. */
  preempt(machine: string, image: string | undefined): void {
    const vm = this.vms.get(machine);
    if (vm?.booting && !sameImage(image, vm.image)) vm.booting.abort(new Error('the machine was granted for another image'));
  }

  /**
   * In the machine's queue, before a provisioning: hands the machine's warm VM over when it is
   * ready with the request's image (resolves to its readiness), else stops whatever warm VM is
   * there and resolves to undefined (the machine boots cold).
   */
  async take(request: ProvisionRequest, report: StageReporter, signal: AbortSignal): Promise<Readiness | undefined> {
    const vm = this.vms.get(request.machine.name);
    if (!vm || !vm.ready || !sameImage(request.image, vm.image) || request.privateKey === undefined) {
      if (vm) await this.discard(vm);
      await this.giveBack(request.machine.name);
      return undefined;
    }
    this.vms.delete(vm.machine.name);
    try {
      const readiness = await this.handOver(vm, vm.ready, request, report, signal);
      await this.forget(vm);
      this.options.log.info({ reservation: request.reservationId, machine: vm.machine.name, allocation: request.allocationId }, 'warm VM handed over');
      this.kick();
      return readiness;
    } catch (error) {
      // Whatever half happened, the VM is not trusted: it goes, and the machine boots cold.
      this.options.log.warn(
        { reservation: request.reservationId, machine: vm.machine.name, allocation: request.allocationId, error: (error as Error).message },
        'the warm VM could not be handed over',
      );
      await request.state.save(undefined);
      await this.discard(vm);
      signal.throwIfAborted();
      return undefined;
    }
  }

  /**
   * Before a cold boot on `machine`: the warm VMs elsewhere that the API's plan no longer wants
   * (a pool that limits its machines at once counts warm ones: a reservation took room that a warm
   * server held, as in an OpenStack pool of several flavors) go first, so the new machine never
   * runs beside the warm one it displaces, over the pool's maxInstances and the cloud's quota.
   */
  private async giveBack(machine: string): Promise<void> {
    const others = [...this.vms.values()].filter((vm) => vm.machine.name !== machine);
    if (others.length === 0) return;
    const warm = others.filter((vm) => vm.ready).map((vm) => ({ machine: vm.machine.name, image: vm.image }));
    const plan = await this.options.exchange({ agent: this.options.agent, warm }).catch((error: unknown) => {
      this.options.log.error({ error: (error as Error).message }, 'warm report failed');
    });
    if (!plan) return;
    const targets = new Map(plan.targets.map((target) => [target.machine.name, target.image]));
    const dropped = others.filter((vm) => targets.get(vm.machine.name) !== vm.image && !plan.held.includes(vm.machine.name));
    await Promise.all(
      dropped.map(async (vm) => {
        if (this.vms.get(vm.machine.name) !== vm) return;
        // A boot under way releases its VM when it stops; a ready VM goes now, beside its machine's queue (nothing else uses it).
        if (!vm.ready) return void vm.booting?.abort(new Error('given back to cold use'));
        this.options.log.info({ machine: vm.machine.name, for: machine }, 'the warm VM is given back for a cold boot');
        await this.discard(vm).catch((error: unknown) =>
          this.options.log.error({ machine: vm.machine.name, error: (error as Error).message }, 'the warm VM could not be stopped'),
        );
      }),
    );
  }

  private async handOver(vm: WarmVm, ready: SshReadiness, request: ProvisionRequest, report: StageReporter, signal: AbortSignal): Promise<SshReadiness> {
    const target = { host: ready.host, port: ready.port, user: ready.user, expectedHostKey: ready.hostKey, timeoutMs: 10_000, signal };
    // The reservation's key alone: the agent's own key stops working with this write. The session
    // opened when the VM became warm saves a handshake; a fresh one is made if it was lost.
    const swap = async (client: SshClient) => {
      const result = await sshExec(client, swapKeys, { stdin: `${request.publicKey.trim()}\n` }).finally(() => client.end());
      if (result.code !== 0) throw new ProvisionError(`the key swap failed (exit ${result.code}): ${result.stderr.slice(0, 300)}`, 'infrastructure');
    };
    // The stages before SSH were passed long ago: they are reported while the keys are swapped
    // and the login is checked.
    const stages = (async () => {
      for (const stage of ['powerConfirmed', 'bootSeen', 'addressKnown'] as const) await report.stage(stage);
    })();
    const login = (async () => {
      const kept = await vm.session;
      delete vm.session;
      await (kept ? swap(kept) : Promise.reject(new Error('no session'))).catch(async () =>
        swap((await sshConnect({ ...target, privateKey: this.key!.privateKey })).client),
      );
      return sshHandshake({ ...target, privateKey: request.privateKey! });
    })();
    const [hostKey] = await Promise.all([login, stages]);
    const provisioner = this.options.provisioner(vm.machine.kind);
    if (!provisioner.handOver) throw new ProvisionError(`${vm.machine.name}: a ${vm.machine.kind} machine is never kept warm`, 'infrastructure');
    const handed = await provisioner.handOver(this.request(vm), request);
    await report.stage('sshReady');
    return { ...ready, hostKey, ...handed };
  }

  private schedule(delayMs: number): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.sync(), delayMs);
    this.timer.unref();
  }

  /** One report and the plan followed: warm boots where planned, warm VMs stopped where not. */
  private async sync(): Promise<void> {
    if (this.stopped) return;
    if (this.syncing) return void this.syncing.then(() => this.kick());
    let next = 5;
    this.syncing = (async () => {
      const warm = [...this.vms.values()].filter((vm) => vm.ready).map((vm) => ({ machine: vm.machine.name, image: vm.image }));
      const failed = this.failedBoots.splice(0);
      const plan = await this.options.exchange({ agent: this.options.agent, warm, ...(failed.length > 0 ? { failed } : {}) }).catch((error: unknown) => {
        // Sent again with the next report, unless the API refused them (then they never pass).
        const status = (error as { response?: { statusCode?: number } }).response?.statusCode;
        if (status === undefined || status >= 500) this.keepFailed(failed, true);
        throw error;
      });
      next = plan.intervalSeconds;
      const targets = new Map(plan.targets.map((target) => [target.machine.name, target]));
      const held = new Set(plan.held);
      for (const vm of [...this.vms.values()]) {
        if (held.has(vm.machine.name)) continue;
        if (vm.releaseFailed !== undefined) {
          if (!this.busy.has(vm.machine.name) && Date.now() - vm.releaseFailed >= releaseRetryMs) void this.cool(vm.machine.name);
          continue;
        }
        if (targets.get(vm.machine.name)?.image === vm.image) continue;
        // A boot in flight stops now (a board put in maintenance is not booted to the end first).
        vm.booting?.abort(new Error('no longer planned warm'));
        if (!this.busy.has(vm.machine.name)) {
          if (vm.ready) this.options.log.info({ machine: vm.machine.name }, 'the warm VM is given back: the plan no longer wants it');
          void this.cool(vm.machine.name);
        }
      }
      const now = Date.now();
      for (const { machine, image } of targets.values()) {
        const failed = this.failures.get(machine.name);
        if (this.vms.has(machine.name) || this.busy.has(machine.name) || (failed && now - failed.at < retryAfterMs(failed.count))) continue;
        void this.warmUp(machine, image);
      }
    })()
      .catch((error: unknown) => this.options.log.error({ error: (error as Error).message }, 'warm report failed'))
      .finally(() => (this.syncing = undefined));
    await this.syncing;
    if (!this.stopped) this.schedule(next * 1000);
  }

  /** Boots a warm VM on the machine, in its queue. */
  private warmUp(machine: MachineTask, image: string): Promise<void> {
    const vm: WarmVm = { id: `${warmPrefix}${randomBytes(6).toString('hex')}`, image, machine, booting: new AbortController() };
    this.vms.set(machine.name, vm);
    return this.queued(machine.name, async () => {
      if (this.stopped || vm.booting!.signal.aborted) {
        if (this.vms.get(machine.name) === vm) this.vms.delete(machine.name);
        return;
      }
      const started = Date.now();
      let stage: Stage | undefined;
      const timeout = AbortSignal.timeout(this.options.provisionTimeoutMs);
      try {
        await this.note(vm);
        await this.options.journal.write(this.record(vm, false));
        const signal = AbortSignal.any([vm.booting!.signal, timeout]);
        const readiness = await this.options.provisioner(machine.kind).provision(this.request(vm), { stage: async (next) => void (stage = next) }, signal);
        if (!('host' in readiness)) throw new Error('a warm machine must be reachable over SSH');
        vm.ready = readiness;
        delete vm.booting;
        this.open(vm);
        this.failures.delete(machine.name);
        const found = await this.options.journal.read(machine.name, vm.id);
        const record = found && 'record' in found ? found.record : this.record(vm, false);
        const now = new Date().toISOString();
        await this.options.journal.write({ ...record, ready: true, readiness, readyAt: now, updatedAt: now });
        this.options.log.info({ machine: machine.name, image, seconds: (Date.now() - started) / 1000 }, 'warm');
        this.kick();
      } catch (error) {
        if (!vm.booting?.signal.aborted) {
          this.failures.set(machine.name, { count: (this.failures.get(machine.name)?.count ?? 0) + 1, at: Date.now() });
          this.options.log.warn({ machine: machine.name, image, error: (error as Error).message }, 'warm boot failed');
          this.failedBoot(vm, error, timeout.aborted ? 'provision_timeout' : undefined, stage, started);
        }
        await this.discard(vm);
      }
    });
  }

  /** A warm boot that failed, kept for the next report as the task loop reports a provisioning's failure. */
  private failedBoot(vm: WarmVm, error: unknown, timedOut: string | undefined, reached: Stage | undefined, started: number): void {
    const failure = error instanceof ProvisionError ? error : undefined;
    const stage = failure?.stage ?? reached;
    this.keepFailed([
      {
        machine: vm.machine.name,
        image: vm.image,
        id: vm.id,
        reason: (timedOut ? `not ready within ${this.options.provisionTimeoutMs / 1000}s` : (error as Error).message).slice(0, 20_000),
        fault: failure?.fault ?? 'infrastructure',
        code: timedOut ?? failure?.code ?? 'infrastructure_failed',
        ...(stage ? { stage } : {}),
        seconds: (Date.now() - started) / 1000,
      },
    ]);
  }

  /** Failed warm boots to report, the newest `warmFailuresKept` of them; `earlier` ones (a report that did not go) before those there. */
  private keepFailed(boots: WarmFailure[], earlier = false): void {
    if (earlier) this.failedBoots.unshift(...boots);
    else this.failedBoots.push(...boots);
    this.failedBoots.splice(0, Math.max(0, this.failedBoots.length - warmFailuresKept));
  }

  /** Stops the machine's warm VM, in its queue. */
  private cool(machine: string): Promise<void> {
    return this.queued(machine, async () => {
      const vm = this.vms.get(machine);
      if (vm) await this.discard(vm);
    });
  }

  private queued(machine: string, work: () => Promise<void>): Promise<void> {
    this.busy.add(machine);
    return this.options
      .exclusive(machine, work)
      .catch((error: unknown) => this.options.log.error({ machine, error: (error as Error).message }, 'warm work failed'))
      .finally(() => this.busy.delete(machine));
  }

  /** Opens the session the key swap will use; a session that fails or closes is dropped. */
  private open(vm: WarmVm): void {
    const ready = vm.ready!;
    const session: Promise<SshClient | undefined> = sshConnect({
      host: ready.host,
      port: ready.port,
      user: ready.user,
      privateKey: this.key!.privateKey,
      ...(ready.hostKey ? { expectedHostKey: ready.hostKey } : {}),
      timeoutMs: 10_000,
    }).then(
      ({ client }) => {
        client.on('error', () => undefined);
        client.on('close', () => {
          if (vm.session === session) delete vm.session;
        });
        return client;
      },
      () => undefined,
    );
    vm.session = session;
  }

  /** Releases a warm VM (its kind stops it and removes its disk) and forgets it. */
  private async discard(vm: WarmVm): Promise<void> {
    const name = vm.machine.name;
    if (this.vms.get(name) === vm) this.vms.delete(name);
    void vm.session?.then((client) => client?.end());
    delete vm.session;
    try {
      await this.options.provisioner(vm.machine.kind).release(this.request(vm));
    } catch (error) {
      // Kept, no longer warm (its record says so too, for a restart): no warm boot on the machine
      // until a release succeeds, and a task for it releases it first (and fails if that fails).
      delete vm.ready;
      delete vm.booting;
      vm.releaseFailed = Date.now();
      if (!this.vms.has(name)) this.vms.set(name, vm);
      const found = await this.options.journal.read(name, vm.id);
      if (found && 'record' in found) await this.options.journal.write({ ...found.record, ready: false, updatedAt: new Date().toISOString() });
      throw error;
    }
    await this.forget(vm);
  }

  private async forget(vm: WarmVm): Promise<void> {
    await this.options.journal.remove(vm.machine.name, vm.id);
    await rm(this.notePath(vm.machine.name), { force: true });
    await rm(path.join(this.options.consolesDir, vm.id), { recursive: true, force: true });
  }

  /** The warm VMs an earlier run left: ready ones are kept (and watched again), the others stopped. */
  private async restore(): Promise<void> {
    const folder = path.join(this.dir, 'vms');
    const names = await readdir(folder).catch(() => [] as string[]);
    for (const name of names) {
      if (!name.endsWith('.json')) continue;
      const note = JSON.parse(await readFile(path.join(folder, name), 'utf8')) as WarmNote;
      const vm: WarmVm = { id: note.id, image: note.image, machine: note.machine };
      const found = await this.options.journal.read(note.machine.name, note.id);
      const record = found && 'record' in found ? found.record : undefined;
      if (record?.ready && record.readiness && 'host' in record.readiness) {
        vm.ready = record.readiness;
        this.vms.set(vm.machine.name, vm);
        this.open(vm);
        await this.options.provisioner(vm.machine.kind).adopt?.(this.request(vm));
      } else {
        await this.queued(vm.machine.name, () => this.discard(vm));
      }
    }
  }

  private request(vm: WarmVm): ProvisionRequest {
    return {
      reservationId: vm.id,
      allocationId: `${vm.id}.0`,
      machine: vm.machine,
      publicKey: this.key!.publicKey,
      privateKey: this.key!.privateKey,
      image: vm.image,
      state: this.state(vm),
    };
  }

  /** The kind's detail in the warm VM's record. */
  private state(vm: WarmVm): ProvisionState {
    const { journal } = this.options;
    const current = async () => {
      const found = await journal.read(vm.machine.name, vm.id);
      return found && 'record' in found ? found.record : undefined;
    };
    return {
      read: async () => (await current())?.detail,
      save: async (detail) => {
        await journal.write({ ...((await current()) ?? this.record(vm, false)), updatedAt: new Date().toISOString(), detail });
      },
    };
  }

  private record(vm: WarmVm, ready: boolean): ProvisioningRecord {
    const now = new Date().toISOString();
    return {
      version: recordVersion,
      kind: vm.machine.kind,
      machine: vm.machine.name,
      reservationId: vm.id,
      allocationId: `${vm.id}.0`,
      ready,
      startedAt: now,
      updatedAt: now,
    };
  }

  private notePath(machine: string): string {
    if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(machine)) throw new Error(`not a machine name: ${JSON.stringify(machine)}`);
    return path.join(this.dir, 'vms', `${machine}.json`);
  }

  private async note(vm: WarmVm): Promise<void> {
    await mkdir(path.join(this.dir, 'vms'), { recursive: true, mode: 0o700 });
    const note: WarmNote = { id: vm.id, image: vm.image, machine: vm.machine };
    await writeFile(this.notePath(vm.machine.name), JSON.stringify(note), { mode: 0o600 });
  }

  /** The agent's own key pair for its warm VMs: made once, kept with mode 0600. */
  private async loadKey(): Promise<{ privateKey: string; publicKey: string }> {
    const file = path.join(this.dir, 'key.json');
    const kept = await readFile(file, 'utf8').then(
      (text) => JSON.parse(text) as { privateKey: string; publicKey: string },
      () => undefined,
    );
    if (kept) return kept;
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    const key = generateKeyPair(`paddock-warm@${this.options.agent}`);
    await writeFile(file, JSON.stringify(key), { mode: 0o600 });
    return key;
  }
}
