// The client library for job scripts: reserve machines, wait until they are ready (with progress),
// run commands and copy files over SSH with the pinned host key, and release, by hand or on scope
// exit (`await using`). While a reservation is held, its lease is renewed in the background.
//
//   const paddock = new Paddock(); // PADDOCK_URL, PADDOCK_TOKEN
//   await using reservation = await paddock.reserve({ members: [{ role: 'build', spec: 'x86' }] });
//   await reservation.ready({ onProgress: (update) => console.error(update) });
//   const { stdout } = await reservation.run('build', 'uname -a');
import { setTimeout as sleep } from 'node:timers/promises';
import type {
  AgentView,
  CredentialsView,
  EventView,
  ExplainView,
  MachineView,
  PowerAction,
  ReservationExplainView,
  ReservationRequest,
  ReservationState,
  ReservationView,
  Role,
  TokenView,
} from '../protocol/api.js';
import { MemberSyntaxError, parseMemberTarget } from './members.js';
import {
  LeaseExpiredError,
  MemberFailedError,
  NotFoundError,
  PaddockError,
  ReservationFailedError,
  TimeoutError,
  UnauthorizedError,
  ForbiddenError,
} from './errors.js';
import type { Duplex, Writable } from 'node:stream';
import { Images } from './images.js';
import { Jobs } from './jobs.js';
import { Http, type ServerHealth } from './http.js';
import { openConsole, type ConsoleOptions, type ConsoleSession } from './console.js';
import type { CommandResult, SshTarget } from './ssh.js';

export * from './errors.js';
export { ConsoleSession, type ConsoleOptions, type ConsoleMode } from './console.js';
export type { CommandResult, SshTarget } from './ssh.js';
export type { ServerHealth } from './http.js';
export type * from '../protocol/api.js';

const endStates: readonly ReservationState[] = ['released', 'failed', 'expired', 'cancelled'];
/** States from which a reservation can no longer become ready. */
const isOver = (state: ReservationState) => endStates.includes(state) || state === 'releasing';

/** What `ready()` reports while it waits: new events, and the reservation when it changed. */
export type Progress = EventView | ReservationView;
export const isEvent = (update: Progress): update is EventView => 'type' in update && 'to' in update;

export interface PaddockOptions {
  /**
   * The server, e.g. `http://127.0.0.1:7300`, or several API servers of one Paddock, comma-separated
   * (`http://a:7300,http://b:7300`): requests go to the leader and move to another server when one
   * stops answering. Defaults to $PADDOCK_URL.
   */
  url?: string;
  /** Defaults to $PADDOCK_TOKEN. */
  token?: string;
  /** Seconds a request keeps trying the servers of a list before PaddockConnectionError. Default 60. */
  failoverTimeout?: number;
}

export interface ReadyOptions {
  /** Seconds to wait before throwing TimeoutError (the reservation lives on). Default 3600. */
  timeout?: number;
  /** Called with every event (state changes, stages) in order, and with the reservation whenever
   * its state or queue position changed (`isEvent` tells them apart). */
  onProgress?: (update: Progress) => void;
}

export class Paddock {
  readonly http: Http;
  /** Upload, list, show, download and remove images. */
  readonly images: Images;
  /** Define jobs, run them on runner hosts, follow and cancel runs. */
  readonly jobs: Jobs;

  constructor(options: PaddockOptions = {}) {
    const url = options.url ?? process.env.PADDOCK_URL;
    const token = options.token ?? process.env.PADDOCK_TOKEN;
    if (!url) throw new PaddockError('no Paddock server: set PADDOCK_URL (e.g. http://127.0.0.1:7300) or pass { url }', 'configuration');
    if (!token) throw new PaddockError('no token: set PADDOCK_TOKEN or pass { token }', 'configuration');
    const budget = options.failoverTimeout;
    if (budget !== undefined && !(Number.isFinite(budget) && budget >= 0))
      throw new PaddockError('failoverTimeout is a number of seconds, 0 or more', 'configuration');
    this.http = new Http({ url, token, ...(budget === undefined ? {} : { failoverBudgetMs: budget * 1000 }) });
    this.images = new Images(this.http);
    this.jobs = new Jobs(this.http);
  }

  /**
   * Requests machines. The answer comes at once (queued or allocated): call `ready()` to wait.
   * Unless `renew: false`, the lease is renewed in the background until `release()`.
   */
  async reserve(request: ReservationRequest, options: { renew?: boolean } = {}): Promise<Reservation> {
    // With an idempotencyKey, a request sent twice (its answer lost to a server that died) makes one reservation.
    const view = await this.http.post<ReservationView>('v1/reservations', request, { replayable: request.idempotencyKey !== undefined });
    return new Reservation(this.http, view, options.renew ?? true);
  }

