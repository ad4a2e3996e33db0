// The `openstack` kind's provisioner: x86 VMs as servers of an OpenStack cloud, one per reservation
// of a pool's machine (the pool itself is index.ts and pool.ts).
//
// For a reservation: the image (one stored in Paddock is uploaded to Glance once and found again by
// its sha256; `POOL/NAME` names one of the cloud's own), the reservation's public key as a Nova
// keypair, as cloud-init user data (`keys: userdata`), or both (images whose access is cloud-init);
// user data also carries a host key made for the server, which readiness and clients pin. The server
// is tagged with this Paddock's id and the reservation id. Readiness: the server is accepted
// (powerConfirmed), ACTIVE (bootSeen), has an address (addressKnown), and an SSH login works with
// its host key captured (sshReady; skipped with `ready: active`). A server that goes to ERROR or is not ACTIVE in time is deleted and
// replaced, up to replaceAttempts; "no valid host" and quota errors say the cloud is full, and the
// scheduler queues the request again. Release deletes the server and the keypair and waits until
// they are gone. What the cloud holds is found by the tags (servers) and the names (keypairs), so a
// restarted agent reconciles the cloud with the database.
import { randomBytes } from 'node:crypto';
import { createReadStream, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ImageAccess } from '../../protocol/api.js';
import { cloudConfig, newHostKey } from '../cloud-init.js';
import type { PowerAction } from '../../protocol/agent.js';
import { SshProber } from '../ssh-probe.js';
import {
  parseSettings,
  ProvisionError,
  type KindContext,
  type MachineRecord,
  type Provisioner,
  type ProvisionerFactory,
  type ProvisionRequest,
  type SshReadiness,
  type StageReporter,
} from '../types.js';
import { OpenStackError, type GlanceImage, type OpenStackClient, type Server } from './client.js';
import { clientFor, clientKey } from './cloud.js';
import { openstackSettings, type OpenStackSettings } from './settings.js';

/** What the kind keeps in the provisioning record: the host key a server's user data gave it, and the server once ACTIVE. */
interface OpenStackDetail {
  pinnedHostKey?: string;
  serverId?: string;
}

export const createOpenStackProvisioner: ProvisionerFactory<OpenStackSettings> = (context) => new OpenStackProvisioner(context);

/** What a server's metadata says about the reservation it serves. */
interface Owner {
  reservation?: string;
  allocation?: string;
  machine?: string;
}

const ownerOf = (server: Server): Owner => ({
  reservation: server.metadata?.paddock_reservation,
  allocation: server.metadata?.paddock_allocation,
  machine: server.metadata?.paddock_machine,
});

/** Cloud failures that say it is full, not that anything is wrong: the request waits for room. */
const full = (message: string) => /no valid host|quota exceeded|exceeds.*quota|insufficient.*(capacity|resources)/i.test(message);

export class OpenStackProvisioner implements Provisioner<OpenStackSettings> {
  /** This Paddock's id in the cloud: every server it makes is tagged with it. */
  readonly instance: string;
  private readonly uploads = new Map<string, Promise<string>>();
  private readonly watched = new Map<string, NodeJS.Timeout>();
  private listing?: { at: number; key: string; servers: Promise<Server[]>; keypairs: Promise<string[]> };
  /** Glance copies the last sweep found unwanted. */
  private unwantedImages = new Set<string>();

  constructor(private readonly context: KindContext) {
    const file = path.join(context.dataDir, 'openstack', 'instance');
    let instance = '';
    try {
      instance = readFileSync(file, 'utf8').trim();
    } catch {
      // First start: made below.
    }
    if (!/^[0-9a-f]{8}$/.test(instance)) {
      instance = randomBytes(4).toString('hex');
      mkdirSync(path.dirname(file), { recursive: true });
      writeFileSync(file, `${instance}\n`);
    }
    this.instance = instance;
  }

  async close(): Promise<void> {
    for (const timer of this.watched.values()) clearInterval(timer);
    this.watched.clear();
  }

  private get tag(): string {
    return `paddock:${this.instance}`;
  }

