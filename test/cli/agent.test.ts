// `paddock agent --name NAME` as a lab admin starts it: its own process, dialling out to an API that
// runs no embedded agent, with a token of role agent. It provisions a real sshd host and releases
// it, and goes on with its second API URL when the first dies; tokens that are not its own are
// refused before it takes any work.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import test from 'ava';
import { Paddock } from '../../client/index.js';
import { startApi, staticMachinesYaml, testConfig, type TestApi } from '../helpers/api.js';
import { startRelay } from '../helpers/follower.js';
import { stopGracefully } from '../helpers/server.js';
import { startSshd, type TestSshd } from '../helpers/sshd.js';
import { waitFor } from '../helpers/wait.js';
import { scrape, value } from '../helpers/metrics.js';
import { freePort } from '../helpers/ports.js';

const bin = path.resolve('bin/paddock.js');
let api: TestApi;
let host: TestSshd;
let admin: Paddock;
let dir: string;

test.before(async () => {
  host = await startSshd();
  dir = mkdtempSync(path.join(os.tmpdir(), 'paddock-agent-test-'));
  const yaml = `agent: { enabled: false }\n${staticMachinesYaml([{ name: 'lab-host-1', labHost: 'lab-1', port: host.port, adminKeyPath: host.adminKey.path, authorizedKeysFile: host.authorizedKeysFile }])}`;
  api = await startApi(testConfig(yaml));
  admin = new Paddock({ url: api.url, token: api.adminToken });
});

test.after.always(async () => {
  await api?.close();
  await host?.stop();
  rmSync(dir, { recursive: true, force: true });
});

/** `paddock agent` run to its end (for the refusals). */
function agentExits(args: string[], token: string | undefined): Promise<{ code: number | null; stderr: string }> {
  const env: NodeJS.ProcessEnv = { ...process.env, PADDOCK_URL: api.url };
  if (token === undefined) delete env.PADDOCK_TOKEN;
  else env.PADDOCK_TOKEN = token;
  return new Promise((resolve) => {
    execFile(process.execPath, [bin, 'agent', ...args], { env, timeout: 120_000 }, (error, _stdout, stderr) =>
      resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stderr }),
    );
  });
}

test.serial('an agent started on its own provisions and releases its machine; the reservation sees every stage', async (t) => {
  const token = (await admin.createToken('lab-1', 'agent')).token;
  const tokenFile = path.join(dir, 'agent-token');
  writeFileSync(tokenFile, `${token}\n`, { mode: 0o600 });
  const user = new Paddock({ url: api.url, token: (await admin.createToken('dora', 'user')).token });

  // No agent yet: the request is granted, but nothing provisions it.
  const reservation = await user.reserve({ members: [{ role: 'main', spec: 'static-host' }], lease: '10m' }, { renew: false });
  const env: NodeJS.ProcessEnv = { ...process.env, PADDOCK_URL: api.url };
  delete env.PADDOCK_TOKEN;
  const metricsPort = await freePort();
  const agent: ChildProcess = spawn(
    process.execPath,
    [
      bin,
      'agent',
      '--name',
      'lab-1',
      '--token-file',
      tokenFile,
      '--data',
      path.join(dir, 'data'),
      '--kinds',
      'static',
      '--metrics-listen',
      `127.0.0.1:${metricsPort}`,
    ],
    {
      env,
      stdio: ['ignore', 'ignore', 'pipe'],
    },
  );
  let stderr = '';
  agent.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  try {
    await reservation.ready({ timeout: 300 });
    const [allocation] = reservation.view.allocations;
    t.is(allocation.machine, 'lab-host-1');
    t.truthy(allocation.stages.sshReady, 'the agent logged in over SSH');
    t.regex(readFileSync(host.authorizedKeysFile, 'utf8'), new RegExp(`paddock:${reservation.id}`), 'the key is installed on the host');
    await reservation.release();
    await waitFor(async () => (await reservation.refresh()).state === 'released', 120_000, 'released');
    t.notRegex(readFileSync(host.authorizedKeysFile, 'utf8'), new RegExp(`paddock:${reservation.id}`), 'the key is removed on release');
    t.regex(stderr, /"agent":"lab-1","url":"http:\/\/127\.0\.0\.1:\d+","kinds":\["static"\].*"msg":"pulling work"/);
    t.false(stderr.includes(token), 'the token is never printed');
    // Its own metrics listener counts the reports it sent: every stage, ready and released.
    const metrics = await scrape(`http://127.0.0.1:${metricsPort}/metrics`);
    t.is(value(metrics, 'paddock_agent_reports_total', { report: 'ready', code: 'none' }), 1, metrics);
    t.is(value(metrics, 'paddock_agent_reports_total', { report: 'released', code: 'none' }), 1);
    t.true(value(metrics, 'paddock_agent_reports_total', { report: 'stage', code: 'none' }) >= 1);
    t.true(value(metrics, 'process_resident_memory_bytes') > 0, "the process's own metrics");
    t.false(metrics.includes(reservation.id), 'no reservation id in it');
  } finally {
    await stopGracefully(agent);
  }
  t.regex(stderr, /"signal":"SIGTERM","msg":"stopping"/);
});

