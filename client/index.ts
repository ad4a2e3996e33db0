// The client library for job scripts: reserve machines, wait until they are ready (with progress),
// run commands and copy files over SSH with the pinned host key, and release, by hand or on scope
// exit (`await using`). While a reservation is held, its lease is renewed in the background.
import type {
  CredentialsView,
  EventView,
  ExplainView,
  MachineView,
  ReservationExplainView,
  ReservationRequest,
  ReservationState,
  ReservationView,
  Role,
  TokenView,
} from '../api/contract.js';
import { PaddockError, ReservationFailedError, TimeoutError } from './errors.js';
import { Http } from './http.js';
import { downloadFile, runCommand, uploadFile, type CommandResult, type SshTarget } from './ssh.js';

export * from './errors.js';
export type { CommandResult } from './ssh.js';
export type * from '../api/contract.js';

const ended: ReservationState[] = ['released', 'failed', 'expired', 'cancelled'];

export interface PaddockOptions {
  /** Defaults to $PADDOCK_URL. */
  url?: string;
  /** Defaults to $PADDOCK_TOKEN. */
  token?: string;
}

export class Paddock {
  readonly http: Http;

  constructor(options: PaddockOptions = {}) {
    const url = options.url ?? process.env.PADDOCK_URL;
    const token = options.token ?? process.env.PADDOCK_TOKEN;
    if (!url) throw new PaddockError('no Paddock URL: set PADDOCK_URL or pass { url }', 'configuration');
    if (!token) throw new PaddockError('no token: set PADDOCK_TOKEN or pass { token }', 'configuration');
    this.http = new Http({ url: url.replace(/\/+$/, ''), token });
  }

  /** Requests machines; the answer comes at once (queued or allocated): call `ready()` to wait. */
  async reserve(request: ReservationRequest, options: { renew?: boolean } = {}): Promise<Reservation> {
    const view = await this.http.post<ReservationView>('v1/reservations', request);
    return new Reservation(this, view, options.renew ?? true);
  }

  async reservation(id: string, options: { renew?: boolean } = {}): Promise<Reservation> {
    const view = await this.http.get<ReservationView>(`v1/reservations/${encodeURIComponent(id)}`);
    return new Reservation(this, view, options.renew ?? false);
  }

  list(options: { all?: boolean; ended?: boolean } = {}): Promise<ReservationView[]> {
    return this.http.get('v1/reservations', { ...(options.all ? { all: 1 } : {}), ...(options.ended ? { ended: 1 } : {}) });
  }

  machines(): Promise<MachineView[]> {
    return this.http.get('v1/machines');
  }

  maintenance(name: string, reason?: string): Promise<MachineView> {
    return this.http.post(`v1/machines/${encodeURIComponent(name)}/maintenance`, reason === undefined ? {} : { reason });
  }

  activate(name: string): Promise<MachineView> {
    return this.http.post(`v1/machines/${encodeURIComponent(name)}/activate`);
  }

  explain(spec: string): Promise<ExplainView> {
    return this.http.post('v1/explain', { spec });
  }

  explainReservation(id: string): Promise<ReservationExplainView> {
    return this.http.get(`v1/reservations/${encodeURIComponent(id)}/explain`);
  }

  createToken(name: string, role: Role = 'user'): Promise<TokenView & { token: string }> {
    return this.http.post('v1/tokens', { name, role });
  }

  whoami(): Promise<{ name: string; role: Role }> {
    return this.http.get('v1/whoami');
  }
}

export class Reservation {
  private renewTimer?: NodeJS.Timeout;
  private credentialsCache?: CredentialsView;
  private released = false;

  constructor(
    private readonly paddock: Paddock,
    public view: ReservationView,
    renew: boolean,
  ) {
    if (renew && !ended.includes(view.state)) this.startRenewing();
  }

  get id(): string {
    return this.view.id;
  }

  get state(): ReservationState {
    return this.view.state;
  }

  async refresh(): Promise<ReservationView> {
    this.view = await this.paddock.http.get<ReservationView>(this.path());
    return this.view;
  }

