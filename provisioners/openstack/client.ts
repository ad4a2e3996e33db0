// A small OpenStack client on got: Keystone v3 (password or application credential, project
// scope), the service catalog (type, interface, region), tokens renewed before they expire and once
// more on a 401; Nova (servers with microversions and paging, flavors, keypairs), Glance v2 (list,
// create, upload). Only what Paddock's openstack kind uses. Passwords, secrets and tokens never
// appear in errors.
//
// JSON calls have a whole-request timeout; a streamed body (a Glance upload) has none, only an idle
// one: it fails when no byte moves for that long. Idempotent calls (GET, HEAD, PUT, DELETE without a
// stream body) are retried on 429 (after Retry-After, when it is within bounds), 5xx and dropped
// connections, with exponential backoff and jitter; POST never is. A CA bundle (`cacert`) verifies
// every request to the cloud.
import type { Readable } from 'node:stream';
import got, { HTTPError, RequestError, TimeoutError, type Got, type Method, type RetryObject } from 'got';

export type Credentials =
  | { kind: 'password'; username: string; password: string; userDomain: string; project: string; projectDomain: string }
  | { kind: 'application'; id: string; secret: string };

export interface CloudOptions {
  authUrl: string;
  credentials: Credentials;
  region?: string;
  interface?: 'public' | 'internal' | 'admin';
  /** Nova microversion sent on every compute call. */
  computeVersion?: string;
  /** PEM CA certificates (the contents of a `cacert` file) that verify the cloud's TLS endpoints. */
  ca?: string;
  /** Whole-request limit of a JSON call (default 30 s). */
  timeoutMs?: number;
  /** A streamed body (upload) fails when no byte moves for this long (default 60 s); it has no whole-request limit. */
  idleTimeoutMs?: number;
  /** Retries of an idempotent call (default 4), the first backoff (default 1 s, doubling) and the longest Retry-After waited for (default 60 s). */
  retries?: number;
  retryDelayMs?: number;
  maxRetryAfterMs?: number;
}

/** A failed call: `kind` says what the caller can do about it. */
export class OpenStackError extends Error {
  constructor(
    message: string,
    readonly kind: 'unreachable' | 'unauthorized' | 'not_found' | 'quota' | 'conflict' | 'bad_request' | 'server',
    readonly status?: number,
  ) {
    super(message);
    this.name = 'OpenStackError';
  }
}

interface CatalogEntry {
  type: string;
  endpoints: { interface: string; region?: string; region_id?: string; url: string }[];
}

interface Token {
  value: string;
  expiresAt: number;
  catalog: CatalogEntry[];
  projectId?: string;
}

export interface Server {
  id: string;
  name: string;
  status: string;
  addresses: Record<string, { addr: string; version: number }[]>;
  metadata?: Record<string, string>;
  tags?: string[];
  fault?: { message: string; code: number };
  flavor?: { original_name?: string; id?: string };
  /** The image booted (empty when the server boots from a volume). */
  image?: { id?: string } | '';
  /** What Nova is doing to it (`rebooting_hard`, `powering-off`, …); null when nothing. */
  'OS-EXT-STS:task_state'?: string | null;
}

export interface Flavor {
  id: string;
  name: string;
  vcpus: number;
  ram: number;
  disk: number;
}

export interface GlanceImage {
  id: string;
  name: string;
  status: string;
  disk_format?: string;
  container_format?: string;
  size?: number;
  visibility?: string;
  os_hash_value?: string;
  [property: string]: unknown;
}

export class OpenStackClient {
  private readonly http: Got;
  private token?: Token;
  private authenticating?: Promise<Token>;

  constructor(private readonly options: CloudOptions) {
    const base = options.retryDelayMs ?? 1000;
    this.http = got.extend({
      retry: {
        limit: options.retries ?? 4,
        methods: ['GET', 'HEAD', 'PUT', 'DELETE'],
        statusCodes: [429, 500, 502, 503, 504],
        errorCodes: ['ECONNRESET', 'EPIPE', 'ECONNREFUSED', 'ETIMEDOUT', 'EAI_AGAIN'],
        maxRetryAfter: options.maxRetryAfterMs ?? 60_000,
        enforceRetryRules: true,
        calculateDelay: ({ attemptCount, retryAfter, computedValue }: RetryObject) =>
          // Retry-After as given; otherwise base·2ⁿ⁻¹ with "equal jitter" (half fixed, half random).
          retryAfter ? computedValue : Math.min(base * 2 ** (attemptCount - 1), 30_000) * (0.5 + Math.random() / 2),
      },
      ...(options.ca ? { https: { certificateAuthority: options.ca } } : {}),
      responseType: 'json',
      throwHttpErrors: true,
    });
  }