test.serial('an agent given two API URLs keeps taking work when the first dies, without a restart', async (t) => {
  // The first URL is a relay to the API standing for a second API server; it is killed midway.
  const relay = await startRelay(api.url);
  // lab-1's token: made by the test before, or here when this test runs alone.
  const token = (await admin.rotateToken('lab-1').catch(() => admin.createToken('lab-1', 'agent'))).token;
  const env: NodeJS.ProcessEnv = { ...process.env, PADDOCK_URL: `${relay.url},${api.url}`, PADDOCK_TOKEN: token };
  const agent: ChildProcess = spawn(process.execPath, [bin, 'agent', '--name', 'lab-1', '--data', path.join(dir, 'failover'), '--kinds', 'static'], {
    env,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  agent.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const user = new Paddock({ url: api.url, token: (await admin.createToken('gus', 'user')).token });
  const roundTrip = async () => {
    const reservation = await user.reserve({ members: [{ role: 'main', spec: 'static-host' }], lease: '10m' }, { renew: false });
    await reservation.ready({ timeout: 120 });
    await reservation.release();
    await waitFor(async () => (await reservation.refresh()).state === 'released', 120_000, 'released');
    return reservation.view.allocations[0]!.stages.sshReady;
  };
  try {
    t.truthy(await roundTrip(), `provisioned through the first URL: ${stderr}`);
    t.true(relay.connections() > 0, 'the agent spoke to the first URL');
    t.regex(stderr, new RegExp(`"url":"${relay.url}, ${api.url}".*"msg":"pulling work"`), 'both servers named in its log');
    await relay.kill();
    // The claim the relay carried was waiting in this same API: let it see the hang-up before the
    // next task is made, as a server that really died takes its waiting claims with it.
    await waitFor(async () => /"component":"agent".*"msg":"claim failed; retrying"/.test(stderr), 30_000, 'the claim cut');
    await new Promise((resolve) => setTimeout(resolve, 1000));
    t.truthy(await roundTrip(), `provisioned after the first URL died: ${stderr}`);
    t.is(agent.exitCode, null, 'the same agent process, not restarted');
  } finally {
    await stopGracefully(agent);
  }
});

test.serial("tokens that are not the agent's own are refused before any work is taken", async (t) => {
  const userToken = (await admin.createToken('erin', 'user')).token;
  const asUser = await agentExits(['--name', 'erin', '--data', path.join(dir, 'u')], userToken);
  t.is(asUser.code, 1);
  t.regex(asUser.stderr, /an agent needs a token of role agent; this one is user .*\(forbidden\)/);
  t.false(asUser.stderr.includes(userToken));

  const otherAgent = (await admin.createToken('lab-2', 'agent')).token;
  const wrongName = await agentExits(['--name', 'lab-9', '--data', path.join(dir, 'w')], otherAgent);
  t.is(wrongName.code, 1);
  t.regex(wrongName.stderr, /this token is for agent lab-2, not lab-9.*\(forbidden\)/);

  const none = await agentExits(['--name', 'lab-2', '--data', path.join(dir, 'n')], undefined);
  t.is(none.code, 1);
  t.regex(none.stderr, /no token: give --token-file FILE.*\(configuration\)/);

  const forged = await agentExits(['--name', 'lab-2', '--data', path.join(dir, 'f')], 'not-a-token');
  t.is(forged.code, 1);
  t.regex(forged.stderr, /unknown or revoked token \(unauthorized\)/);
  t.false(forged.stderr.includes('not-a-token'));

  const badKind = await agentExits(['--name', 'lab-2', '--kinds', 'static,../../etc', '--data', path.join(dir, 'k')], otherAgent);
  t.is(badKind.code, 1);
  t.regex(badKind.stderr, /unknown kind \.\.\/\.\.\/etc; the kinds are/);
});

test.serial('a --concurrency that is not a whole number from 1 to 256 is a usage error (exit 2) before the agent starts', async (t) => {
  const token = (await admin.createToken('lab-3', 'agent')).token;
  for (const value of ['0', '-1', 'x', '1.5', '257', '99999999999999999999']) {
    const bad = await agentExits(['--name', 'lab-3', '--data', path.join(dir, 'c'), '--concurrency', value], token);
    t.is(bad.code, 2, value);
    t.regex(bad.stderr, new RegExp(`"${value.replace('.', '\\.')}" is not valid: --concurrency is a whole number from 1 to 256 \\(usage\\)\\n$`), value);
    t.notRegex(bad.stderr, /\n\s+at /, `${value}: no stack trace`);
  }
  for (const address of ['nowhere', '127.0.0.1:99999', ':7301']) {
    const bad = await agentExits(['--name', 'lab-3', '--data', path.join(dir, 'c'), '--metrics-listen', address], token);
    t.is(bad.code, 2, address);
    t.regex(bad.stderr, /paddock: --metrics-listen: host:port, e\.g\. 127\.0\.0\.1:7301 \(usage\)\n$/, address);
  }
  // The bound itself is taken: this run gets past the option and is refused for its token instead.
  const userToken = (await admin.createToken('fay', 'user')).token;
  const atBound = await agentExits(['--name', 'fay', '--data', path.join(dir, 'c'), '--concurrency', '256'], userToken);
  t.is(atBound.code, 1);
  t.regex(atBound.stderr, /an agent needs a token of role agent.*\(forbidden\)/);
});