  /** An existing reservation; its lease is not renewed unless `renew: true`. */
  async reservation(id: string, options: { renew?: boolean } = {}): Promise<Reservation> {
    const view = await this.http.get<ReservationView>(reservationPath(id));
    return new Reservation(this.http, view, options.renew ?? false);
  }

  /** Your live reservations; `all` (admins): everyone's; `ended`: the finished ones too. */
  async list(options: { all?: boolean; ended?: boolean } = {}): Promise<ReservationView[]> {
    return (await this.http.getAll<ReservationView>('v1/reservations', { ...(options.all ? { all: 1 } : {}), ...(options.ended ? { ended: 1 } : {}) })).items;
  }

  /** The machines in service with their states and health scores; `retired`: the retired ones instead. */
  async machines(options: { retired?: boolean } = {}): Promise<MachineView[]> {
    return (await this.http.getAll<MachineView>('v1/machines', options.retired ? { retired: 1 } : {})).items;
  }

  /**
   * One machine: its state, lab host, labels, why it is offline or unreachable when it is, its health
   * score and its last provisionings (`limit`: how many, default the server's health window).
   */
  machine(name: string, options: { limit?: number } = {}): Promise<MachineView> {
    return this.http.get(`v1/machines/${encodeURIComponent(name)}`, options.limit === undefined ? undefined : { limit: options.limit });
  }

  /**
   * Takes a machine out of service (admins); a reserved one leaves when released. Sent again after a
   * broken connection: a second time leaves the machine as the first did.
   */
  maintenance(name: string, reason?: string): Promise<MachineView> {
    return this.http.post(`v1/machines/${encodeURIComponent(name)}/maintenance`, reason === undefined ? {} : { reason }, { replayable: true });
  }

  activate(name: string): Promise<MachineView> {
    return this.http.post(`v1/machines/${encodeURIComponent(name)}/activate`);
  }

  /** Retires a machine for good (admins): never handed out again, its history kept; a reserved one once released. */
  retire(name: string, reason?: string): Promise<MachineView> {
    return this.http.post(`v1/machines/${encodeURIComponent(name)}/retire`, reason === undefined ? {} : { reason });
  }

  /** The lab hosts and their agents (admins): state, version, last heard, machines, tasks, warnings. */
  async agents(): Promise<AgentView[]> {
    return (await this.http.getAll<AgentView>('v1/agents')).items;
  }

  /** Which machines a spec matches (and why those not free now are not), and the first term every other machine fails. */
  explain(spec: string): Promise<ExplainView> {
    return this.http.post('v1/explain', { spec }, { replayable: true }); // a question: asking twice changes nothing
  }

  /** Why a reservation waits: matches per member, why those not free now are not (offline, unreachable, …), and its queue position. */
  explainReservation(id: string): Promise<ReservationExplainView> {
    return this.http.get(`${reservationPath(id)}/explain`);
  }

  /**
   * Creates a token (admins). The answer is the only place the token is ever shown. `expires`: a
   * duration (seconds, or text such as `30d`) after which it is refused (401 `token_expired`).
   */
  createToken(name: string, role: Role = 'user', options: { expires?: number | string } = {}): Promise<TokenView & { token: string }> {
    return this.http.post('v1/tokens', { name, role, ...(options.expires !== undefined ? { expires: options.expires } : {}) });
  }

  /** Every token's name, role, creation and expiry (admins); never the tokens themselves. */
  async tokens(): Promise<TokenView[]> {
    return (await this.http.getAll<TokenView>('v1/tokens')).items;
  }

  /** Revokes a token at once: admins any, others their own. */
  async revokeToken(name: string): Promise<void> {
    await this.http.delete(`v1/tokens/${encodeURIComponent(name)}`);
  }

  /**
   * A new secret for a token, same name and role; the old one stops working at once. Without
   * `expires` the new one gets the old one's lifetime. Admins any token, others their own.
   */
  rotateToken(name: string, options: { expires?: number | string } = {}): Promise<TokenView & { token: string }> {
    return this.http.post(`v1/tokens/${encodeURIComponent(name)}/rotate`, options.expires !== undefined ? { expires: options.expires } : {});
  }

  /** The token's name and role, and when it expires if it does. */
  whoami(): Promise<{ name: string; role: Role; expiresAt?: string }> {
    return this.http.get('v1/whoami');
  }

  /** Each server of the list on its own: which leads, which follow (and whom), which do not answer. Never throws for a server. */
  servers(): Promise<ServerHealth[]> {
    return this.http.health();
  }
}

