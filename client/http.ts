// The HTTP side of the client: got bound to the server and the token, JSON in and out, and every
// error answer turned into a typed error. The token travels in a header only.
import got, { HTTPError, RequestError, type Got } from 'got';
import { errorFromBody, PaddockConnectionError } from './errors.js';

export interface HttpOptions {
  url: string;
  token: string;
}

export class Http {
  private readonly got: Got;

  constructor(private readonly options: HttpOptions) {
    this.got = got.extend({
      prefixUrl: options.url,
      headers: { authorization: `Bearer ${options.token}`, 'user-agent': 'paddock-client' },
      responseType: 'json',
      retry: { limit: 2, methods: ['GET', 'PUT', 'DELETE'] },
      timeout: { request: 330_000 },
    });
  }

  get<T>(path: string, searchParams?: Record<string, string | number>): Promise<T> {
    return this.call<T>(() => this.got.get(path, { searchParams }).json<T>());
  }

  post<T>(path: string, json?: unknown): Promise<T> {
    return this.call<T>(() => this.got.post(path, json === undefined ? {} : { json }).json<T>());
  }

  delete<T>(path: string): Promise<T> {
    return this.call<T>(() => this.got.delete(path).json<T>());
  }

  /** A raw stream (server-sent events). */
  stream(path: string, headers: Record<string, string>) {
    return this.got.stream(path, { headers, responseType: undefined as never, timeout: {} });
  }

  private async call<T>(request: () => Promise<T>): Promise<T> {
    try {
      return await request();
    } catch (error) {
      if (error instanceof HTTPError) throw errorFromBody(error.response.statusCode, error.response.body);
      if (error instanceof RequestError) {
        throw new PaddockConnectionError(`cannot reach Paddock at ${this.options.url}: ${error.code}`, 'connection_failed');
      }
      throw error;
    }
  }
}
