// `paddock serve` and `paddock agent` as processes of their own, for tests that kill them (-9) and
// start them again, and the `paddock` command line run as a user would.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import got from 'got';

const bin = path.resolve(import.meta.dirname, '../../bin/paddock.js');

/** Starts `paddock serve ARGS…` and resolves once `url`/healthz answers; `onOutput` gets its stderr (its log) as it comes. */
export async function startServerProcess(args: string[], url: string, onOutput?: (chunk: string) => void): Promise<ChildProcess> {
  const child = spawn(process.execPath, [bin, 'serve', ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  let output = '';
  child.stderr!.on('data', (chunk: Buffer) => {
    output += chunk.toString();
    onOutput?.(chunk.toString());
  });
  // A deadline only against a server that never comes up: generous, so a busy machine is not a failure.
  const deadline = Date.now() + 180_000;
  for (;;) {
    try {
      await got.get(`${url}/healthz`, { retry: { limit: 0 }, timeout: { request: 1000 } });
      return child;
    } catch {
      if (Date.now() > deadline || child.exitCode !== null) throw new Error(`server did not start: ${output}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
}

/** kill -9, and wait until the process is gone. */
export async function killHard(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGKILL');
  await exited;
}

/** SIGTERM (a child that already ended is left alone), and wait until the process is gone. */
export async function stopGracefully(child: ChildProcess | undefined): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  await exited;
}

export interface AgentProcess {
  child: ChildProcess;
  /** What it wrote to stderr so far (its log). */
  stderr(): string;
}

/**
 * `paddock agent --name NAME ARGS…` as its own process against the API at `url`: its token in a
 * 0600 file and its data in a folder of its own, both under `dir`.
 */
export function startAgentProcess(options: { url: string; name: string; token: string; dir: string; args?: string[] }): AgentProcess {
  const tokenFile = path.join(options.dir, `${options.name}-token`);
  writeFileSync(tokenFile, `${options.token}\n`, { mode: 0o600 });
  const env: NodeJS.ProcessEnv = { ...process.env, PADDOCK_URL: options.url };
  delete env.PADDOCK_TOKEN;
  const args = ['agent', '--name', options.name, '--token-file', tokenFile, '--data', path.join(options.dir, options.name), ...(options.args ?? [])];
  const child = spawn(process.execPath, [bin, ...args], { env, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  return { child, stderr: () => stderr };
}

/** Runs the `paddock` command line against the API at `url` with `token`; never throws. */
export function runPaddock(url: string, token: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const env: NodeJS.ProcessEnv = { ...process.env, PADDOCK_URL: url, PADDOCK_TOKEN: token };
    execFile(process.execPath, [bin, ...args], { env, timeout: 300_000 }, (error, stdout, stderr) =>
      resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}