export class Reservation {
  private renewal?: NodeJS.Timeout;
  private renewing = false;
  private cachedCredentials?: CredentialsView;
  /** The members' logins in the view the cached credentials were fetched with. */
  private cachedFor = '';
  private released = false;

  constructor(
    private readonly http: Http,
    private current: ReservationView,
    renew: boolean,
  ) {
    if (renew && !isOver(current.state)) {
      this.renewing = true;
      this.scheduleRenewal(this.renewalInterval());
    }
  }

  get id(): string {
    return this.current.id;
  }

  /** The last ReservationView the server sent. */
  get view(): ReservationView {
    return this.current;
  }

  get state(): ReservationState {
    return this.current.state;
  }

  async refresh(): Promise<ReservationView> {
    return this.adopt(await this.http.get<ReservationView>(this.path()));
  }

  /**
   * Waits until every machine is ready, long-polling `?wait=ready`. Progress comes live from the
   * event stream (or by polling when the stream is unavailable). Throws ReservationFailedError if
   * the reservation ends instead, TimeoutError after `timeout` seconds.
   */
  async ready(options: ReadyOptions = {}): Promise<this> {
    const deadline = Date.now() + (options.timeout ?? 3600) * 1000;
    const feed = options.onProgress ? new ProgressFeed(this.http, this.path(), options.onProgress) : undefined;
    try {
      let view = this.current;
      for (;;) {
        await feed?.catchUp(view);
        // Ready, with no member in the middle of a power action or re-deploy.
        if (view.state === 'ready' && !view.allocations.some((allocation) => allocation.state === 'provisioning')) return this;
        if (isOver(view.state)) throw new ReservationFailedError(view);
        const left = Math.ceil((deadline - Date.now()) / 1000);
        if (left <= 0)
          throw new TimeoutError(`reservation ${this.id} was not ready in time (it is ${view.state})`, 'timeout', undefined, {
            id: this.id,
            state: view.state,
          });
        const wait = Math.min(left, 60);
        view = await this.http.get<ReservationView>(this.path(), { wait: 'ready', timeout: wait }, wait);
        this.adopt(view);
      }
    } finally {
      feed?.stop();
    }
  }

  events(): Promise<EventView[]> {
    return this.http.get(`${this.path()}/events`);
  }

  /**
   * Writes a machine's serial console log (default: the first machine with one) into `target`;
   * with `follow`, keeps streaming new output until the reservation ends, taking a broken connection
   * up again where it stopped.
   */
  async console(target: Writable, options: { machine?: string; follow?: boolean } = {}): Promise<void> {
    const query = new URLSearchParams();
    if (options.machine) query.set('machine', options.machine);
    if (options.follow) {
      query.set('follow', '1');
      await this.http.follow(`${this.path()}/console`, query, target, 'machine');
    } else await this.http.download(`${this.path()}/console${query.size ? `?${query.toString()}` : ''}`, target);
  }

  /**
   * A live, interactive session with a machine's console (owner: `write` or `takeover` to type;
   * anyone who may see the reservation: watch). See ConsoleSession.
   */
  openConsole(options: ConsoleOptions = {}): Promise<ConsoleSession> {
    return openConsole(this.http, this.path(), options);
  }

  /**
   * The private key and the pinned host keys (owner only). Cached once every member is in it, for
   * as long as the last view shows the members where they were (a reboot or a re-deploy, here or
   * by another client, may give a member another address or host key).
   */
  async credentials(): Promise<CredentialsView> {
    if (this.cachedCredentials && this.cachedFor === logins(this.current)) return this.cachedCredentials;
    const credentials = await this.http.get<CredentialsView>(`${this.path()}/credentials`);
    this.cachedCredentials = undefined;
    const current = this.current.allocations.filter((allocation) => allocation.replacedBy === undefined);
    if (credentials.machines.length >= current.length && current.length > 0) {
      this.cachedCredentials = credentials;
      this.cachedFor = logins(this.current);
    }
    return credentials;
  }

  /** Where to reach a member: `role` (its first machine), `role.N` or `role[N]`. */
  async target(target: string): Promise<SshTarget> {
    const member = this.member(target);
    const find = (credentials: CredentialsView) => credentials.machines.find((machine) => machine.role === member.role && machine.index === member.index);
    let credentials = await this.credentials();
    let machine = find(credentials);
    if (!machine && this.cachedCredentials) {
      this.cachedCredentials = undefined; // a member may have become ready since
      credentials = await this.credentials();
      machine = find(credentials);
    }
    if (!machine) throw new PaddockError(`reservation ${this.id} has no ready member ${member.role}[${member.index}]`, 'invalid_target');
    const via = machine.via ?? 'direct';
    const name = machine.machine;
    return {
      host: machine.host,
      port: machine.port,
      user: machine.user,
      hostKey: machine.hostKey,
      privateKey: credentials.privateKey,
      via,
      ...(via === 'paddock' ? { tunnel: () => this.tunnel(name, 'ssh') } : {}),
    };
  }