  // ---- Keystone -----------------------------------------------------------------------------

  /** A valid token: cached, renewed five minutes before it expires. */
  async authenticate(force = false): Promise<Token> {
    if (!force && this.token && this.token.expiresAt - Date.now() > 5 * 60_000) return this.token;
    this.authenticating ??= this.issueToken().finally(() => (this.authenticating = undefined));
    this.token = await this.authenticating;
    return this.token;
  }

  private async issueToken(): Promise<Token> {
    const credentials = this.options.credentials;
    const identity =
      credentials.kind === 'password'
        ? {
            methods: ['password'],
            password: { user: { name: credentials.username, domain: { name: credentials.userDomain }, password: credentials.password } },
          }
        : { methods: ['application_credential'], application_credential: { id: credentials.id, secret: credentials.secret } };
    const body = {
      auth: {
        identity,
        ...(credentials.kind === 'password' ? { scope: { project: { name: credentials.project, domain: { name: credentials.projectDomain } } } } : {}),
      },
    };
    const url = `${this.options.authUrl.replace(/\/+$/, '').replace(/\/v3$/, '')}/v3/auth/tokens`;
    try {
      const response = await this.http.post(url, { json: body });
      const token = (response.body as unknown as { token: { expires_at: string; catalog?: CatalogEntry[]; project?: { id: string } } }).token;
      const value = response.headers['x-subject-token'];
      if (typeof value !== 'string') throw new OpenStackError('Keystone answered without a token', 'server');
      return { value, expiresAt: Date.parse(token.expires_at), catalog: token.catalog ?? [], ...(token.project ? { projectId: token.project.id } : {}) };
    } catch (error) {
      throw translate(error, 'Keystone', 'authentication');
    }
  }

  /** The endpoint of a service type for the configured interface and region. */
  async endpoint(type: string): Promise<string> {
    const token = await this.authenticate();
    const wanted = this.options.interface ?? 'public';
    const region = this.options.region;
    const service = token.catalog.find((entry) => entry.type === type);
    const endpoint = service?.endpoints.find((each) => each.interface === wanted && (!region || each.region === region || each.region_id === region));
    if (!endpoint) {
      throw new OpenStackError(`the service catalog has no ${wanted} ${type} endpoint${region ? ` in region ${region}` : ''}`, 'not_found');
    }
    // Glance's paths carry their version (/v2/images): its base is the URL without one.
    const url = endpoint.url.replace(/\/+$/, '');
    return type === 'image' ? url.replace(/\/v2(\.\d+)?$/, '') : url;
  }

