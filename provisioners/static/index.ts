// The `static` kind: hosts that already exist and stay up. Provisioning a reservation means adding
// its public key to the host's authorized_keys (tagged with the reservation id) and proving a login
// works; releasing means removing the tagged lines. There are no power or boot stages.
import { readFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseSettings, ProvisionError, type MachineRecord, type Provisioner, type ProvisionerKind, type ProvisionRequest, type SshReadiness, type StageReporter } from '../types.js';
import type { Stage } from '../protocol.js';
import { sshConnect, sshHandshake, type SshClient } from '../ssh.js';
import { addReservationKey, listReservations, removeReservationKeys } from './adapter.js';
import { staticIdentity, staticSettingsSchema, type StaticSettings } from './config.js';

export { staticSettingsSchema, type StaticSettings } from './config.js';

export const staticKind: ProvisionerKind<StaticSettings> = {
  kind: 'static',
  settingsSchema: staticSettingsSchema,
  pathSettings: ['adminKey'],
  identity: staticIdentity,
  create: () => new StaticProvisioner(),
};

export class StaticProvisioner implements Provisioner<StaticSettings> {
  private readonly sessions = new AdminSessions();

  async close(): Promise<void> {
    this.sessions.closeAll();
  }

  async provision(request: ProvisionRequest<StaticSettings>, report: StageReporter, signal: AbortSignal): Promise<SshReadiness> {
    const settings = settingsOf(request.machine);
    await report.stage('addressKnown');
    signal.throwIfAborted();

    const stage: Stage = 'sshReady';
    const hostKey = await this.withAdmin(request.machine, settings, stage, signal, async (client) => {
      await addReservationKey(client, settings.authorizedKeys, request.reservationId, request.publicKey);
    });
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
        throw new ProvisionError(
          `${request.machine.name}: login with the reservation's key failed: ${(error as Error).message}`,
          'infrastructure',
          stage,
        );
      });
    }
    await report.stage(stage);
    return { host: settings.address, port: settings.port, user: settings.user, hostKey };
  }

  async release(request: ProvisionRequest<StaticSettings>): Promise<void> {
    const settings = settingsOf(request.machine);
    await this.withAdmin(request.machine, settings, undefined, undefined, async (client) => {
      await removeReservationKeys(client, settings.authorizedKeys, request.reservationId);
    });
  }

  async owned(machine: MachineRecord<StaticSettings>): Promise<string[]> {
    const settings = settingsOf(machine);
    let ids: string[] = [];
    await this.withAdmin(machine, settings, undefined, undefined, async (client) => {
      ids = await listReservations(client, settings.authorizedKeys);
    });
    return ids;
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
          user: settings.user,
          privateKey,
          ...(settings.hostKey === undefined ? {} : { expectedHostKey: settings.hostKey }),
          timeoutMs: settings.connectTimeout * 1000,
          ...(signal ? { signal } : {}),
        });
      } catch (error) {
        throw new ProvisionError(`${machine.name}: admin login failed: ${(error as Error).message}`, 'infrastructure', stage);
      }
    };
    const key = `${settings.user}@${settings.address}:${settings.port} ${settings.adminKey}`;
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
    for (const [key, pending] of this.sessions) void pending.then((session) => this.drop(key, session), () => undefined);
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

const settingsOf = (machine: MachineRecord<StaticSettings>) => parseSettings(staticKind, machine);

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