  /** Nova keypair names take letters, digits, `_`, `-` and spaces: the machine's dots become `_`. */
  private keypairName(reservationId: string, machine: string): string {
    return `paddock-${this.instance}-${reservationId}-${keypairSafe(machine)}`;
  }

  private serverName(request: Pick<ProvisionRequest, 'reservationId' | 'machine'>): string {
    return `paddock-${request.reservationId}-${request.machine.name}`;
  }

  async provision(request: ProvisionRequest<OpenStackSettings>, report: StageReporter, signal: AbortSignal): Promise<SshReadiness> {
    const settings = parseSettings(openstackSettings, request.machine);
    const where = `${request.machine.name} (OpenStack pool ${settings.pool ?? '?'})`;
    try {
      return await this.bringUp(request, settings, report, signal, where);
    } catch (error) {
      throw asProvisionError(error, where);
    }
  }

  private async bringUp(
    request: ProvisionRequest<OpenStackSettings>,
    settings: OpenStackSettings,
    report: StageReporter,
    signal: AbortSignal,
    where: string,
  ): Promise<SshReadiness> {
    if (request.cmdline !== undefined)
      throw new ProvisionError(
        `${where}: an OpenStack server boots its image's own kernel command line (--cmdline goes with a boot bundle)`,
        'request',
        undefined,
        {
          code: 'cmdline_not_supported',
        },
      );
    const client = clientFor(settings);
    const network = await client.networkId(settings.network);
    if (!network)
      throw new ProvisionError(`${where}: the cloud has no network ${settings.network}`, 'infrastructure', 'powerConfirmed', { code: 'cloud_misconfigured' });
    const image = await this.imageFor(client, request, settings, signal, where);
    const keyName = this.keypairName(request.reservationId, request.machine.name);
    // cloud-init user data for `keys: userdata` pools and for images whose access is cloud-init (then
    // beside the keypair): the key, and a host key made here that readiness and clients pin.
    const hostKey = settings.keys === 'userdata' || image.access === 'cloud-init' ? newHostKey(`paddock-host:${request.allocationId}`) : undefined;
    const earlier = (await request.state.read()) as OpenStackDetail | undefined;
    if (settings.keys === 'keypair') {
      await client.deleteKeypair(keyName);
      await client.createKeypair(keyName, request.publicKey);
    }
    const body = {
      name: this.serverName(request),
      flavorRef: settings.flavor,
      imageRef: image.id,
      networks: [{ uuid: network }],
      tags: [this.tag, `paddock-reservation:${request.reservationId}`],
      metadata: {
        paddock_reservation: request.reservationId,
        paddock_allocation: request.allocationId,
        paddock_machine: request.machine.name,
        paddock_instance: this.instance,
      },
      ...(settings.keys === 'keypair' ? { key_name: keyName } : {}),
      // Nova takes user data base64-encoded (at most 65535 bytes once encoded).
      ...(hostKey ? { user_data: Buffer.from(cloudConfig({ publicKey: request.publicKey, hostKey })).toString('base64') } : {}),
    };

    let server: Server | undefined;
    let lastFailure = '';
    let powered = false;
    let pinnedHostKey = hostKey?.publicKey;
    for (let attempt = 0; attempt <= settings.replaceAttempts; attempt++) {
      signal.throwIfAborted();
      // After an agent restart the server made before it may still be booting: carry on with it
      // (and with the host key its user data gave it).
      server =
        attempt === 0 ? (await this.servers(client)).find((each) => ownerOf(each).allocation === request.allocationId && each.status !== 'ERROR') : undefined;
      if (server) pinnedHostKey = earlier?.pinnedHostKey;
      else {
        pinnedHostKey = hostKey?.publicKey;
        if (pinnedHostKey) await request.state.save({ pinnedHostKey });
        try {
          server = await client.createServer(body);
        } catch (error) {
          if (error instanceof OpenStackError && (error.kind === 'quota' || full(error.message))) {
            throw new ProvisionError(`${where}: the cloud is full: ${error.message}`, 'infrastructure', 'powerConfirmed', { code: 'no_capacity' });
          }
          throw error;
        }
        this.context.log.info(
          { reservation: request.reservationId, machine: request.machine.name, allocation: request.allocationId, server: server.id },
          'server created',
        );
      }
      if (!powered) await report.stage('powerConfirmed');
      powered = true;
      const outcome = await this.awaitActive(client, server.id, settings, signal);
      if (outcome.ok) {
        server = outcome.server;
        break;
      }
      lastFailure = outcome.reason;
      this.context.log.warn(
        { reservation: request.reservationId, machine: request.machine.name, allocation: request.allocationId, server: server.id, reason: outcome.reason },
        'server failed; deleting it',
      );
      await this.deleteServers(client, [server.id]);
      server = undefined;
      if (full(lastFailure)) {
        throw new ProvisionError(`${where}: the cloud is full: ${lastFailure}`, 'infrastructure', 'bootSeen', { code: 'no_capacity' });
      }
    }
    if (!server) {
      const tries = settings.replaceAttempts + 1;
      throw new ProvisionError(
        `${where}: no server became ACTIVE in ${tries} ${tries === 1 ? 'try' : 'tries'}; last: ${lastFailure}`,
        'infrastructure',
        'bootSeen',
        { code: 'cloud_error' },
      );
    }
    await report.stage('bootSeen');
    await request.state.save({ ...(pinnedHostKey ? { pinnedHostKey } : {}), serverId: server.id });
    return this.login(request, settings, client, server, report, signal, where, pinnedHostKey);
  }

