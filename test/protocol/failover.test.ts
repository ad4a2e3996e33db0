// A list of API servers (protocol/failover.ts) as plain data, and the pull worker of agents and
// runner hosts given one: a follower's redirect followed with the worker's token to the leader it
// names (and nowhere else), the leader kept as the base. The leader is a real API; the followers
// are stand-ins speaking the protocol a follower will speak (test/helpers/follower.ts).
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import test from 'ava';
import { Paddock } from '../../client/index.js';
import { failoverPause, failureKind, FailoverError, parseServerUrls, Servers, shownUrl } from '../../protocol/failover.js';
import type { RunTask } from '../../protocol/runner.js';
import { PullWorker } from '../../protocol/worker.js';
import { startApi, testConfig, type TestApi } from '../helpers/api.js';
import { follower, startStandIn, type StandIn } from '../helpers/follower.js';
import { jobRepository } from '../helpers/lab-config.js';
import { captureLog } from '../helpers/log.js';
import { waitFor } from '../helpers/wait.js';

test('a list: each URL checked and kept as written, one URL a list of one', (t) => {
  t.deepEqual(parseServerUrls('http://a:7300'), ['http://a:7300']);
  t.deepEqual(parseServerUrls(' http://a:7300/ , https://u:p@b/paddock/,'), ['http://a:7300', 'https://u:p@b/paddock']);
  for (const [list, message] of [
    ['', /names no server/],
    ['http://a,ftp://b', /must be http or https, not ftp:/],
    ['http://a,b:7300', /must be http or https, not b:/],
    ['http://a,nonsense', /not a URL: "nonsense"/],
    ['http://a,http://u:secret@[x', /^not a URL: \(PADDOCK_URL/],
  ] as const) {
    const error = t.throws(() => parseServerUrls(list), { instanceOf: FailoverError, message }, list);
    t.is(error.code, 'configuration');
    t.false(error.message.includes('secret'));
  }
  t.is(shownUrl('https://u:secret@b:8443/paddock/'), 'https://b:8443/paddock');
});

test('which failures may be sent elsewhere, and the pauses between tries', (t) => {
  for (const [error, kind] of [
    [{ code: 'ECONNREFUSED' }, 'never-sent'],
    [{ code: 'ENOTFOUND' }, 'never-sent'],
    [{ code: 'ETIMEDOUT', event: 'connect' }, 'never-sent'],
    [{ code: 'ETIMEDOUT', event: 'request' }, 'broken'],
    [{ code: 'ECONNRESET' }, 'broken'],
    [{ code: 'EPIPE' }, 'broken'],
    [{ code: 'ERR_NON_2XX_3XX_RESPONSE' }, undefined],
    [new Error('no code'), undefined],
  ] as const) {
    t.is(failureKind(error), kind, JSON.stringify(error));
  }
  t.deepEqual([1, 2, 3, 4, 5, 6, 20].map(failoverPause), [200, 400, 800, 1600, 2000, 2000, 2000]);
});

test('the leader a follower names: one of the list is taken as written; another is kept apart and forgotten when it fails', (t) => {
  const servers = new Servers('http://u:p@a:7300,http://b:7300');
  t.is(servers.current, 'http://u:p@a:7300');
  t.is(servers.shown, 'http://a:7300, http://b:7300');
  t.is(servers.followLeader('http://b:7300'), 'http://b:7300');
  t.is(servers.followLeader('http://a:7300/'), 'http://u:p@a:7300', 'our own URL, with its user:password');
  t.is(servers.followLeader('http://c:7300'), 'http://c:7300');
  servers.failed('http://c:7300');
  t.is(servers.current, 'http://u:p@a:7300', 'a leader from elsewhere that fails is forgotten');
  servers.failed('http://u:p@a:7300');
  t.is(servers.current, 'http://b:7300', 'round robin');
  servers.failed('http://u:p@a:7300');
  t.is(servers.current, 'http://b:7300', 'a failure of a server left already moves nothing');
  for (const bad of ['file:///etc/passwd', 'not a url', '', undefined]) {
    t.throws(() => servers.followLeader(bad), { instanceOf: FailoverError, message: /named a leader that is not an http\(s\) URL/ });
  }
});

let api: TestApi;
let scratch: string;
const standIns: StandIn[] = [];

test.before(async () => {
  scratch = mkdtempSync(path.join(os.tmpdir(), 'paddock-worker-failover-'));
  api = await startApi(testConfig(`machines: []\nrepositories: { localRoots: [${JSON.stringify(scratch)}] }\n`));
  const repo = jobRepository(scratch);
  await new Paddock({ url: api.url, token: api.adminToken }).jobs.add({ name: 'noop', repository: repo, script: 'ci.sh' });
});

test.after.always(async () => {
  await Promise.all(standIns.map((each) => each.close()));
  await api?.close();
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

function worker(url: string, token: string, name: string, logs: string[], onTask: (task: RunTask) => void): PullWorker<RunTask> {
  return new PullWorker<RunTask>({
    url,
    token,
    claimPath: 'v1/runner/claim',
    claimBody: (first) => ({ runner: name, slots: 1, fresh: first, wait: 1 }),
    tasksOf: (answer) => (answer as { runs: RunTask[] }).runs,
    onTask,
    log: captureLog(logs, 'runner'),
  });
}

test.serial("the pull worker follows a follower's redirect with its token, claims from the leader, and keeps it as its base", async (t) => {
  const admin = new Paddock({ url: api.url, token: api.adminToken });
  const token = (await admin.createToken('runner-redirect', 'runner')).token;
  const follows = await startStandIn(follower(api.url));
  standIns.push(follows);
  const logs: string[] = [];
  const claimed: RunTask[] = [];
  const pull = worker(follows.url, token, 'runner-redirect', logs, (task) => claimed.push(task));
  const run = await admin.jobs.run('noop');
  pull.start();
  try {
    await waitFor(async () => claimed.length > 0, 30_000, 'the run claimed');
    t.is(claimed[0]!.id, run.id);
    t.is(pull.base, api.url, 'the leader the follower named is the base now');
    t.deepEqual(
      follows.seen.map((each) => `${each.method} ${each.path} ${each.authorization === `Bearer ${token}`}`),
      ['POST /v1/runner/claim true'],
      'one claim reached the follower; the next went straight to the leader',
    );
    t.false(
      logs.some((line) => /claim failed/.test(line)),
      logs.join('\n'),
    );
  } finally {
    await pull.stop();
  }
});

test.serial('a follower redirecting elsewhere than the leader it names gets no token sent there', async (t) => {
  const token = (await new Paddock({ url: api.url, token: api.adminToken }).createToken('runner-hostile', 'runner')).token;
  const elsewhere = await startStandIn(() => ({ status: 200, body: { runs: [] } }));
  // Location at another server than the Paddock-Leader it names.
  const hostile = await startStandIn((request) => ({
    status: 307,
    headers: { location: `${elsewhere.url}${request.path}`, 'paddock-leader': api.url },
    body: { code: 'not_leader', message: 'follows' },
  }));
  standIns.push(elsewhere, hostile);
  const logs: string[] = [];
  const pull = worker(hostile.url, token, 'runner-hostile', logs, () => undefined);
  pull.start();
  try {
    await waitFor(async () => logs.some((line) => /claim failed/.test(line)), 30_000, 'the claim refused');
    t.regex(
      logs.find((line) => /claim failed/.test(line))!,
      /"error":"HTTP 307 \(invalid_redirect\)"/,
    );
    t.deepEqual(elsewhere.seen, [], 'nothing, and no token, went to the other server');
  } finally {
    await pull.stop();
  }
});
