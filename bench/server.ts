// What the API benchmarks share: the server compiled to JavaScript and run as `paddock serve` in a
// child process (with a real SQLite file), plain keep-alive HTTP against it, and its memory: resident
// (what the system sees), or the JavaScript heap in use after a full garbage collection (what the
// server's records hold, without the garbage and the free pages a resident figure goes up and down with).
import { setTimeout as sleep } from 'node:timers/promises';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { freePort } from '../test/helpers/ports.js';

/** The server runs as deployed: compiled to JavaScript (`npm run build`, into dist/), without the TypeScript loader. */
const buildDir = path.resolve('dist');
export const agent = new http.Agent({ keepAlive: true, maxSockets: 128 });

export interface Server {
  child: ChildProcess;
  port: number;
  token: string;
  dir: string;
}

export function build(): void {
  execFileSync(process.execPath, [path.resolve('node_modules/typescript/bin/tsc'), '-p', 'tsconfig.build.json'], { stdio: 'inherit' });
}

/**
 * Loaded into a server started with `heap: true` (with --expose-gc and a channel to the benchmark):
 * asked 'heap', it runs a full garbage collection and answers the heap in use.
 */
const heapProbe = `process.on('message', (message) => {
  if (message !== 'heap') return;
  globalThis.gc();
  process.send({ heapUsed: process.memoryUsage().heapUsed });
});
process.channel.unref();
`;

/**
 * Starts the built server on a free port with the config `yaml(port)` gives; resolves once /healthz
 * answers, rejects if it ends first (a config it refuses). With `heap`, heapMiB can ask it for its
 * heap (the server's code is unchanged); `nodeFlags` go to its Node (modules to --import first, --cpu-prof), with `env`;
 * with `logFile`, its log goes to DIR/server.log (as a service's goes to its journal), not to this stderr;
 * its folder DIR (data, log) is made in `baseDir`, the system's temporary folder by default.
 */
export async function startServer(
  yaml: (port: number) => string,
  options: { heap?: boolean; nodeFlags?: string[]; env?: Record<string, string>; logFile?: boolean; baseDir?: string; adminToken?: string } = {},
): Promise<Server> {
  const dir = mkdtempSync(path.join(options.baseDir ?? os.tmpdir(), 'paddock-bench-'));
  const port = await freePort();
  writeFileSync(path.join(dir, 'paddock.yaml'), yaml(port));
  const probe = path.join(dir, 'heap-probe.js');
  if (options.heap) writeFileSync(probe, heapProbe);
  const flags = [...(options.heap ? ['--expose-gc', `--import=${pathToFileURL(probe).href}`] : []), ...(options.nodeFlags ?? [])];
  const log = options.logFile ? openSync(path.join(dir, 'server.log'), 'w') : 'inherit';
  const child = spawn(process.execPath, [...flags, path.join(buildDir, 'cli/server-process.js'), '--config', path.join(dir, 'paddock.yaml')], {
    stdio: ['ignore', 'ignore', log, ...(options.heap ? (['ipc'] as const) : [])],
    env: { ...process.env, ...options.env },
  });
  if (typeof log === 'number') closeSync(log);
  // A benchmark that ends on an error leaves no server behind (one would hold its database).
  const orphan = () => child.kill('SIGKILL');
  process.once('exit', orphan);
  child.once('exit', () => process.off('exit', orphan));
  let ended: string | undefined;
  child.once('exit', (code, signal) => {
    const said = options.logFile ? `: ${readFileSync(path.join(dir, 'server.log'), 'utf8').trim().split('\n').slice(-5).join('\n')}` : '';
    ended = `the server ended (${signal ?? `exit ${code}`}) before it answered /healthz${said}`;
  });
  for (let attempt = 0; ; attempt++) {
    try {
      await request(port, '', 'GET', '/healthz');
      break;
    } catch (error) {
      if (ended !== undefined || attempt > 600) {
        child.kill('SIGKILL');
        rmSync(dir, { recursive: true, force: true });
        throw ended !== undefined ? new Error(ended) : error;
      }
      await sleep(100);
    }
  }
  // A database that has an admin already (a server before this one on the same PostgreSQL database
  // made it) gets no new one: the caller knows its token.
  if (options.adminToken !== undefined) return { child, port, dir, token: options.adminToken };
  // A server on PostgreSQL writes its admin token once it leads, which may be after it first answers.
  const tokenFile = path.join(dir, 'data', 'admin-token');
  for (let attempt = 0; !existsSync(tokenFile); attempt++) {
    if (ended !== undefined || attempt > 600) throw new Error(ended ?? 'the server wrote no admin token');
    await sleep(100);
  }
  return { child, port, dir, token: readFileSync(tokenFile, 'utf8').trim() };
}

/** Ends the server (SIGTERM) and resolves once it has; its folder is removed unless `keep` (its database read after). */
export async function stopServer(server: Server, options: { keep?: boolean } = {}): Promise<void> {
  const { child } = server;
  if (child.exitCode === null && child.signalCode === null) {
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    await exited;
  }
  if (!options.keep) rmSync(server.dir, { recursive: true, force: true });
}

/** The fields of the API's answers the benchmarks read. */
export type Answer = { id: string; state: string; length: number; token: string };

export function request(
  port: number,
  token: string,
  method: string,
  pathname: string,
  body?: unknown,
): Promise<{ status: number; body: Answer; headers: http.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const req = http.request(
      {
        host: '127.0.0.1',
        port,
        method,
        path: pathname,
        agent,
        headers: { authorization: `Bearer ${token}`, ...(payload ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } : {}) },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString();
          // Not every answer is JSON: a follower's redirect, say.
          const json = /\bjson\b/.test(res.headers['content-type'] ?? '');
          resolve({ status: res.statusCode ?? 0, body: text && json ? JSON.parse(text) : undefined, headers: res.headers });
        });
      },
    );
    req.on('error', reject);
    if (payload) req.write(payload);
    req.end();
  });
}

/** One reserve of `member` by the admin, granted at once, and its release. */
export async function cycle(server: Server, member: unknown): Promise<void> {
  const created = await request(server.port, server.token, 'POST', '/v1/reservations', { members: [member], lease: 600 });
  if (created.status !== 201 || created.body.state !== 'allocated') throw new Error(`reserve: ${created.status} ${JSON.stringify(created.body)}`);
  const released = await request(server.port, server.token, 'DELETE', `/v1/reservations/${created.body.id}`);
  if (released.status !== 200 || released.body.state !== 'released') throw new Error(`release: ${released.status} ${JSON.stringify(released.body)}`);
}

/** Reserve+release cycles per second from `concurrency` clients at once for `seconds`. */
export async function cyclesPerSecond(server: Server, seconds: number, concurrency: number, member: unknown): Promise<number> {
  let done = 0;
  const deadline = Date.now() + seconds * 1000;
  const started = Date.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (Date.now() < deadline) {
        await cycle(server, member);
        done += 1;
      }
    }),
  );
  return done / ((Date.now() - started) / 1000);
}

/** The server's heap in use after a full garbage collection (a server started with `heap: true`). */
export function heapMiB(server: Server): Promise<number> {
  const { child } = server;
  if (!child.send) return Promise.reject(new Error('the server was not started with heap: true'));
  return new Promise((resolve) => {
    child.once('message', (answer: { heapUsed: number }) => resolve(answer.heapUsed / 1024 / 1024));
    child.send('heap');
  });
}

export function rssMiB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(status)![1]) / 1024;
}