  /**
   * Power during the lease, through Nova's server actions: `off` stops the server (SHUTOFF), `on`
   * starts it, `cycle` reboots it (HARD: the power is cut; a stopped server is started). Readiness
   * is tracked again: ACTIVE with nothing under way, an address, an SSH login.
   */
  async power(
    request: ProvisionRequest<OpenStackSettings>,
    action: PowerAction,
    report: StageReporter,
    signal: AbortSignal,
  ): Promise<SshReadiness | undefined> {
    const settings = parseSettings(openstackSettings, request.machine);
    const where = `${request.machine.name} (OpenStack pool ${settings.pool ?? '?'})`;
    try {
      const client = clientFor(settings);
      const server = (await this.servers(client)).find((each) => ownerOf(each).allocation === request.allocationId);
      if (!server) throw new ProvisionError(`${where}: the reservation's server is gone`, 'infrastructure', 'powerConfirmed', { code: 'machine_lost' });
      this.unwatch(request.allocationId);
      const stopped = server.status === 'SHUTOFF';
      if (action === 'off') {
        if (!stopped) await client.serverAction(server.id, { 'os-stop': null });
        await this.awaitSettled(client, server.id, 'SHUTOFF', settings, signal, where);
        return undefined;
      }
      if (stopped) await client.serverAction(server.id, { 'os-start': null });
      else if (action === 'cycle') await client.serverAction(server.id, { reboot: { type: 'HARD' } });
      await report.stage('powerConfirmed');
      const active = await this.awaitSettled(client, server.id, 'ACTIVE', settings, signal, where);
      await report.stage('bootSeen');
      // A reboot keeps the host key the server's user data gave it at its first boot.
      const pinnedHostKey = ((await request.state.read()) as OpenStackDetail | undefined)?.pinnedHostKey;
      return await this.login(request, settings, client, active, report, signal, where, pinnedHostKey);
    } catch (error) {
      throw asProvisionError(error, where);
    }
  }

  /** Polls a server after an action until it is `status` with no task under way, or fails. */
  private async awaitSettled(
    client: OpenStackClient,
    id: string,
    status: string,
    settings: OpenStackSettings,
    signal: AbortSignal,
    where: string,
  ): Promise<Server> {
    const deadline = Date.now() + settings.activeTimeout * 1000;
    for (;;) {
      const server = await client.server(id);
      if (!server || server.status === 'DELETED')
        throw new ProvisionError(`${where}: server ${id} disappeared`, 'infrastructure', undefined, { code: 'machine_lost' });
      if (server.status === 'ERROR')
        throw new ProvisionError(`${where}: server ${id} went to ERROR: ${server.fault?.message ?? 'the cloud gave no reason'}`, 'infrastructure', undefined, {
          code: 'cloud_error',
        });
      if (server.status === status && !server['OS-EXT-STS:task_state']) return server;
      if (Date.now() > deadline)
        throw new ProvisionError(
          `${where}: server ${id} was not ${status} within ${settings.activeTimeout}s (still ${server.status})`,
          'infrastructure',
          undefined,
          {
            code: 'cloud_error',
          },
        );
      await sleep(settings.pollInterval * 1000, undefined, { signal });
    }
  }

