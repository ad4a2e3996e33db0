// The HTTP side of the client: got bound to the server and the token, JSON in and out, and every
// failure turned into a typed error: an API error answer into its class (errors.ts), anything on
// the way there into PaddockConnectionError. The token travels in the Authorization header only;
// it is never put into a message, and got's own error objects (which hold the request options,
// headers included) are not kept as causes. got is loaded by the first request, so a process that
// only imports the library (the CLI on its way to `paddock serve`) does without it.
//
// The URL may be a list (`http://a:7300,http://b:7300`): several API servers, one of them the
// leader. Every request starts at the server believed to lead, follows a follower's redirect itself
// (with the token), and moves on to the next server while one does not answer (protocol/failover.ts).
// What may be sent twice is said per request: reads and deletes always, a POST only when it is
// idempotent; an upload is sent to the leader found first, and only once.
import { createHash } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import type WebSocket from 'ws';
import type * as GotModule from 'got';
import type { Got, Request as GotStream, Response } from 'got';
import { FailoverError, Servers, shownUrl, type Answer } from '../protocol/failover.js';
import { errorFromBody, PaddockConnectionError, PaddockError } from './errors.js';

export interface HttpOptions {
  /** The server, e.g. `http://127.0.0.1:7300`, or several, comma-separated: `http://a:7300,http://b:7300`. */
  url: string;
  token: string;
  /** How long a request keeps trying the servers of a list before PaddockConnectionError (default 60 s). */
  failoverBudgetMs?: number;
}

/** Words from a server that may not be Paddock, fit for a terminal: no control characters, 200 at most. */
const printable = (text: string) => text.slice(0, 200).replace(/\p{Cc}/gu, '?');

/** What one API server said it is (Paddock.servers()). */
export interface ServerHealth {
  /** As in the list, without user:password. */
  url: string;
  /** failing: it answers 503 (its database refuses writes, or no server leads yet); not_paddock: something else answered. */
  role: 'leader' | 'follower' | 'failing' | 'unreachable' | 'not_paddock';
  version?: string;
  /** sqlite or postgres. */
  database?: string;
  /** The leader a follower names (it may be known to it by another address than the list's). */
  leader?: string;
  /** Why it is not a leader or a follower. */
  reason?: string;
}

/** One server-sent event: `event:` name, `id:`, and the `data:` lines joined. */
export interface ServerSentEvent {
  event: string;
  id?: string;
  data: string;
}

/** Ordinary requests give up after this; long-polls add the time they asked the server to wait. */
const requestTimeoutMs = 60_000;

/** A broken follow is taken up again this many times in a row, up to 5 s apart: about 5 minutes. */
const followAttempts = 64;

export class Http {
  /** got bound to the server and the token, made by the first request. */
  private bound?: Promise<Got>;
  /** got's module once loaded, for its error classes. */
  private got?: typeof GotModule;
  /** The server's address as it may appear in messages (no user:password part). */
  readonly where: string;

  /** The servers and which one leads. */
  readonly servers: Servers;

  constructor(private readonly options: HttpOptions) {
    try {
      this.servers = new Servers(options.url, options.failoverBudgetMs);
    } catch (error) {
      if (error instanceof FailoverError) throw new PaddockError(error.message, 'configuration');
      throw error;
    }
    this.where = this.servers.shown;
  }

  private client(): Promise<Got> {
    return (this.bound ??= import('got').then((got) => {
      this.got = got;
      return got.default.extend({
        headers: { authorization: `Bearer ${this.options.token}`, 'user-agent': 'paddock-client' },
        // Retries and redirects are this class's (servers.send): got would follow a follower's 307
        // without the token (another origin) and retry on the same server only.
        retry: { limit: 0 },
        followRedirect: false,
        throwHttpErrors: false,
        timeout: { connect: 10_000, request: requestTimeoutMs },
      });
    }));
  }

  /** GET; `waitSeconds` is how long the server was asked to hold the answer (long-poll). */
  get<T>(path: string, searchParams?: Record<string, string | number>, waitSeconds = 0): Promise<T> {
    const timeout = { connect: 10_000, request: requestTimeoutMs + waitSeconds * 1000 };
    return this.send<T>('GET', path, { searchParams, timeout }, true);
  }

  /** GET, with the answer's headers. */
  async getWithHeaders<T>(
    path: string,
    searchParams?: Record<string, string | number>,
  ): Promise<{ body: T; headers: Record<string, string | string[] | undefined> }> {
    const response = await this.request('GET', path, { searchParams }, true);
    return { body: this.judge<T>(response), headers: response.headers };
  }

