// The `static` kind's provisioner: hosts that already exist and stay up, each lending one login
// (the tenant) to one reservation at a time. Provisioning adds the reservation's key to the
// tenant's authorized_keys (tagged, restricted, expiring at the hard cap) over Paddock's own root
// login and proves the tenant's login works; releasing takes out the reservation's line and any
// line Paddock did not write, and ends the tenant's processes. There are no power or boot stages.
import { readFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import {
  parseSettings,
  ProvisionError,
  type MachineRecord,
  type Provisioner,
  type ProvisionerFactory,
  type ProvisionRequest,
  type SshReadiness,
  type StageReporter,
} from '../types.js';
import type { Stage } from '../../protocol/agent.js';
import { tcpConnects } from '../../protocol/reach.js';
import { sshConnect, sshHandshake, type SshClient } from '../../protocol/ssh.js';
import { addReservationKey, listReservations, releaseTenant, type ReleaseResult } from './adapter.js';
import { staticIdentity, staticSettings, tenantKeysFile, type StaticSettings } from './settings.js';
import { KeyedQueue } from '../../images/keyed-queue.js';
import { silentLog, type Log } from '../../protocol/log.js';

export const createStaticProvisioner: ProvisionerFactory<StaticSettings> = (context) => new StaticProvisioner(context.log);

export class StaticProvisioner implements Provisioner<StaticSettings> {
  private readonly sessions = new AdminSessions();
  /**
   * One change at a time per tenant: the leak sweep releases outside the agent's per-machine queue,
   * and a release decides whether to end the tenant's processes from the keys it sees, so a key
   * being added must not slip in between.
   */
  private readonly tenantQueues = new KeyedQueue();

  constructor(private readonly log: Log = silentLog()) {}

  async close(): Promise<void> {
    this.sessions.closeAll();
  }

  /** The host's SSH port accepts a connection (closed at once: no login, nothing sent). */
  async check(machine: MachineRecord<StaticSettings>, signal: AbortSignal): Promise<string[]> {
    const { address, port } = settingsOf(machine);
    return tcpConnects(address, port, signal).then(
      () => [],
      (error: unknown) => [`its SSH port ${address}:${port} does not answer (${(error as Error).message})`],
    );
  }

  async provision(request: ProvisionRequest<StaticSettings>, report: StageReporter, signal: AbortSignal): Promise<SshReadiness> {
    const settings = settingsOf(request.machine);
    await report.stage('addressKnown');
    signal.throwIfAborted();

    const stage: Stage = 'sshReady';
    if (request.hardCapAt === undefined)
      throw new ProvisionError(`${request.machine.name}: no hard cap given: a key without an expiry is never added`, 'infrastructure', stage);
    const expiresAt = new Date(request.hardCapAt);
    const hostKey = await this.withTenant(request.machine, settings, stage, signal, (client) =>
      addReservationKey(client, { file: tenantKeysFile(settings), user: settings.user }, request.reservationId, request.publicKey, expiresAt),
    );
    // Readiness is a login with the key the owner will use, when we have it; the host key must be
    // the one the admin login saw (or pinned).
    if (request.privateKey !== undefined) {
      await sshHandshake({
        host: settings.address,
        port: settings.port,
        user: settings.user,
        privateKey: request.privateKey,
        expectedHostKey: hostKey,
        timeoutMs: settings.connectTimeout * 1000,
        signal,
      }).catch((error: unknown) => {
        throw new ProvisionError(`${request.machine.name}: login with the reservation's key failed: ${(error as Error).message}`, 'infrastructure', stage);
      });
    }
    await report.stage(stage);
    return { host: settings.address, port: settings.port, user: settings.user, hostKey };
  }

  async release(request: ProvisionRequest<StaticSettings>): Promise<void> {
    const settings = settingsOf(request.machine);
    let result: ReleaseResult | undefined;
    await this.withTenant(request.machine, settings, undefined, undefined, async (client) => {
      result = await releaseTenant(client, { file: tenantKeysFile(settings), user: settings.user }, request.reservationId);
    });
    if (result) this.alert(request, settings, result);
  }

  async owned(machine: MachineRecord<StaticSettings>): Promise<string[]> {
    const settings = settingsOf(machine);
    let ids: string[] = [];
    await this.withAdmin(machine, settings, undefined, undefined, async (client) => {
      ids = await listReservations(client, tenantKeysFile(settings));
    });
    return ids;
  }

  /**
   * Says in the agent's log what a release found that should not be: lines Paddock did not write
   * (removed: only root can write the file, so someone with root on the host put them there), a
   * path the tenant could change, processes left running because another reservation's key is there.
   */
  private alert(request: ProvisionRequest<StaticSettings>, settings: StaticSettings, result: ReleaseResult): void {
    const where = `${request.machine.name} (${settings.user}, ${tenantKeysFile(settings)})`;
    if (result.unexpected > 0) {
      this.log.warn(
        { reservation: request.reservationId, machine: request.machine.name },
        `ALERT ${where}: removed ${result.unexpected} line(s) Paddock did not write, at the release of ${request.reservationId}: ${result.strangeLines.join(' | ')}`,
      );
    }
    if (result.unsafe)
      this.log.warn(
        { reservation: request.reservationId, machine: request.machine.name },
        `ALERT ${where}: the tenant can change her key file: unsafe owner or mode on${result.unsafe}`,
      );
    if (result.others > 0)
      this.log.warn(
        { reservation: request.reservationId, machine: request.machine.name },
        `${where}: ${result.others} other reservation key(s) present at the release of ${request.reservationId}; the tenant's processes were left running`,
      );
    if (result.killed > 0)
      this.log.info(
        { reservation: request.reservationId, machine: request.machine.name },
        `${where}: ended ${result.killed} process(es) of ${settings.user} at the release of ${request.reservationId}`,
      );
  }

  /** `withAdmin` for a change to the tenant's keys or processes, one at a time per tenant. */
  private async withTenant(
    machine: MachineRecord<StaticSettings>,
    settings: StaticSettings,
    stage: Stage | undefined,
    signal: AbortSignal | undefined,
    work: (client: SshClient) => Promise<void>,
  ): Promise<string> {
    return this.tenantQueues.run(staticIdentity(settings), () => this.withAdmin(machine, settings, stage, signal, work));
  }

  /**
   * Runs `work` over an admin login and returns the host key seen. The login is kept open for a
   * few seconds and shared, so a reservation's provisioning and the next one's release on the
   * same host cost one SSH handshake instead of one each (what OpenSSH's ControlMaster does).
   */
  private async withAdmin(
    machine: MachineRecord<StaticSettings>,
    settings: StaticSettings,
    stage: Stage | undefined,
    signal: AbortSignal | undefined,
    work: (client: SshClient) => Promise<void>,
  ): Promise<string> {
    const connect = async () => {
      const privateKey = await readAdminKey(machine, settings, stage);
      try {
        return await sshConnect({
          host: settings.address,
          port: settings.port,
          user: settings.adminUser,
          privateKey,
          ...(settings.hostKey === undefined ? {} : { expectedHostKey: settings.hostKey }),
          timeoutMs: settings.connectTimeout * 1000,
          ...(signal ? { signal } : {}),
        });
      } catch (error) {
        throw new ProvisionError(`${machine.name}: admin login failed: ${(error as Error).message}`, 'infrastructure', stage);
      }
    };
    const key = `${settings.adminUser}@${settings.address}:${settings.port} ${settings.adminKey}`;
    return this.sessions.use(key, connect, async (client) => {
      try {
        await work(client);
      } catch (error) {
        if (error instanceof ProvisionError) throw error;
        throw new ProvisionError(`${machine.name}: ${(error as Error).message}`, 'infrastructure', stage);
      }
    });
  }
}

interface AdminSession {
  client: SshClient;
  hostKey: string;
  idle?: NodeJS.Timeout;
  users: number;
  closed: boolean;
}

/** Open admin logins by host, closed after a few idle seconds or when the server drops them. */
class AdminSessions {
  private readonly sessions = new Map<string, Promise<AdminSession>>();

  constructor(private readonly idleMs = 5000) {}

  async use(key: string, connect: () => Promise<{ client: SshClient; hostKey: string }>, work: (client: SshClient) => Promise<void>): Promise<string> {
    let session = await this.open(key, connect);
    if (session.closed) {
      this.sessions.delete(key);
      session = await this.open(key, connect);
    }
    clearTimeout(session.idle);
    session.users += 1;
    try {
      await work(session.client);
    } finally {
      session.users -= 1;
      if (session.users === 0 && !session.closed) {
        session.idle = setTimeout(() => this.drop(key, session), this.idleMs);
        session.idle.unref();
      }
    }
    return session.hostKey;
  }

  closeAll(): void {
    for (const [key, pending] of this.sessions)
      void pending.then(
        (session) => this.drop(key, session),
        () => undefined,
      );
  }

  private open(key: string, connect: () => Promise<{ client: SshClient; hostKey: string }>): Promise<AdminSession> {
    let pending = this.sessions.get(key);
    if (!pending) {
      pending = connect().then((connection) => {
        const session: AdminSession = { ...connection, users: 0, closed: false };
        const lost = () => {
          session.closed = true;
          if (this.sessions.get(key) === pending) this.sessions.delete(key);
        };
        connection.client.on('close', lost);
        connection.client.on('error', lost);
        return session;
      });
      this.sessions.set(key, pending);
      pending.catch(() => this.sessions.delete(key));
    }
    return pending;
  }

  private drop(key: string, session: AdminSession): void {
    clearTimeout(session.idle);
    session.closed = true;
    session.client.end();
    this.sessions.delete(key);
  }
}

const settingsOf = (machine: MachineRecord<StaticSettings>) => parseSettings(staticSettings, machine);

async function readAdminKey(machine: MachineRecord<StaticSettings>, settings: StaticSettings, stage: Stage | undefined): Promise<Buffer> {
  const file = localPath(settings.adminKey);
  try {
    return await readFile(file);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? 'unreadable';
    throw new ProvisionError(`${machine.name}: cannot read the admin key ${file} (${code})`, 'infrastructure', stage);
  }
}

/** `~/` is this user's home; other relative paths are taken from the working directory. */
function localPath(file: string): string {
  return file.startsWith('~/') ? path.join(os.homedir(), file.slice(2)) : path.resolve(file);
}
