// A lab spread over several hosts, on this one machine: each host is a network namespace (as root:
// `ip netns`) with its loopback up, and a veth pair links the hub's namespace (the API's) to each
// other one. The addresses exist only inside the namespaces made here: 10.X.N.1 on the hub's side
// of link N and 10.X.N.2 on the host's, X random per run. The hub does not forward, so a host
// reaches the hub and nothing else: not the other hosts, and nothing outside this machine.
import { execFile, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface Namespaces {
  /** The namespace of a host, for `ip netns exec`. */
  name(host: string): string;
  /** The hub's address as `host` reaches it. */
  hub(host: string): string;
  /** `host`'s own address (on its link to the hub). */
  address(host: string): string;
  /** Starts `command args` inside `host`'s namespace. */
  spawn(host: string, command: string, args: string[], options?: SpawnOptions): ChildProcess;
  /** Runs it to the end: its exit code and output (never throws for a non-zero code). */
  run(
    host: string,
    command: string,
    args: string[],
    options?: { env?: NodeJS.ProcessEnv; input?: string; timeoutMs?: number },
  ): Promise<{ code: number; stdout: string; stderr: string }>;
  /** Removes the namespaces and links (processes still inside are killed first). */
  remove(): Promise<void>;
}

export async function makeNamespaces(hub: string, hosts: string[]): Promise<Namespaces> {
  const tag = `pk${randomInt(10000, 99999)}`;
  const second = randomInt(100, 250);
  const name = (host: string) => `${tag}-${host}`;
  const made: string[] = [];
  const ip = (...args: string[]) => run('ip', args);
  const inside = (host: string, ...args: string[]) => run('ip', ['netns', 'exec', name(host), ...args]);
  const index = new Map(hosts.map((host, position) => [host, position + 1]));
  const hubAddress = (host: string) => `10.${second}.${index.get(host)}.1`;
  const hostAddress = (host: string) => `10.${second}.${index.get(host)}.2`;
  try {
    for (const host of [hub, ...hosts]) {
      await ip('netns', 'add', name(host));
      made.push(host);
      await inside(host, 'ip', 'link', 'set', 'lo', 'up');
    }
    for (const host of hosts) {
      const n = index.get(host)!;
      const [hubEnd, hostEnd] = [`${tag}h${n}`, `${tag}v${n}`];
      await ip('link', 'add', hubEnd, 'netns', name(hub), 'type', 'veth', 'peer', 'name', hostEnd, 'netns', name(host));
      await inside(hub, 'ip', 'addr', 'add', `${hubAddress(host)}/24`, 'dev', hubEnd);
      await inside(hub, 'ip', 'link', 'set', hubEnd, 'up');
      await inside(host, 'ip', 'addr', 'add', `${hostAddress(host)}/24`, 'dev', hostEnd);
      await inside(host, 'ip', 'link', 'set', hostEnd, 'up');
    }
  } catch (error) {
    for (const host of made) await ip('netns', 'del', name(host)).catch(() => undefined);
    throw error;
  }

  const spawnIn = (host: string, command: string, args: string[], options: SpawnOptions = {}) =>
    spawn('ip', ['netns', 'exec', name(host), command, ...args], options);
  return {
    name,
    hub: hubAddress,
    address: hostAddress,
    spawn: spawnIn,
    run: (host, command, args, options = {}) =>
      new Promise((resolve) => {
        const child = spawnIn(host, command, args, { env: options.env ?? process.env });
        let stdout = '';
        let stderr = '';
        child.stdout!.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
        child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
        const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 300_000);
        child.stdin!.end(options.input ?? '');
        child.once('close', (code) => {
          clearTimeout(timer);
          resolve({ code: code ?? 1, stdout, stderr });
        });
      }),
    async remove() {
      for (const host of made) {
        // Whatever still runs inside (a test that failed half way) goes with its namespace.
        const { stdout } = await run('ip', ['netns', 'pids', name(host)]).catch(() => ({ stdout: '' }));
        for (const pid of stdout.split(/\s+/).filter(Boolean)) {
          try {
            process.kill(Number(pid), 'SIGKILL');
          } catch {
            // gone already
          }
        }
        await ip('netns', 'del', name(host)).catch(() => undefined);
      }
    },
  };
}