  /** One call to a service; a 401 renews the token and retries once. */
  async call<T>(
    service: string,
    method: Method,
    path: string,
    options: { json?: unknown; body?: Readable; headers?: Record<string, string>; searchParams?: Record<string, string> } = {},
  ): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      const token = await this.authenticate(attempt > 1);
      const base = await this.endpoint(service);
      const headers: Record<string, string> = { 'x-auth-token': token.value, ...options.headers };
      if (service === 'compute' && this.options.computeVersion) {
        headers['openstack-api-version'] = `compute ${this.options.computeVersion}`;
        headers['x-openstack-nova-api-version'] = this.options.computeVersion;
      }
      try {
        const response = await this.http(path.startsWith('http') ? path : `${base}${path}`, {
          method,
          headers,
          ...(options.json !== undefined ? { json: options.json } : {}),
          // A stream is read once: never replayed, and limited by idleness rather than by its length.
          ...(options.body
            ? { body: options.body, retry: { limit: 0 }, timeout: { socket: this.options.idleTimeoutMs ?? 60_000, connect: 30_000 } }
            : { timeout: { request: this.options.timeoutMs ?? 30_000 } }),
          ...(options.searchParams ? { searchParams: options.searchParams } : {}),
        });
        return response.body as T;
      } catch (error) {
        if (error instanceof HTTPError && error.response.statusCode === 401 && attempt === 1 && !options.body) continue;
        throw translate(error, service, `${method} ${path.split('?')[0]}`);
      }
    }
  }

  /** Every item of a paged list (`next` links: Nova's `*_links`, Glance's `next`). */
  private async all<T>(service: string, path: string, key: string): Promise<T[]> {
    const items: T[] = [];
    let next: string | undefined = path;
    while (next) {
      const page: Record<string, unknown> = await this.call<Record<string, unknown>>(service, 'GET', next);
      items.push(...((page[key] as T[] | undefined) ?? []));
      const links = page[`${key}_links`] as { rel: string; href: string }[] | undefined;
      const nova = links?.find((link) => link.rel === 'next')?.href;
      const glance = typeof page.next === 'string' ? page.next : undefined;
      next = nova ?? (glance === undefined || glance.startsWith('http') ? glance : `${await this.endpoint(service)}${glance}`);
    }
    return items;
  }

  // ---- Nova ---------------------------------------------------------------------------------

  flavors(): Promise<Flavor[]> {
    return this.all<Flavor>('compute', '/flavors/detail', 'flavors');
  }

  async createServer(body: Record<string, unknown>): Promise<Server> {
    const { server } = await this.call<{ server: Server }>('compute', 'POST', '/servers', { json: { server: body } });
    return server;
  }

  async server(id: string): Promise<Server | undefined> {
    try {
      return (await this.call<{ server: Server }>('compute', 'GET', `/servers/${encodeURIComponent(id)}`)).server;
    } catch (error) {
      if (error instanceof OpenStackError && error.kind === 'not_found') return undefined;
      throw error;
    }
  }

  /** Servers of the project, all pages; `query` filters (e.g. `tags`, `name`). */
  servers(query: Record<string, string> = {}): Promise<Server[]> {
    const search = new URLSearchParams({ limit: '100', ...query });
    return this.all<Server>('compute', `/servers/detail?${search.toString()}`, 'servers');
  }

  /** A server action (`{ reboot: { type: 'HARD' } }`, `{ 'os-stop': null }`, `{ 'os-start': null }`). */
  async serverAction(id: string, action: Record<string, unknown>): Promise<void> {
    await this.call('compute', 'POST', `/servers/${encodeURIComponent(id)}/action`, { json: action });
  }

  async deleteServer(id: string): Promise<void> {
    try {
      await this.call('compute', 'DELETE', `/servers/${encodeURIComponent(id)}`);
    } catch (error) {
      if (!(error instanceof OpenStackError && error.kind === 'not_found')) throw error;
    }
  }

  async renameServer(id: string, name: string): Promise<void> {
    await this.call('compute', 'PUT', `/servers/${encodeURIComponent(id)}`, { json: { server: { name } } });
  }

  /** Sets these metadata keys of a server (the others stay). */
  async setServerMetadata(id: string, metadata: Record<string, string>): Promise<void> {
    await this.call('compute', 'POST', `/servers/${encodeURIComponent(id)}/metadata`, { json: { metadata } });
  }

  /** Adds a tag to a server, or removes it (Nova 2.26 or later). */
  async tagServer(id: string, tag: string, present: boolean): Promise<void> {
    await this.call('compute', present ? 'PUT' : 'DELETE', `/servers/${encodeURIComponent(id)}/tags/${encodeURIComponent(tag)}`).catch((error: unknown) => {
      if (present || !(error instanceof OpenStackError && error.kind === 'not_found')) throw error;
    });
  }

  async createKeypair(name: string, publicKey: string): Promise<void> {
    await this.call('compute', 'POST', '/os-keypairs', { json: { keypair: { name, public_key: publicKey } } });
  }

  /** The names of the user's keypairs, all pages (Nova 2.35 or later pages them with `limit` and `marker`). */
  async keypairs(pageSize = 100): Promise<string[]> {
    const [major, minor] = (this.options.computeVersion ?? '2.1').split('.').map(Number);
    const paged = major > 2 || (major === 2 && minor >= 35);
    const keypairs = await this.all<{ keypair: { name: string } }>('compute', paged ? `/os-keypairs?limit=${pageSize}` : '/os-keypairs', 'keypairs');
    return keypairs.map((entry) => entry.keypair.name);
  }

  async deleteKeypair(name: string): Promise<void> {
    try {
      await this.call('compute', 'DELETE', `/os-keypairs/${encodeURIComponent(name)}`);
    } catch (error) {
      if (!(error instanceof OpenStackError && error.kind === 'not_found')) throw error;
    }
  }

  // ---- Neutron ------------------------------------------------------------------------------

  /** The id of a network given by id or name; undefined when none has it. */
  async networkId(idOrName: string): Promise<string | undefined> {
    const base = (await this.endpoint('network')).replace(/\/v2\.0$/, '');
    const search = (query: Record<string, string>) =>
      this.call<{ networks: { id: string; name: string }[] }>('network', 'GET', `${base}/v2.0/networks?${new URLSearchParams(query).toString()}`);
    if (/^[0-9a-f]{8}-([0-9a-f]{4}-){3}[0-9a-f]{12}$/i.test(idOrName)) {
      const byId = await search({ id: idOrName });
      if (byId.networks.length > 0) return byId.networks[0].id;
    }
    const byName = await search({ name: idOrName });
    if (byName.networks.length > 1) throw new OpenStackError(`more than one network is named ${idOrName}: give its id`, 'conflict');
    return byName.networks[0]?.id;
  }

  // ---- Glance -------------------------------------------------------------------------------

  images(query: Record<string, string> = {}): Promise<GlanceImage[]> {
    const search = new URLSearchParams({ limit: '100', ...query });
    return this.all<GlanceImage>('image', `/v2/images?${search.toString()}`, 'images');
  }

  createImage(properties: Record<string, unknown>): Promise<GlanceImage> {
    return this.call<GlanceImage>('image', 'POST', '/v2/images', { json: properties });
  }

  async uploadImage(id: string, data: Readable): Promise<void> {
    await this.call('image', 'PUT', `/v2/images/${encodeURIComponent(id)}/file`, { body: data, headers: { 'content-type': 'application/octet-stream' } });
  }

  async deleteImage(id: string): Promise<void> {
    try {
      await this.call('image', 'DELETE', `/v2/images/${encodeURIComponent(id)}`);
    } catch (error) {
      if (!(error instanceof OpenStackError && error.kind === 'not_found')) throw error;
    }
  }

  async image(id: string): Promise<GlanceImage | undefined> {
    try {
      return await this.call<GlanceImage>('image', 'GET', `/v2/images/${encodeURIComponent(id)}`);
    } catch (error) {
      if (error instanceof OpenStackError && error.kind === 'not_found') return undefined;
      throw error;
    }
  }
}