  /** From an ACTIVE server to a login: its address, then SSH with the host key captured (unless `ready: active`); then it is watched. */
  private async login(
    request: ProvisionRequest<OpenStackSettings>,
    settings: OpenStackSettings,
    client: OpenStackClient,
    active: Server,
    report: StageReporter,
    signal: AbortSignal,
    where: string,
    pinnedHostKey: string | undefined,
  ): Promise<SshReadiness> {
    let server = active;
    const deadline = Date.now() + settings.activeTimeout * 1000;
    let address = addressOf(server, settings.network);
    while (!address) {
      if (Date.now() > deadline)
        throw new ProvisionError(`${where}: server ${server.id} is ACTIVE but has no address`, 'infrastructure', 'addressKnown', { code: 'cloud_error' });
      await sleep(settings.pollInterval * 1000, undefined, { signal });
      server = (await client.server(server.id)) ?? server;
      address = addressOf(server, settings.network);
    }
    await report.stage('addressKnown');
    const serverId = server.id;

    if (settings.ready === 'active') {
      this.watch(request, client, serverId, settings.watchInterval);
      return { host: address, port: 22, user: settings.user, ...(pinnedHostKey ? { hostKey: pinnedHostKey } : {}) };
    }
    const prober = new SshProber({ host: address, port: 22, user: settings.user, privateKey: request.privateKey ?? '', signal }, 0);
    const sshDeadline = Date.now() + settings.sshTimeout * 1000;
    for (;;) {
      prober.poke(false, pinnedHostKey);
      if (prober.hostKey !== undefined) break;
      if (Date.now() > sshDeadline) {
        throw new ProvisionError(`${where}: no SSH login on ${address} within ${settings.sshTimeout}s (last attempt: ${prober.last})`, 'request', 'sshReady', {
          code: 'boot_timeout',
        });
      }
      await sleep(250, undefined, { signal });
    }
    await report.stage('sshReady');
    this.watch(request, client, serverId, settings.watchInterval);
    return { host: address, port: 22, user: settings.user, hostKey: prober.hostKey };
  }

  /** Polls a new server until it is ACTIVE, goes to ERROR, or the activeTimeout passes. */
  private async awaitActive(
    client: OpenStackClient,
    id: string,
    settings: OpenStackSettings,
    signal: AbortSignal,
  ): Promise<{ ok: true; server: Server } | { ok: false; reason: string }> {
    const deadline = Date.now() + settings.activeTimeout * 1000;
    for (;;) {
      const server = await client.server(id);
      if (!server || server.status === 'DELETED') return { ok: false, reason: 'disappeared while it booted' };
      if (server.status === 'ACTIVE') return { ok: true, server };
      if (server.status === 'ERROR') return { ok: false, reason: `went to ERROR: ${server.fault?.message ?? 'the cloud gave no reason'}` };
      if (Date.now() > deadline) return { ok: false, reason: `was not ACTIVE within ${settings.activeTimeout}s (still ${server.status})` };
      await sleep(settings.pollInterval * 1000, undefined, { signal });
    }
  }

