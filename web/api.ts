// The dashboard's side of the HTTP API: the token (kept in the tab's sessionStorage: never in a URL,
// never a cookie, gone when the browser closes), JSON calls with the bearer header, errors with the
// API's stable code, server-sent events and growing logs read through fetch (EventSource cannot send
// a header), and the console's WebSocket with the token as a subprotocol.
import type { ApiErrorBody, Caller } from '../protocol/api.js';

const tokenKey = 'paddock.token';

export const session = {
  token: (): string | null => sessionStorage.getItem(tokenKey),
  save: (token: string) => sessionStorage.setItem(tokenKey, token),
  clear: () => sessionStorage.removeItem(tokenKey),
};

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** What a person reads when an action is refused or a call fails. */
export function describe(error: unknown): string {
  if (error instanceof ApiError) return `${error.message} (${error.code})`;
  return `the call failed: ${(error as Error).message}`;
}

async function call(method: string, path: string, options: { body?: unknown; token?: string; signal?: AbortSignal; accept?: string } = {}): Promise<Response> {
  const token = options.token ?? session.token();
  const headers: Record<string, string> = { accept: options.accept ?? 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  if (options.body !== undefined) headers['content-type'] = 'application/json';
  const response = await fetch(path, {
    method,
    headers,
    ...(options.body !== undefined ? { body: JSON.stringify(options.body) } : {}),
    ...(options.signal ? { signal: options.signal } : {}),
    cache: 'no-store',
    credentials: 'omit',
  });
  if (!response.ok) {
    const body = (await response.json().catch(() => undefined)) as Partial<ApiErrorBody> | undefined;
    throw new ApiError(response.status, body?.code ?? 'http_error', body?.message ?? `HTTP ${response.status}`);
  }
  return response;
}

export const api = {
  get: async <T>(path: string): Promise<T> => (await (await call('GET', path)).json()) as T,
  post: async <T>(path: string, body: unknown = {}): Promise<T> => (await (await call('POST', path, { body })).json()) as T,
  delete: async <T>(path: string): Promise<T> => (await (await call('DELETE', path)).json()) as T,
  whoami: async (token: string): Promise<Caller> => (await (await call('GET', '/v1/whoami', { token })).json()) as Caller,
};

/** Reads a streamed text answer (a log with follow=1) chunk by chunk until it ends or `signal` aborts. */
export async function follow(path: string, onText: (text: string) => void, signal: AbortSignal, accept = 'text/plain'): Promise<void> {
  const response = await call('GET', path, { signal, accept });
  const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    onText(value);
  }
}

/** A reservation's server-sent events, parsed: each event's JSON data, until the stream ends. */
export async function events<T>(path: string, onEvent: (event: T) => void, signal: AbortSignal): Promise<void> {
  let buffer = '';
  await follow(
    path,
    (text) => {
      buffer += text;
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = block
          .split('\n')
          .filter((line) => line.startsWith('data: '))
          .map((line) => line.slice(6))
          .join('\n');
        if (data) onEvent(JSON.parse(data) as T);
      }
    },
    signal,
    'text/event-stream',
  );
}

/**
 * The console stream of a reservation's machine. The token travels as the subprotocol
 * `paddock.bearer.TOKEN` beside `paddock` (the one the server answers with), not in the URL.
 */
export function consoleSocket(reservationId: string, machine: string, write: boolean): WebSocket {
  const query = new URLSearchParams({ machine, mode: write ? 'write' : 'read' });
  const url = new URL(`/v1/reservations/${encodeURIComponent(reservationId)}/console/stream?${query}`, location.href);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  const socket = new WebSocket(url, ['paddock', `paddock.bearer.${session.token() ?? ''}`]);
  socket.binaryType = 'arraybuffer';
  return socket;
}

/** Byte counts as people read them. */
export function bytes(size: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = size;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(unit === 0 ? 0 : 1)} ${units[unit]}`;
}

/** A time as "in 5 min" or "3 min ago". */
export function relative(iso: string | undefined, now = Date.now()): string {
  if (!iso) return '—';
  const seconds = Math.round((new Date(iso).getTime() - now) / 1000);
  const size = Math.abs(seconds);
  const text =
    size < 90 ? `${size} s` : size < 5400 ? `${Math.round(size / 60)} min` : size < 172800 ? `${Math.round(size / 3600)} h` : `${Math.round(size / 86400)} d`;
  return seconds >= 0 ? `in ${text}` : `${text} ago`;
}
