// `paddock serve` as its own process, for tests that kill it (-9) and start it again.
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import got from 'got';

const bin = path.resolve(import.meta.dirname, '../../bin/paddock.js');

/** Starts `paddock serve ARGS…` and resolves once `url`/healthz answers. */
export async function startServerProcess(args: string[], url: string): Promise<ChildProcess> {
  const child = spawn(process.execPath, [bin, 'serve', ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  let output = '';
  child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
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