  /** The Glance image to boot: one of the cloud's (`POOL/NAME`), or a Paddock image uploaded once. */
  private async imageFor(
    client: OpenStackClient,
    request: ProvisionRequest<OpenStackSettings>,
    settings: OpenStackSettings,
    signal: AbortSignal,
    where: string,
  ): Promise<{ id: string; access?: ImageAccess }> {
    const ref = request.image;
    if (!ref)
      throw new ProvisionError(
        `${where}: an OpenStack machine boots an image: name one (NAME[:TAG] from Paddock, or ${settings.pool}/NAME from the cloud)`,
        'request',
        undefined,
        { code: 'image_required' },
      );
    const slash = ref.indexOf('/');
    if (slash >= 0) {
      const pool = ref.slice(0, slash);
      const name = ref.slice(slash + 1);
      if (pool !== settings.pool)
        throw new ProvisionError(`${where}: image ${ref} belongs to pool ${pool}, not ${settings.pool}`, 'request', undefined, { code: 'image_not_found' });
      let found: GlanceImage | undefined = (await client.images({ name, status: 'active' }))[0];
      if (!found && /^[0-9a-f-]{36}$/i.test(name)) found = await client.image(name);
      if (!found || found.status !== 'active')
        throw new ProvisionError(`${where}: the cloud has no active image ${name}`, 'request', undefined, { code: 'image_not_found' });
      return { id: found.id };
    }
    const local = await this.context.images.fetch(ref, signal);
    if (local.format === 'bundle') {
      throw new ProvisionError(`${where}: image ${local.ref} is a kernel bundle; OpenStack boots qcow2 or raw disk images`, 'request', undefined, {
        code: 'image_format_unsupported',
      });
    }
    const arch = request.machine.labels.arch;
    if (arch !== undefined && local.arch !== arch) {
      throw new ProvisionError(`${where}: image ${local.ref} is for ${local.arch}, this pool runs ${arch}`, 'request', undefined, {
        code: 'image_arch_mismatch',
      });
    }
    const key = `${JSON.stringify(clientKey(settings))}:${local.sha256}`;
    let upload = this.uploads.get(key);
    if (!upload) {
      upload = this.upload(client, local.ref, local.sha256, local.format, local.file);
      this.uploads.set(key, upload);
      // A failed upload is tried again by the next reservation; a finished one is found by its sha256.
      upload.then(
        () => this.uploads.delete(key),
        () => this.uploads.delete(key),
      );
    }
    return { id: await upload, access: local.access };
  }

  private async upload(client: OpenStackClient, ref: string, sha256: string, format: string, file: string): Promise<string> {
    const existing = (await client.images({ paddock_sha256: sha256, status: 'active' }))[0];
    if (existing) return existing.id;
    const image = await client.createImage({
      name: `paddock-${ref.replace(':', '-')}`,
      disk_format: format,
      container_format: 'bare',
      visibility: 'private',
      paddock_sha256: sha256,
      paddock_ref: ref,
      paddock_instance: this.instance,
    });
    try {
      await client.uploadImage(image.id, createReadStream(file));
      const stored = await client.image(image.id);
      if (stored?.status !== 'active') throw new Error(`Glance left image ${image.id} ${stored?.status ?? 'missing'} after the upload`);
    } catch (error) {
      await client.deleteImage(image.id).catch(() => undefined);
      throw error;
    }
    this.context.log.info({ image: ref, glanceImage: image.id }, 'image uploaded to Glance');
    return image.id;
  }

  async release(request: ProvisionRequest<OpenStackSettings>): Promise<void> {
    this.unwatch(request.allocationId);
    const settings = parseSettings(openstackSettings, request.machine);
    const client = clientFor(settings);
    try {
      const servers = (await this.servers(client)).filter((server) => {
        const owner = ownerOf(server);
        return owner.reservation === request.reservationId && owner.machine === request.machine.name;
      });
      await this.deleteServers(
        client,
        servers.map((server) => server.id),
      );
      await client.deleteKeypair(this.keypairName(request.reservationId, request.machine.name));
    } catch (error) {
      throw asProvisionError(error, request.machine.name);
    }
  }

  /** A server that was ready when the agent stopped (a reservation's, or a warm one) is watched again. */
  async adopt(request: ProvisionRequest<OpenStackSettings>): Promise<void> {
    const serverId = ((await request.state.read()) as OpenStackDetail | undefined)?.serverId;
    if (serverId === undefined || this.watched.has(request.allocationId)) return;
    const settings = parseSettings(openstackSettings, request.machine);
    this.watch(request, clientFor(settings), serverId, settings.watchInterval);
  }