  /**
   * A stream to a port of one of the reservation's machines (by machine name), through the API and
   * the machine's lab host: `ssh` (22) or `console` (a board's relay). The owner only.
   */
  async tunnel(machine: string, port: 'ssh' | 'console' | '22' = 'ssh'): Promise<Duplex> {
    const { createWebSocketStream } = await import('ws');
    const { socket, opened } = await this.http.webSocket(`${this.path()}/tunnel`, { machine, port });
    // The stream listens from the start: bytes that come right after the opening are not lost.
    const stream = createWebSocketStream(socket, { highWaterMark: 1 << 20 });
    const early = () => undefined;
    stream.on('error', early);
    try {
      await opened;
    } catch (error) {
      stream.destroy();
      throw error;
    } finally {
      stream.off('error', early);
    }
    return stream;
  }

  /** Runs a shell command on a member: `{ stdout, stderr, code }` (a non-zero code is no error). */
  async run(target: string, command: string): Promise<CommandResult> {
    const { runCommand } = await import('./ssh.js'); // ssh2 is loaded when first used
    return runCommand(await this.target(target), command);
  }

  async copyTo(target: string, localPath: string, remotePath: string): Promise<void> {
    const { uploadFile } = await import('./ssh.js');
    await uploadFile(await this.target(target), localPath, remotePath);
  }

  async copyFrom(target: string, remotePath: string, localPath: string): Promise<void> {
    const { downloadFile } = await import('./ssh.js');
    await downloadFile(await this.target(target), remotePath, localPath);
  }

  /**
   * Powers a member (`role`, `role.N`, `role[N]`) off, on, or cycles it (a reboot that keeps its
   * disk), then waits until it is ready again (`off`: until it is off). Its stages start over and
   * SSH is probed again; the host key is pinned anew. Throws MemberFailedError if it fails,
   * MemberBusyError while another action runs on it, PowerNotSupportedError for a static host.
   */
  async power(target: string, action: PowerAction, options: { wait?: boolean; timeout?: number } = {}): Promise<ReservationView> {
    const member = this.member(target);
    this.adopt(await this.http.post<ReservationView>(`${this.path()}/power`, { ...member, action }));
    return options.wait === false ? this.current : this.settle(member, options.timeout);
  }

  /**
   * Boots another image on a member's machine (a re-deploy), keeping the lease and the other
   * members; `cmdline` replaces the boot bundle's kernel command line. Waits until the member is
   * ready again; a bad image throws MemberFailedError and leaves the other members as they are.
   */
  async boot(target: string, image: string, options: { cmdline?: string; wait?: boolean; timeout?: number } = {}): Promise<ReservationView> {
    const member = this.member(target);
    const body = { ...member, image, ...(options.cmdline !== undefined ? { cmdline: options.cmdline } : {}) };
    this.adopt(await this.http.post<ReservationView>(`${this.path()}/boot`, body));
    return options.wait === false ? this.current : this.settle(member, options.timeout);
  }

  private member(target: string): { role: string; index: number } {
    try {
      return parseMemberTarget(target);
    } catch (error) {
      if (error instanceof MemberSyntaxError) throw new PaddockError(error.message, 'invalid_target');
      throw error;
    }
  }

  /** Waits until no member is busy (long-polling `?wait=ready`), then judges the member acted on. */
  private async settle(member: { role: string; index: number }, timeout = 3600): Promise<ReservationView> {
    const deadline = Date.now() + timeout * 1000;
    this.cachedCredentials = undefined; // its host key, address or relay may change
    for (;;) {
      const allocation = this.current.allocations.find((each) => each.role === member.role && each.index === member.index);
      if (isOver(this.current.state) || this.current.state === 'releasing') throw new ReservationFailedError(this.current);
      if (allocation?.state === 'failed') throw new MemberFailedError(this.current, member);
      if (allocation && allocation.state !== 'provisioning') return this.current;
      const left = Math.ceil((deadline - Date.now()) / 1000);
      if (left <= 0)
        throw new TimeoutError(`${member.role}[${member.index}] of reservation ${this.id} was not ready in time`, 'timeout', undefined, { id: this.id });
      const wait = Math.min(left, 60);
      this.adopt(await this.http.get<ReservationView>(this.path(), { wait: 'ready', timeout: wait }, wait));
    }
  }

