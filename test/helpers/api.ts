// A real Paddock for tests: the API and its in-process agent on a loopback port 0, a fresh SQLite
// file in a temp directory, and clients that talk real HTTP to it.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import got, { type Got } from 'got';
import { parseConfig, type Config } from '../../api/config.js';
import { serve, type RunningServer } from '../../api/serve.js';

export interface TestApi {
  url: string;
  dataDir: string;
  server: RunningServer;
  adminToken: string;
  /** got bound to the API with a token, answering JSON and never throwing on 4xx/5xx. */
  http(token?: string): Got;
  logs: string[];
  close(): Promise<void>;
}

/** Builds a config from YAML text (machines, policies) with a fresh data dir and port 0. */
export function testConfig(yaml: string, dataDir = mkdtempSync(path.join(os.tmpdir(), 'paddock-test-'))): Config {
  const config = parseConfig(yaml);
  return { ...config, listen: { host: '127.0.0.1', port: 0 }, dataDir };
}

export async function startApi(config: Config): Promise<TestApi> {
  const logs: string[] = [];
  const server = await serve({ config, log: (line) => logs.push(line) });
  const adminToken = readFileSync(server.adminTokenFile, 'utf8').trim();
  const http = (token: string | undefined = adminToken) =>
    got.extend({
      prefixUrl: server.url,
      headers: token ? { authorization: `Bearer ${token}` } : {},
      throwHttpErrors: false,
      responseType: 'json',
      retry: { limit: 0 },
    });
  return {
    url: server.url,
    dataDir: config.dataDir,
    server,
    adminToken,
    http,
    logs,
    async close() {
      await server.close();
      rmSync(config.dataDir, { recursive: true, force: true });
    },
  };
}

/** YAML for static machines backed by test sshd instances. */
export function staticMachinesYaml(
  hosts: { name: string; port: number; adminKeyPath: string; authorizedKeysFile: string; labels?: Record<string, string>; capacities?: Record<string, string | number> }[],
): string {
  return [
    'machines:',
    ...hosts.map((host) =>
      [
        `  - name: ${host.name}`,
        '    kind: static',
        `    labels: ${JSON.stringify(host.labels ?? { type: 'static-host', arch: 'x86_64' })}`,
        `    capacities: ${JSON.stringify(host.capacities ?? { cpus: 2, ram: '2GiB' })}`,
        '    settings:',
        '      address: 127.0.0.1',
        `      port: ${host.port}`,
        `      user: ${os.userInfo().username}`,
        `      adminKey: ${JSON.stringify(host.adminKeyPath)}`,
        `      authorizedKeys: ${JSON.stringify(host.authorizedKeysFile)}`,
      ].join('\n'),
    ),
  ].join('\n');
}