  /**
   * A server booted for the agent's warm pool (with the agent's key, which the agent has swapped for
   * the reservation's by now) becomes the reservation's: its metadata, tag and name say the reservation
   * (so its release, power actions and the leak sweep find it as any other), the warm keypair goes,
   * its pinned host key follows, and it is watched for the reservation.
   */
  async handOver(warm: ProvisionRequest<OpenStackSettings>, request: ProvisionRequest<OpenStackSettings>): Promise<void> {
    const settings = parseSettings(openstackSettings, request.machine);
    const where = `${request.machine.name} (OpenStack pool ${settings.pool ?? '?'})`;
    try {
      const client = clientFor(settings);
      const detail = (await warm.state.read()) as OpenStackDetail | undefined;
      const id = detail?.serverId ?? (await this.servers(client)).find((each) => ownerOf(each).allocation === warm.allocationId)?.id;
      if (!id) throw new ProvisionError(`${where}: the warm server is gone`, 'infrastructure', undefined, { code: 'machine_lost' });
      this.unwatch(warm.allocationId);
      await request.state.save({ ...detail, serverId: id });
      // The metadata first: from then on the reservation's release finds the server.
      await client.setServerMetadata(id, { paddock_reservation: request.reservationId, paddock_allocation: request.allocationId });
      await Promise.all([
        client.tagServer(id, `paddock-reservation:${request.reservationId}`, true),
        client.tagServer(id, `paddock-reservation:${warm.reservationId}`, false),
        client.renameServer(id, this.serverName(request)),
        client.deleteKeypair(this.keypairName(warm.reservationId, warm.machine.name)),
      ]);
      this.context.log.info(
        { reservation: request.reservationId, machine: request.machine.name, allocation: request.allocationId, server: id },
        'warm server handed over',
      );
      this.watch(request, client, id, settings.watchInterval);
    } catch (error) {
      throw asProvisionError(error, where);
    }
  }

  /** Reservations whose servers or keypairs are in the cloud on this machine (warm servers are the warm pool's: not listed). */
  async owned(machine: MachineRecord<OpenStackSettings>): Promise<string[]> {
    const settings = parseSettings(openstackSettings, machine);
    const client = clientFor(settings);
    // One listing serves every machine of the pool in a sweep.
    const key = JSON.stringify(clientKey(settings));
    if (!this.listing || this.listing.key !== key || Date.now() - this.listing.at > 2000) {
      const servers = this.servers(client);
      const keypairs = client.keypairs();
      // Both are awaited below by every machine of the pool; a failure of one must not go unheard by the other.
      servers.catch(() => undefined);
      keypairs.catch(() => undefined);
      this.listing = { at: Date.now(), key, servers, keypairs };
    }
    const ids = new Set<string>();
    for (const server of await this.listing.servers) {
      const owner = ownerOf(server);
      if (owner.machine === machine.name && owner.reservation?.startsWith('r-')) ids.add(owner.reservation);
    }
    const prefix = `paddock-${this.instance}-`;
    for (const name of await this.listing.keypairs) {
      const match = /^(r-[0-9a-f]{12})-(.+)$/.exec(name.startsWith(prefix) ? name.slice(prefix.length) : '');
      if (match && match[2] === keypairSafe(machine.name)) ids.add(match[1]);
    }
    return [...ids];
  }

  /**
   * Deletes the Glance copies this Paddock uploaded of images the store no longer holds (deleted,
   * or temporary and expired), unless a server uses them. A copy must be found unwanted by two
   * sweeps in a row: one uploaded while the store was being listed is never taken for a leftover.
   */
  async sweep(machines: MachineRecord<OpenStackSettings>[]): Promise<void> {
    const wanted = await this.context.images.stored();
    const seen = new Set<string>();
    const clouds = new Map<string, OpenStackSettings>();
    for (const machine of machines) {
      const settings = parseSettings(openstackSettings, machine);
      clouds.set(JSON.stringify(clientKey(settings)), settings);
    }
    for (const settings of clouds.values()) {
      const client = clientFor(settings);
      const copies = await client.images({ paddock_instance: this.instance });
      const inUse = new Set((await client.servers()).map((server) => (server.image ? server.image.id : undefined)));
      for (const copy of copies) {
        const sha256 = typeof copy.paddock_sha256 === 'string' ? copy.paddock_sha256 : undefined;
        if (sha256 === undefined || wanted.has(sha256) || inUse.has(copy.id)) continue;
        seen.add(copy.id);
        if (!this.unwantedImages.has(copy.id)) continue;
        this.context.log.info({ image: String(copy.paddock_ref), glanceImage: copy.id }, 'deleting the Glance image: Paddock no longer stores it');
        await client.deleteImage(copy.id);
      }
    }
    this.unwantedImages = seen;
  }