  /**
   * Waits until every machine is ready. Progress (state changes, stages) goes to `onProgress`.
   * Throws ReservationFailedError if the reservation ends instead, TimeoutError after `timeout` s.
   */
  async ready(options: { timeout?: number; onProgress?: (event: EventView) => void } = {}): Promise<this> {
    const deadline = Date.now() + (options.timeout ?? 3600) * 1000;
    let seen = 0;
    const report = async () => {
      if (!options.onProgress) return;
      const events = await this.paddock.http.get<EventView[]>(`${this.path()}/events`);
      for (const event of events) if (event.id > seen) options.onProgress(event);
      seen = events.reduce((max, event) => Math.max(max, event.id), seen);
    };
    for (;;) {
      await report();
      if (this.view.state === 'ready') return this;
      if (ended.includes(this.view.state) || this.view.state === 'releasing') {
        throw new ReservationFailedError(`reservation ${this.id} is ${this.view.state}: ${this.view.reason ?? 'no reason given'}`, 'reservation_failed', undefined, this.view);
      }
      const left = Math.ceil((deadline - Date.now()) / 1000);
      if (left <= 0) throw new TimeoutError(`reservation ${this.id} was not ready in time (it is ${this.view.state})`, 'timeout');
      // Long-poll in short slices so progress events arrive while we wait.
      const slice = options.onProgress ? Math.min(left, 2) : Math.min(left, 60);
      this.view = await this.paddock.http.get<ReservationView>(this.path(), { wait: this.view.state === 'queued' && options.onProgress ? 'granted' : 'ready', timeout: slice });
    }
  }

  events(): Promise<EventView[]> {
    return this.paddock.http.get(`${this.path()}/events`);
  }

  async credentials(): Promise<CredentialsView> {
    this.credentialsCache ??= await this.paddock.http.get<CredentialsView>(`${this.path()}/credentials`);
    return this.credentialsCache;
  }

  /** A member by `role`, `role.N` or `role[N]` (the first machine of a role when no index). */
  async target(target: string): Promise<SshTarget> {
    const match = /^([A-Za-z][A-Za-z0-9_-]*)(?:\.(\d+)|\[(\d+)\])?$/.exec(target);
    if (!match) throw new PaddockError(`not a member: ${target} (use role, role.N or role[N])`, 'invalid_target');
    const [, role, dotted, bracketed] = match;
    const index = Number(dotted ?? bracketed ?? 0);
    const credentials = await this.credentials();
    const machine = credentials.machines.find((candidate) => candidate.role === role && candidate.index === index);
    if (!machine) throw new PaddockError(`reservation ${this.id} has no ready member ${role}[${index}]`, 'invalid_target');
    return { host: machine.host, port: machine.port, user: machine.user, hostKey: machine.hostKey, privateKey: credentials.privateKey };
  }

  async run(target: string, command: string): Promise<CommandResult> {
    return runCommand(await this.target(target), command);
  }

  async copyTo(target: string, localPath: string, remotePath: string): Promise<void> {
    await uploadFile(await this.target(target), localPath, remotePath);
  }

  async copyFrom(target: string, remotePath: string, localPath: string): Promise<void> {
    await downloadFile(await this.target(target), remotePath, localPath);
  }

  async renew(): Promise<ReservationView> {
    this.view = await this.paddock.http.post<ReservationView>(`${this.path()}/renew`);
    return this.view;
  }

  /** Gives the machines back. Safe to call more than once. */
  async release(): Promise<ReservationView> {
    this.stopRenewing();
    this.released = true;
    this.view = await this.paddock.http.delete<ReservationView>(this.path());
    return this.view;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    if (!this.released) await this.release();
  }

  private startRenewing(): void {
    const every = Math.max(1, this.view.leaseSeconds / 3) * 1000;
    this.renewTimer = setInterval(() => {
      this.renew().catch((error: unknown) => {
        if (error instanceof PaddockError && (error.code === 'lease_expired' || error.code === 'not_found')) this.stopRenewing();
      });
    }, every);
    this.renewTimer.unref();
  }

  private stopRenewing(): void {
    clearInterval(this.renewTimer);
  }

  private path(): string {
    return `v1/reservations/${encodeURIComponent(this.id)}`;
  }
}
