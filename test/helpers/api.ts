// A real Paddock for tests: the API and its in-process agent on a loopback port 0, a fresh SQLite
// file in a temp directory, and clients that talk real HTTP to it.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import got from 'got';
import { parseConfig, type Config } from '../../api/config.js';
import { serve, type RunningServer } from '../../cli/serve.js';
import { tenantOf, type TestSshd } from './sshd.js';
import { captureLog } from './log.js';
import { testDatabase } from './postgres.js';

export interface TestApi {
  url: string;
  dataDir: string;
  /** Its PostgreSQL database (the PostgreSQL pass); none: the SQLite file in dataDir. */
  database?: string;
  server: RunningServer;
  adminToken: string;
  /** A JSON client bound to the API with a token (the admin's by default); never throws on 4xx/5xx. */
  http(token?: string | null): JsonClient;
  logs: string[];
  close(): Promise<void>;
}

/** Builds a config from YAML text (machines, policies) with a fresh data dir and port 0. */
export function testConfig(yaml: string, dataDir = mkdtempSync(path.join(os.tmpdir(), 'paddock-test-'))): Config {
  const config = parseConfig(yaml);
  // In the PostgreSQL pass, a database of its own for this data directory (postgres.ts).
  const database = config.database ?? testDatabase(dataDir);
  return { ...config, listen: { host: '127.0.0.1', port: 0 }, dataDir, ...(database === undefined ? {} : { database }) };
}

export async function startApi(config: Config): Promise<TestApi> {
  const logs: string[] = [];
  const server = await serve({ config, log: captureLog(logs) });
  const adminToken = readFileSync(server.adminTokenFile, 'utf8').trim();
  const http = (token: string | null = adminToken) => jsonClient(server.url, token ?? undefined);
  return {
    url: server.url,
    dataDir: config.dataDir,
    ...(config.database === undefined ? {} : { database: config.database }),
    server,
    adminToken,
    http,
    logs,
    async close() {
      // Releases asked for just before go through first, so no VM outlives its test's data dir.
      const admin = jsonClient(server.url, adminToken);
      const deadline = Date.now() + 120_000;
      while (config.agent.enabled && Date.now() < deadline) {
        const live = await admin.get('v1/reservations', { searchParams: { all: 1, limit: 1000 } }).catch(() => undefined);
        if (!Array.isArray(live?.body) || !(live.body as { state: string }[]).some((reservation) => reservation.state === 'releasing')) break;
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
      await server.close();
      rmSync(config.dataDir, { recursive: true, force: true });
    },
  };
}

export interface JsonResponse {
  statusCode: number;
  body: unknown;
}

interface Options {
  json?: unknown;
  body?: string;
  headers?: Record<string, string>;
  searchParams?: Record<string, string | number>;
}

export interface JsonClient {
  get(url: string, options?: Options): Promise<JsonResponse>;
  post(url: string, options?: Options): Promise<JsonResponse>;
  put(url: string, options?: Options): Promise<JsonResponse>;
  delete(url: string, options?: Options): Promise<JsonResponse>;
}

/** Plain HTTP against the API, as any client would speak it. */
export function jsonClient(url: string, token: string | undefined): JsonClient {
  const http = got.extend({
    prefixUrl: url,
    headers: token ? { authorization: `Bearer ${token}` } : {},
    throwHttpErrors: false,
    retry: { limit: 0 },
  });
  const call = (method: 'get' | 'post' | 'put' | 'delete') => async (path: string, options?: Options) => {
    const response = await http[method](path, { ...(options as object), responseType: 'text' } as never);
    const text = String(response.body);
    let body: unknown = text;
    try {
      body = text === '' ? undefined : JSON.parse(text);
    } catch {
      // not JSON: leave the text for the assertion to show
    }
    return { statusCode: response.statusCode, body };
  };
  return { get: call('get'), post: call('post'), put: call('put'), delete: call('delete') };
}

/** A static machine named `name` on a test sshd, for staticMachinesYaml. */
export const staticHostOn = (sshd: TestSshd, name: string, labels?: Record<string, string>) => ({
  name,
  port: sshd.port,
  adminKeyPath: sshd.adminKey.path,
  authorizedKeysFile: sshd.authorizedKeysFile,
  ...(labels ? { labels } : {}),
});

/**
 * YAML for static machines backed by test sshd instances: Paddock logs in as the user running the
 * tests, and lends the server's tenant (test/helpers/sshd.ts) unless `user` names another login.
 */
export function staticMachinesYaml(
  hosts: {
    name: string;
    port: number;
    adminKeyPath: string;
    authorizedKeysFile: string;
    user?: string;
    /** The lab host whose agent provisions it (default: the embedded agent's). */
    labHost?: string;
    /** How owners reach it (default: its lab host's, else direct). */
    access?: 'direct' | 'paddock';
    labels?: Record<string, string>;
    capacities?: Record<string, string | number>;
  }[],
): string {
  return [
    'machines:',
    ...hosts.map((host) =>
      [
        `  - name: ${host.name}`,
        '    kind: static',
        ...(host.labHost ? [`    labHost: ${host.labHost}`] : []),
        ...(host.access ? [`    access: ${host.access}`] : []),
        `    labels: ${JSON.stringify(host.labels ?? { type: 'static-host', arch: 'x86_64' })}`,
        `    capacities: ${JSON.stringify(host.capacities ?? { cpus: 2, ram: '2GiB' })}`,
        '    settings:',
        '      address: 127.0.0.1',
        `      port: ${host.port}`,
        `      user: ${host.user ?? tenantOf(host.port) ?? 'paddock-tenant'}`,
        `      adminUser: ${os.userInfo().username}`,
        `      adminKey: ${JSON.stringify(host.adminKeyPath)}`,
        `      authorizedKeys: ${JSON.stringify(host.authorizedKeysFile)}`,
      ].join('\n'),
    ),
  ].join('\n');
}