  /** This Paddock's servers (by tag). */
  private servers(client: OpenStackClient): Promise<Server[]> {
    return client.servers({ tags: this.tag });
  }

  /** Deletes servers and waits until the cloud no longer lists them. */
  private async deleteServers(client: OpenStackClient, ids: string[]): Promise<void> {
    await Promise.all(ids.map((id) => client.deleteServer(id)));
    const deadline = Date.now() + 120_000;
    let left = ids;
    while (left.length > 0) {
      const still = await Promise.all(
        left.map(async (id) => {
          const status = (await client.server(id))?.status;
          return status === undefined || status === 'DELETED' ? undefined : id;
        }),
      );
      left = still.filter((id): id is string => id !== undefined);
      if (left.length === 0) return;
      if (Date.now() > deadline) throw new Error(`server ${left.join(', ')} still exists 120s after its deletion`);
      await sleep(500);
    }
  }

  /** Watches a ready server: if it disappears or goes to ERROR, the reservation fails. */
  private watch(request: Pick<ProvisionRequest, 'reservationId' | 'allocationId'>, client: OpenStackClient, serverId: string, intervalSeconds: number): void {
    this.unwatch(request.allocationId);
    const timer = setInterval(() => {
      void client.server(serverId).then(
        (server) => {
          if (this.watched.get(request.allocationId) !== timer) return;
          if (server && server.status !== 'ERROR' && server.status !== 'DELETED') return;
          this.unwatch(request.allocationId);
          // Nova may still list a deleted server for a moment, as DELETED.
          const reason = server?.status === 'ERROR' ? `went to ERROR: ${server.fault?.message ?? 'no reason given'}` : 'was deleted outside Paddock';
          this.context.lost(request, `server ${serverId} ${reason}`, 'infrastructure');
        },
        () => undefined, // the cloud not answering is not the server being lost
      );
    }, intervalSeconds * 1000);
    timer.unref();
    this.watched.set(request.allocationId, timer);
  }

  private unwatch(allocationId: string): void {
    clearInterval(this.watched.get(allocationId));
    this.watched.delete(allocationId);
  }
}

const keypairSafe = (text: string) => text.replace(/[^A-Za-z0-9_ -]/g, '_');

/** The server's address on the pool's network (by name), else its first, IPv4 before IPv6. */
function addressOf(server: Server, network: string): string | undefined {
  const lists = server.addresses ?? {};
  const candidates = [...(lists[network] ?? []), ...Object.values(lists).flat()];
  return (candidates.find((each) => each.version === 4) ?? candidates[0])?.addr;
}

/** OpenStack failures as provisioning failures: an unreachable or refusing cloud is the infrastructure's. */
function asProvisionError(error: unknown, where: string): Error {
  if (error instanceof ProvisionError || (error as Error).name === 'AbortError') return error as Error;
  if (error instanceof OpenStackError) {
    if (error.kind === 'unreachable' || error.kind === 'unauthorized') {
      return new ProvisionError(`${where}: the cloud cannot be used: ${error.message}`, 'infrastructure', undefined, {
        code: 'cloud_unreachable',
        cause: error,
      });
    }
    if (error.kind === 'quota')
      return new ProvisionError(`${where}: the cloud is full: ${error.message}`, 'infrastructure', undefined, { code: 'no_capacity', cause: error });
    if (error.kind === 'bad_request')
      return new ProvisionError(`${where}: the cloud refused the server: ${error.message}`, 'request', undefined, { code: 'cloud_rejected', cause: error });
    return new ProvisionError(`${where}: ${error.message}`, 'infrastructure', undefined, { code: 'cloud_error', cause: error });
  }
  return error as Error;
}