  /**
   * Every item of a paginated list: pages of up to 1,000, following the server's
   * `Paddock-Next-Cursor` until the last page (a server that does not paginate answers in one).
   * The headers are the first page's.
   */
  async getAll<T>(
    path: string,
    searchParams: Record<string, string | number> = {},
  ): Promise<{ items: T[]; headers: Record<string, string | string[] | undefined> }> {
    const items: T[] = [];
    let first: Record<string, string | string[] | undefined> | undefined;
    let cursor: string | undefined;
    for (;;) {
      const { body, headers } = await this.getWithHeaders<T[]>(path, { limit: 1000, ...searchParams, ...(cursor ? { cursor } : {}) });
      first ??= headers;
      items.push(...body);
      const next = headers['paddock-next-cursor'];
      if (typeof next !== 'string' || next === '') return { items, headers: first };
      cursor = next;
    }
  }

  /**
   * POST. `replayable`: the request may be sent again when the connection broke after it went out
   * (the server may have acted on it), because doing it twice does what doing it once does (a
   * reservation with an idempotencyKey, a read). A request that never reached a server is always
   * sent to the next one.
   */
  post<T>(path: string, json: unknown = {}, options: { replayable?: boolean } = {}): Promise<T> {
    return this.send<T>('POST', path, { json }, options.replayable ?? false);
  }

  delete<T>(path: string): Promise<T> {
    return this.send<T>('DELETE', path, {}, true);
  }

