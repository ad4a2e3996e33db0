// A runner host given two API URLs keeps claiming when the first dies, with no restart: a real
// `paddock runner` process, a real API, and in front of it on the first URL a TCP relay that stands
// for a second API server (until two `paddock serve` share a database here) and is then killed.
// The job script gets the whole list as PADDOCK_URL.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import test from 'ava';
import { Paddock } from '../../client/index.js';
import type { RunView } from '../../protocol/api.js';
import { startApi, testConfig, type TestApi } from '../helpers/api.js';
import { textSink } from '../helpers/text-sink.js';

const bin = path.resolve(import.meta.dirname, '../../bin/paddock.js');

/** A relay to `target` on a loopback port; `kill` closes it and cuts what it carries, as a killed server. */
async function startRelay(target: string): Promise<{ url: string; connections: () => number; kill(): Promise<void> }> {
  const { hostname, port } = new URL(target);
  const sockets = new Set<net.Socket>();
  let connections = 0;
  const server = net.createServer((client) => {
    connections += 1;
    const upstream = net.connect(Number(port), hostname);
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
      socket.on('error', () => undefined);
    }
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    connections: () => connections,
    kill: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.resetAndDestroy();
        server.close(() => resolve());
      }),
  };
}

let api: TestApi;
let scratch: string;

test.before(async () => {
  scratch = mkdtempSync(path.join(os.tmpdir(), 'paddock-runner-failover-'));
  chmodSync(scratch, 0o711); // the run users pass through to their work folders
  api = await startApi(testConfig(`machines: []\nrunners: { heartbeatTimeout: 20 }\nrepositories: { localRoots: [${JSON.stringify(scratch)}] }\n`));
});

test.after.always(async () => {
  await api?.close();
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

test('a runner host keeps claiming when its first API URL dies, without a restart', async (t) => {
  const admin = new Paddock({ url: api.url, token: api.adminToken });
  const repo = path.join(scratch, 'jobs.git');
  mkdirSync(path.join(repo, 'ci'), { recursive: true });
  writeFileSync(path.join(repo, 'ci', 'where.sh'), '#!/bin/sh\necho "PADDOCK_URL=$PADDOCK_URL"\n');
  chmodSync(path.join(repo, 'ci', 'where.sh'), 0o755);
  execFileSync('git', ['init', '-q', '-b', 'main', repo]);
  execFileSync('git', ['-C', repo, 'add', '.']);
  execFileSync('git', ['-C', repo, '-c', 'user.name=ci', '-c', 'user.email=ci@example.com', 'commit', '-q', '-m', 'where']);
  await admin.jobs.add({ name: 'where', repository: repo, script: 'ci/where.sh' });
  const runnerToken = (await admin.createToken('runner-fo', 'runner')).token;

  const relay = await startRelay(api.url);
  const urls = `${relay.url},${api.url}`;
  let said = '';
  const runner: ChildProcess = spawn(process.execPath, [bin, 'runner', '--work', path.join(scratch, 'work'), '--heartbeat', '0.5'], {
    env: { ...process.env, PADDOCK_URL: urls, PADDOCK_TOKEN: runnerToken },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  runner.stderr!.on('data', (chunk: Buffer) => (said += chunk.toString()));
  try {
    const logOf = async (id: string) => {
      const sink = textSink();
      await admin.jobs.log(id, sink);
      return sink.text;
    };
    const first = await admin.jobs.wait((await admin.jobs.run('where')).id, { timeoutSeconds: 120 });
    t.is(first.state, 'passed', said);
    t.true(relay.connections() > 0, 'the runner host spoke to the first URL');
    t.regex(await logOf(first.id), new RegExp(`^PADDOCK_URL=${urls}$`, 'm'), 'the script gets the whole list');

    await relay.kill();
    const second: RunView = await admin.jobs.wait((await admin.jobs.run('where')).id, { timeoutSeconds: 120 });
    t.is(second.state, 'passed', `the run after the first URL died: ${said}`);
    t.is(second.runner, 'runner-fo');
    t.is(runner.exitCode, null, 'the same runner host process, not restarted');
    t.is(runner.signalCode, null);
  } finally {
    if (runner.exitCode === null && runner.signalCode === null) {
      const exited = new Promise((resolve) => runner.once('exit', resolve));
      runner.kill('SIGTERM');
      await exited;
    }
  }
});
