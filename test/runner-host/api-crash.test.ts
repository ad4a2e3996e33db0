// kill -9 of `paddock serve` while a runner host runs a job: the runner host keeps the script
// going and retries what it has to say; once the API is back, the run ends passed with the whole
// output in its log, and the runner host takes the next run.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import test from 'ava';
import { Paddock } from '../../client/index.js';
import { freePort } from '../helpers/ports.js';
import { killHard, startServerProcess, stopGracefully } from '../helpers/server.js';
import { textSink } from '../helpers/text-sink.js';
import { waitFor } from '../helpers/wait.js';

const bin = path.resolve(import.meta.dirname, '../../bin/paddock.js');

test('the API killed with -9 mid-run and started again: the run ends passed, its output whole', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'paddock-api-crash-'));
  chmodSync(dir, 0o711); // the runner host's run users pass through to their work folders
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const config = path.join(dir, 'paddock.yaml');
  writeFileSync(
    config,
    `listen: 127.0.0.1:${port}\ndataDir: data\nrunners: { heartbeatTimeout: 20 }\nrepositories: { localRoots: [${JSON.stringify(dir)}] }\n`,
  );
  const repo = path.join(dir, 'jobs.git');
  mkdirSync(path.join(repo, 'ci'), { recursive: true });
  writeFileSync(path.join(repo, 'ci', 'long.sh'), '#!/bin/sh\necho before\nsleep 6\necho after\n');
  chmodSync(path.join(repo, 'ci', 'long.sh'), 0o755);
  execFileSync('git', ['init', '-q', '-b', 'main', repo]);
  execFileSync('git', ['-C', repo, 'add', '.']);
  execFileSync('git', ['-C', repo, '-c', 'user.name=ci', '-c', 'user.email=ci@example.com', 'commit', '-q', '-m', 'long']);

  let server: ChildProcess | undefined = await startServerProcess(['--config', config], url);
  let runner: ChildProcess | undefined;
  try {
    const paddock = new Paddock({ url, token: readFileSync(path.join(dir, 'data', 'admin-token'), 'utf8').trim() });
    const runnerToken = (await paddock.createToken('runner-1', 'runner')).token;
    runner = spawn(process.execPath, [bin, 'runner', '--work', path.join(dir, 'work'), '--heartbeat', '0.5'], {
      env: { ...process.env, PADDOCK_URL: url, PADDOCK_TOKEN: runnerToken },
      stdio: 'ignore',
    });
    await paddock.jobs.add({ name: 'long', repository: repo, script: 'ci/long.sh' });
    const run = await paddock.jobs.run('long');
    const logOf = async () => {
      const sink = textSink();
      await paddock.jobs.log(run.id, sink);
      return sink.text;
    };
    await waitFor(async () => /before/.test(await logOf()), 120_000, 'the first line');
    // A follower started before the crash rides it out: it takes the log up again where it broke.
    const followed = textSink();
    const following = paddock.jobs.log(run.id, followed, { follow: true });

    await killHard(server);
    server = undefined;
    await new Promise((resolve) => setTimeout(resolve, 2000));
    server = await startServerProcess(['--config', config], url);

    const ended = await paddock.jobs.wait(run.id, { timeoutSeconds: 300 });
    t.is(ended.state, 'passed', await logOf());
    t.is(ended.exitCode, 0);
    const log = await logOf();
    t.regex(log, /before\n(.|\n)*after\n(.|\n)*paddock: run passed/);
    await following;
    t.is(followed.text, log, 'the follower got every byte of the log, once');
    const next = await paddock.jobs.wait((await paddock.jobs.run('long')).id, { timeoutSeconds: 300 });
    t.is(next.state, 'passed', 'the runner host takes the next run');
  } finally {
    await stopGracefully(runner);
    if (server) await killHard(server);
    rmSync(dir, { recursive: true, force: true });
  }
});