  /**
   * PUT of a stream in one pass: the bytes go out as they are read, their sha256 is computed on the
   * way and sent last, as the `Paddock-Sha256` HTTP trailer, and the server checks it before it
   * keeps anything. A proxy in front of the API may drop the trailer (nginx and Caddy do): the
   * sha256 sent is returned with the answer, for the caller to compare with what was stored.
   * (Node's http, not got: got cannot send trailers.)
   */
  async putWithDigest<T>(
    path: string,
    options: {
      body: Readable;
      size: number;
      headers: Record<string, string>;
      searchParams?: Record<string, string>;
      onProgress?: (sent: number, total: number) => void;
    },
  ): Promise<{ body: T; sha256: string }> {
    // A stream cannot be sent twice: it goes to the leader, found first; a break on the way is an error.
    let base: string;
    try {
      base = await this.leader();
    } catch (error) {
      options.body.destroy(); // the file is not read: let it go
      throw error;
    }
    const where = shownUrl(base);
    const url = new URL(`${base}/${path}`);
    url.username = '';
    url.password = '';
    for (const [key, value] of Object.entries(options.searchParams ?? {})) url.searchParams.set(key, value);
    let sha256 = '';
    return new Promise<{ body: T; sha256: string }>((resolve, reject) => {
      const request = (url.protocol === 'https:' ? httpsRequest : httpRequest)(url, {
        method: 'PUT',
        headers: {
          ...options.headers,
          authorization: `Bearer ${this.options.token}`,
          'user-agent': 'paddock-client',
          trailer: 'Paddock-Sha256',
          // A proxy that drops the trailer: the caller compares the answer's sha256 with the one returned here.
          'paddock-sha256-dropped': 'client-checks',
          'paddock-size': String(options.size),
        },
        timeout: requestTimeoutMs,
      });
      const fail = (error: unknown) => {
        options.body.destroy();
        reject(error);
      };
      request.on('timeout', () => request.destroy(new Error('timed out')));
      request.on('error', (error: NodeJS.ErrnoException) =>
        fail(
          new PaddockConnectionError(`cannot reach Paddock at ${where}: ${error.code ?? error.message}`, 'connection_failed', undefined, {
            reason: error.code ?? error.message,
          }),
        ),
      );
      request.on('response', (response) => {
        const chunks: Buffer[] = [];
        response.on('data', (chunk: Buffer) => chunks.push(chunk));
        response.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let body: unknown;
          try {
            body = JSON.parse(text);
          } catch {
            return fail(
              new PaddockError(`${where} answered with something that is not JSON; is it a Paddock server?`, 'invalid_response', response.statusCode),
            );
          }
          if ((response.statusCode ?? 500) >= 300) return fail(errorFromBody(response.statusCode ?? 500, text, { secrets: [this.options.token] }));
          resolve({ body: body as T, sha256 });
        });
      });
      const hash = createHash('sha256');
      let sent = 0;
      options.body.on('data', (chunk: Buffer) => {
        hash.update(chunk);
        sent += chunk.length;
        options.onProgress?.(sent, options.size);
        if (!request.write(chunk)) {
          options.body.pause();
          request.once('drain', () => options.body.resume());
        }
      });
      options.body.on('end', () => {
        sha256 = hash.digest('hex');
        request.addTrailers({ 'Paddock-Sha256': sha256 });
        request.end();
      });
      options.body.on('error', (error) => {
        request.destroy();
        reject(new PaddockError(`cannot read the upload: ${error.message}`, 'read_failed'));
      });
    });
  }

  /**
   * Opens a WebSocket to `path` with the token in the Authorization header (never in the URL).
   * `opened` resolves once it is open; a refusal before the upgrade rejects it with the API's typed
   * error. The socket comes at once, so listeners are in place for the first message (which may
   * arrive with the upgrade's answer). `ws` is loaded on the first use, so a script that never opens a
   * console does not pay for it at start.
   */
  async webSocket(path: string, searchParams: Record<string, string> = {}): Promise<{ socket: WebSocket; opened: Promise<void> }> {
    const { default: WebSocketClass } = await import('ws');
    // The upgrade is not redirected: it goes to the leader, found first.
    const base = await this.leader();
    const url = new URL(`${base}/${path}`);
    url.username = '';
    url.password = '';
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    for (const [key, value] of Object.entries(searchParams)) url.searchParams.set(key, value);
    const socket = new WebSocketClass(url, {
      headers: { authorization: `Bearer ${this.options.token}`, 'user-agent': 'paddock-client' },
      handshakeTimeout: 30_000,
    });
    const opened = new Promise<void>((resolve, reject) => {
      socket.once('open', () => resolve());
      socket.once('unexpected-response', (_request, response) => {
        const chunks: Buffer[] = [];
        response.on('data', (chunk: Buffer) => chunks.push(chunk));
        response.on('end', () => {
          socket.terminate();
          reject(errorFromBody(response.statusCode ?? 500, Buffer.concat(chunks).toString('utf8'), { secrets: [this.options.token] }));
        });
      });
      socket.once('error', (error: NodeJS.ErrnoException) =>
        reject(
          new PaddockConnectionError(`cannot reach Paddock at ${shownUrl(base)}: ${error.code ?? error.message}`, 'connection_failed', undefined, {
            reason: error.code ?? error.message,
          }),
        ),
      );
    });
    return { socket, opened };
  }

  /** GET of raw bytes into a file, with download progress; `range` asks for part of it. */
  async download(
    path: string,
    target: Writable,
    options: { range?: string; onProgress?: (received: number, total: number | undefined) => void } = {},
  ): Promise<void> {
    const { stream } = await this.openStream(path, { headers: options.range ? { range: options.range } : {} });
    if (options.onProgress) stream.on('downloadProgress', (progress) => options.onProgress!(progress.transferred, progress.total));
    try {
      await pipeline(stream, target);
    } catch (error) {
      throw this.translate(error);
    }
  }

  /**
   * A growing log (`follow=1`) into `target` until the server ends it. A connection that breaks (the
   * server restarting, the network gone for a while) is taken up again at the byte where it stopped
   * (`offset`), so the target gets every byte once. `pin` names a query parameter to fix from the
   * first answer's `Paddock-<Name>` header (which machine's console), so a resumed stream is the same
   * one. An error answer is not retried.
   */
  async follow(path: string, query: URLSearchParams, target: Writable, pin?: string): Promise<void> {
    let offset = 0;
    for (let failures = 0; ;) {
      if (offset > 0) query.set('offset', String(offset));
      try {
        const { stream, headers } = await this.openStream(`${path}?${query.toString()}`);
        const value = pin ? headers[`paddock-${pin}`] : undefined;
        if (pin && typeof value === 'string' && !query.has(pin)) query.set(pin, value);
        for await (const chunk of stream as AsyncIterable<Buffer>) {
          offset += chunk.length;
          failures = 0;
          if (!target.write(chunk)) await once(target, 'drain');
        }
        return;
      } catch (error) {
        const translated = this.translate(error);
        if (!(translated instanceof PaddockConnectionError) || ++failures >= followAttempts) throw translated;
        await sleep(Math.min(5000, 100 * 2 ** failures));
      }
    }
  }

  /**
   * Reads a `text/event-stream` answer event by event until the server closes it or `signal`
   * aborts (then it just ends). A failure to connect or an error status throws a typed error.
   */
  async *serverSentEvents(path: string, signal: AbortSignal): AsyncGenerator<ServerSentEvent> {
    if (signal.aborted) return;
    let stream: GotStream;
    try {
      ({ stream } = await this.openStream(path, { headers: { accept: 'text/event-stream' } }, signal));
    } catch (error) {
      if (signal.aborted) return;
      throw error;
    }
    if (signal.aborted) return stream.destroy();
    const abort = () => stream.destroy();
    signal.addEventListener('abort', abort, { once: true });
    let buffer = '';
    try {
      for await (const chunk of stream as AsyncIterable<Buffer>) {
        buffer += chunk.toString('utf8');
        let end: RegExpExecArray | null;
        while ((end = /\r?\n\r?\n/.exec(buffer))) {
          const block = buffer.slice(0, end.index);
          buffer = buffer.slice(end.index + end[0].length);
          const parsed = parseEventBlock(block);
          if (parsed) yield parsed;
        }
      }
    } catch (error) {
      if (signal.aborted) return;
      throw this.translate(error);
    } finally {
      signal.removeEventListener('abort', abort);
      stream.destroy();
    }
  }

  /** A request with failover (servers.send), answered whatever its status. */
  private async request(
    method: 'GET' | 'POST' | 'DELETE',
    path: string,
    options: { searchParams?: Record<string, string | number>; json?: unknown; timeout?: { connect: number; request: number } },
    replayable: boolean,
  ): Promise<Response<string>> {
    try {
      const client = await this.client();
      return await this.servers.send((base) => client(path, { method, prefixUrl: base, ...options }) as Promise<Response<string>>, { replayable });
    } catch (error) {
      throw this.translate(error);
    }
  }

  private async send<T>(
    method: 'GET' | 'POST' | 'DELETE',
    path: string,
    options: { searchParams?: Record<string, string | number>; json?: unknown; timeout?: { connect: number; request: number } },
    replayable: boolean,
  ): Promise<T> {
    return this.judge<T>(await this.request(method, path, options, replayable));
  }

  /** An answer's JSON, or the typed error it stands for. */
  private judge<T>(response: Response<string>): T {
    // 3xx too: a redirect that is not a follower's (no Paddock-Leader) is not followed.
    if (response.statusCode >= 300) throw errorFromBody(response.statusCode, response.body, { secrets: [this.options.token] });
    if (response.body === '') return '' as T; // 204 No Content: got's json() gives '' too
    try {
      return JSON.parse(response.body) as T;
    } catch {
      const where = response.url ? shownUrl(new URL(response.url).origin) : this.where;
      throw new PaddockError(`${where} answered with something that is not JSON; is it a Paddock server?`, 'invalid_response', response.statusCode);
    }
  }

  /**
   * A GET whose answer is read as a stream, opened with failover: resolves once a server answered
   * 2xx (its headers with it); an error answer throws its typed error. A break after that is the
   * caller's (a follow takes it up again).
   */
  private async openStream(
    path: string,
    options: { headers?: Record<string, string> } = {},
    signal?: AbortSignal,
  ): Promise<{ stream: GotStream; headers: Record<string, string | string[] | undefined> }> {
    try {
      const client = await this.client();
      const answer = await this.servers.send<Answer & { stream?: GotStream }>(
        async (base) => {
          const stream = client.stream.get(path, { prefixUrl: base, headers: options.headers ?? {}, timeout: { connect: 10_000 } });
          const response = await new Promise<{ statusCode: number; headers: Record<string, string | string[] | undefined> }>((resolve, reject) => {
            stream.once('response', resolve);
            stream.once('error', reject);
          });
          if (response.statusCode < 300) return { statusCode: response.statusCode, headers: response.headers, stream };
          // An error answer (or a follower's redirect) is small: read it for its code.
          const chunks: Buffer[] = [];
          let size = 0;
          for await (const chunk of stream as AsyncIterable<Buffer>) {
            chunks.push(chunk);
            if ((size += chunk.length) > 65_536) break;
          }
          stream.destroy();
          return { statusCode: response.statusCode, headers: response.headers, body: Buffer.concat(chunks).toString('utf8') };
        },
        { replayable: true, ...(signal ? { signal } : {}) },
      );
      if (!answer.stream) throw errorFromBody(answer.statusCode, answer.body, { secrets: [this.options.token] });
      return { stream: answer.stream, headers: answer.headers };
    } catch (error) {
      throw this.translate(error);
    }
  }

  /**
   * What each server of the list says it is at GET /healthz, asked on its own (no failover, no
   * redirect followed): its role and what it names, or why it did not say.
   */
  async health(): Promise<ServerHealth[]> {
    return Promise.all(this.servers.urls.map((base) => this.probe(base)));
  }

  /** What the server at `base` says it is at GET /healthz; never throws. */
  private async probe(base: string): Promise<ServerHealth> {
    const url = shownUrl(base);
    let response;
    try {
      // No token: /healthz needs none, and the list may name a server that is not ours.
      response = await (
        await this.client()
      ).get('healthz', {
        prefixUrl: base,
        headers: { authorization: undefined },
        timeout: { connect: 5_000, request: 10_000 },
      });
    } catch (error) {
      return { url, role: 'unreachable', reason: (error as NodeJS.ErrnoException).code ?? (error as Error).message };
    }
    let body: Record<string, unknown>;
    try {
      body = JSON.parse(response.body) as Record<string, unknown>;
    } catch {
      return { url, role: 'not_paddock', reason: `HTTP ${response.statusCode}, not JSON` };
    }
    const text = (key: string) => (typeof body[key] === 'string' ? printable(body[key] as string) : undefined);
    const role = text('role');
    const facts = { ...(text('version') ? { version: text('version') } : {}), ...(text('database') ? { database: text('database') } : {}) };
    // A Paddock from before several servers says `ok` and no role: it is the only one, so it leads.
    if (response.statusCode === 200 && (role === 'leader' || (role === undefined && body.ok === true))) return { url, role: 'leader', ...facts };
    if (response.statusCode === 200 && role === 'follower') {
      const leader = text('leader');
      const usable = leader !== undefined && /^https?:\/\//.test(leader) && URL.canParse(leader);
      return { url, role, ...facts, ...(usable ? { leader: shownUrl(leader) } : leader ? { reason: `names a leader that is not a URL: ${leader}` } : {}) };
    }
    const said = text('message');
    const reason = said ? `${said} (${text('code') ?? response.statusCode})` : `HTTP ${response.statusCode}`;
    return { url, role: response.statusCode === 503 ? 'failing' : 'not_paddock', ...facts, reason };
  }

  /** The leader of a list (GET /healthz of each), for what cannot be redirected or sent twice; a single server is itself. */
  private async leader(): Promise<string> {
    try {
      return await this.servers.findLeader(async (base) => {
        const health = await this.probe(base);
        if (health.role === 'unreachable') throw Object.assign(new Error(health.reason), { code: health.reason });
        return health.role === 'leader' || health.role === 'follower' ? health.role : 'unhealthy';
      });
    } catch (error) {
      throw this.translate(error);
    }
  }

  private translate(error: unknown): unknown {
    if (error instanceof FailoverError) {
      return error.code === 'connection_failed'
        ? new PaddockConnectionError(error.message, 'connection_failed', undefined, error.details)
        : new PaddockError(error.message, error.code);
    }
    if (!this.got) return error;
    const { HTTPError, ParseError, RequestError } = this.got;
    if (error instanceof HTTPError) {
      return errorFromBody(error.response.statusCode, error.response.body, { secrets: [this.options.token] });
    }
    if (error instanceof ParseError) {
      return new PaddockError(`${this.where} answered with something that is not JSON; is it a Paddock server?`, 'invalid_response', error.response.statusCode);
    }
    if (error instanceof RequestError) {
      const reason = error.code ?? 'request failed';
      const url = error.options?.url;
      const where = url ? shownUrl(new URL(url).origin) : this.where;
      return new PaddockConnectionError(`cannot reach Paddock at ${where}: ${reason}`, 'connection_failed', undefined, { reason });
    }
    return error;
  }
}

/** One event block of a `text/event-stream`; null for a comment-only block (keep-alive). */
export function parseEventBlock(block: string): ServerSentEvent | null {
  let event = 'message';
  let id: string | undefined;
  const data: string[] = [];
  for (const line of block.split(/\r?\n/)) {
    if (line === '' || line.startsWith(':')) continue;
    const colon = line.indexOf(':');
    const name = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
    if (name === 'event') event = value;
    else if (name === 'id') id = value;
    else if (name === 'data') data.push(value);
  }
  return data.length === 0 ? null : { event, id, data: data.join('\n') };
}
