// A runner host given two API URLs keeps claiming when the first dies, with no restart: a real
// `paddock runner` process, a real API, and in front of it on the first URL a TCP relay that stands
// for a second API server (until two `paddock serve` share a database here) and is then killed.
// The job script gets the whole list as PADDOCK_URL.
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import test from 'ava';
import { Paddock } from '../../client/index.js';
import type { RunView } from '../../protocol/api.js';
import { startApi, testConfig, type TestApi } from '../helpers/api.js';
import { startRelay } from '../helpers/follower.js';
import { jobRepository } from '../helpers/lab-config.js';
import { textSink } from '../helpers/text-sink.js';
import { waitFor } from '../helpers/wait.js';

const bin = path.resolve(import.meta.dirname, '../../bin/paddock.js');

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

test.serial('a runner host keeps claiming when its first API URL dies, without a restart', async (t) => {
  const admin = new Paddock({ url: api.url, token: api.adminToken });
  const repo = jobRepository(scratch, '#!/bin/sh\necho "PADDOCK_URL=$PADDOCK_URL"\n');
  await admin.jobs.add({ name: 'where', repository: repo, script: 'ci.sh' });
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
    // The claim the relay carried was waiting in this same API: let it see the hang-up before the
    // next run is made, as a server that really died takes its waiting claims with it.
    await waitFor(async () => /"msg":"claim failed; retrying"/.test(said), 30_000, 'the claim cut');
    await new Promise((resolve) => setTimeout(resolve, 1000));
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

test.serial('output sent again after a broken connection is stored once; output that never arrived is marked, not made up', async (t) => {
  const admin = new Paddock({ url: api.url, token: api.adminToken });
  const repo = jobRepository(mkdtempSync(path.join(scratch, 'chunks-')));
  await admin.jobs.add({ name: 'chunks', repository: repo, script: 'ci.sh' });
  const runnerToken = (await admin.createToken('runner-chunks', 'runner')).token;
  // This test plays the runner host's side of the protocol: the chunks as a host sends them again.
  const post = (pathname: string, body: string, type = 'application/json') =>
    fetch(`${api.url}${pathname}`, { method: 'POST', headers: { authorization: `Bearer ${runnerToken}`, 'content-type': type }, body });
  const made = await admin.jobs.run('chunks');
  const claimed = (await (await post('/v1/runner/claim', JSON.stringify({ runner: 'runner-chunks', slots: 1, wait: 10 }))).json()) as {
    runs: { id: string }[];
  };
  t.deepEqual(
    claimed.runs.map((run) => run.id),
    [made.id],
  );
  t.is((await post(`/v1/runner/runs/${made.id}/started`, JSON.stringify({ runner: 'runner-chunks' }))).status, 204);
  const chunk = (offset: number | string | undefined, text: string) =>
    post(`/v1/runner/runs/${made.id}/log?runner=runner-chunks${offset === undefined ? '' : `&offset=${offset}`}`, text, 'text/plain');
  for (const [offset, text] of [
    [0, 'one\n'],
    [0, 'one\n'], // sent again: its answer was lost
    [4, 'two\nthree\n'],
    [8, 'three\nfour\n'], // overlaps what is stored: only the new part
    [30, 'six\n'], // bytes 19 to 29 never arrived
  ] as const)
    t.is((await chunk(offset, text)).status, 204, `chunk at ${offset}`);
  for (const bad of ['-1', '1e3', 'x', '9999999999999999', '1&offset=2'])
    t.like(await (await chunk(bad, 'no\n')).json(), { code: 'invalid_parameter' }, `offset ${bad} refused`);
  t.true(existsSync(path.join(api.dataDir, 'runs', `${made.id}.received`)), 'how much arrived is kept beside the log while the run goes on');
  t.is((await post(`/v1/runner/runs/${made.id}/finished`, JSON.stringify({ runner: 'runner-chunks', outcome: 'passed', exitCode: 0 }))).status, 204);
  t.false(existsSync(path.join(api.dataDir, 'runs', `${made.id}.received`)), 'and goes once the run ended');
  t.is((await chunk(40, 'late\n')).status, 409, 'an ended run takes no more output');
  const sink = textSink();
  await admin.jobs.log(made.id, sink);
  // Between the API's own notes: the output as the runner host sent it, once.
  const output = /^paddock: taken by runner host runner-chunks\n([^]*)paddock: run passed; exit code 0\n$/m.exec(sink.text)?.[1];
  t.is(output, "one\ntwo\nthree\nfour\n\npaddock: 11 bytes of the runner host's output never arrived here\nsix\n", sink.text);
});