/** An OpenStackError from a got failure: the service's own message, never a token or password. */
function translate(error: unknown, service: string, what: string): OpenStackError {
  if (error instanceof OpenStackError) return error;
  if (error instanceof HTTPError) {
    const status = error.response.statusCode;
    const message = serviceMessage(error.response.body) ?? error.response.statusMessage ?? '';
    const kind: OpenStackError['kind'] =
      status === 401
        ? 'unauthorized'
        : status === 404
          ? 'not_found'
          : status === 409
            ? 'conflict'
            : /quota/i.test(message) || status === 413
              ? 'quota'
              : status === 400
                ? 'bad_request'
                : status === 403
                  ? 'unauthorized'
                  : 'server';
    return new OpenStackError(`${service} ${what}: HTTP ${status}${message ? `: ${message}` : ''}`, kind, status);
  }
  if (error instanceof TimeoutError) {
    const limit = (error.options.timeout as Record<string, number | undefined>)[error.event];
    const seconds = limit === undefined ? '' : ` ${limit / 1000} s`;
    return error.event === 'socket'
      ? new OpenStackError(`${service} ${what}: stalled: no data moved for${seconds} (idle timeout)`, 'unreachable')
      : new OpenStackError(`${service} ${what}: no answer within${seconds} (${error.event} timeout)`, 'unreachable');
  }
  if (error instanceof RequestError) return new OpenStackError(`${service} is unreachable (${error.code ?? error.message})`, 'unreachable');
  return new OpenStackError(`${service} ${what}: ${(error as Error).message}`, 'server');
}

/** `{"itemNotFound": {"message": …}}`, `{"error": {"message": …}}`, `{"message": …}`, or Glance's text. */
function serviceMessage(body: unknown): string | undefined {
  if (typeof body === 'string')
    return (
      body
        .replace(/<[^>]+>/g, ' ')
        .replace(/\s+/g, ' ')
        .trim()
        .slice(0, 300) || undefined
    );
  if (!body || typeof body !== 'object') return undefined;
  const record = body as Record<string, unknown>;
  if (typeof record.message === 'string') return record.message;
  for (const value of Object.values(record)) {
    if (value && typeof value === 'object' && typeof (value as { message?: unknown }).message === 'string') return (value as { message: string }).message;
  }
  return undefined;
}