  /**
   * Extends the lease by its duration, up to the hard cap; LeaseExpiredError once it has ended.
   * Sent again after a broken connection: a renewal counts from its arrival, so two are one.
   */
  async renew(): Promise<ReservationView> {
    return this.adopt(await this.http.post<ReservationView>(`${this.path()}/renew`, {}, { replayable: true }));
  }

  /** Gives the machines back (a queued request is cancelled). Safe to call more than once. */
  async release(): Promise<ReservationView> {
    this.stopRenewing();
    const view = this.adopt(await this.http.delete<ReservationView>(this.path()));
    this.released = true;
    return view;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    if (!this.released) await this.release();
  }

  /** Keeps the newer of two views, so a slow renewal answer never hides a fresher state. */
  private adopt(view: ReservationView): ReservationView {
    if (Date.parse(view.updatedAt) >= Date.parse(this.current.updatedAt) || Number.isNaN(Date.parse(this.current.updatedAt))) this.current = view;
    return view;
  }

  /** About a third of the lease, so two heartbeats may fail before it runs out. */
  private renewalInterval(): number {
    return Math.min(Math.max((this.current.leaseSeconds * 1000) / 3, 1000), 3_600_000);
  }

  private scheduleRenewal(delay: number): void {
    if (!this.renewing) return;
    this.renewal = setTimeout(() => void this.heartbeat(), delay);
    this.renewal.unref(); // never keeps the process alive: a script that ends lets its lease lapse
  }

  private async heartbeat(): Promise<void> {
    try {
      const view = await this.renew();
      if (isOver(view.state)) return this.stopRenewing();
      this.scheduleRenewal(this.renewalInterval());
    } catch (error) {
      const final = [LeaseExpiredError, NotFoundError, UnauthorizedError, ForbiddenError].some((Class) => error instanceof Class);
      if (final) return this.stopRenewing();
      this.scheduleRenewal(Math.min(this.renewalInterval(), 5000)); // a blip: try again soon
    }
  }

  private stopRenewing(): void {
    this.renewing = false;
    clearTimeout(this.renewal);
  }

  private path(): string {
    return reservationPath(this.id);
  }
}

/** Where each member is logged in to, as a view shows it: what the cached credentials depend on. */
const logins = (view: ReservationView) =>
  JSON.stringify(view.allocations.map((allocation) => [allocation.state, allocation.host, allocation.port, allocation.hostKey]));

const reservationPath = (id: string) => `v1/reservations/${encodeURIComponent(id)}`;

/**
 * Progress for `ready()`: follows the server-sent event stream, falling back to polling the event
 * list every few seconds when the stream is unavailable. Each event is reported once, in order.
 */
class ProgressFeed {
  private readonly seen = new Set<number>();
  private readonly stopped = new AbortController();
  private lastView = '';
  private failure: unknown;

  constructor(
    private readonly http: Http,
    private readonly path: string,
    private readonly report: (update: Progress) => void,
  ) {
    void this.follow();
  }

  /** Reports every event not reported yet, then the view if it changed; rethrows a callback's error. */
  async catchUp(view: ReservationView): Promise<void> {
    const { items: events } = await this.http.getAll<EventView>(`${this.path}/events`);
    for (const event of events) this.deliver(event);
    const summary = `${view.state} ${view.queuePosition ?? ''}`;
    if (summary !== this.lastView) {
      this.lastView = summary;
      this.call(view);
    }
    if (this.failure) throw this.failure;
  }

  stop(): void {
    this.stopped.abort();
  }

  private async follow(): Promise<void> {
    const signal = this.stopped.signal;
    try {
      for await (const message of this.http.serverSentEvents(`${this.path}/events`, signal)) {
        this.deliver(JSON.parse(message.data) as EventView);
      }
    } catch {
      // No stream (an old server, a proxy): poll instead.
    }
    while (!signal.aborted) {
      await sleep(2000, undefined, { ref: false });
      if (signal.aborted) break;
      try {
        for (const event of (await this.http.getAll<EventView>(`${this.path}/events`)).items) this.deliver(event);
      } catch {
        // the long-poll in ready() reports lasting failures
      }
    }
  }

  private deliver(event: EventView): void {
    if (this.seen.has(event.id) || this.stopped.signal.aborted) return;
    this.seen.add(event.id);
    this.call(event);
  }

  private call(update: Progress): void {
    try {
      this.report(update);
    } catch (error) {
      this.failure ??= error;
    }
  }
}
