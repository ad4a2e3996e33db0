// Lab hosts on other computers: static machines on two lab hosts (real sshd hosts), each served by
// its own `paddock agent --name lab-a|lab-b` process with its own agent token, and an API whose
// embedded agent is off. Each agent provisions only its machines and cannot speak for the other's;
// a lab host killed with -9 goes silent and its machines offline (a ready reservation goes on,
// flagged; new requests queue or go to the other lab host; a release waits) until its agent comes
// back.
import { mkdtempSync, rmSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import test from 'ava';
import { Paddock } from '../../client/index.js';
import type { AgentTask, AgentView, MachineView, ReservationView } from '../../protocol/api.js';
import { startApi, staticMachinesYaml, testConfig, type JsonClient, type TestApi } from '../helpers/api.js';
import { killHard, runPaddock, startAgentProcess, stopGracefully, type AgentProcess } from '../helpers/server.js';
import { startSshd, type TestSshd } from '../helpers/sshd.js';
import { waitFor } from '../helpers/wait.js';

let api: TestApi;
let hosts: Record<'a1' | 'a2' | 'b1', TestSshd>;
let admin: Paddock;
let userToken: string;
let dir: string;
const agentTokens: Record<string, string> = {};
const agents: Record<string, AgentProcess> = {};

test.before(async () => {
  const [a1, a2, b1] = await Promise.all([startSshd(), startSshd(), startSshd()]);
  hosts = { a1, a2, b1 };
  dir = mkdtempSync(path.join(os.tmpdir(), 'paddock-lab-hosts-test-'));
  const machine = (name: 'a1' | 'a2' | 'b1') => ({
    name,
    labHost: `lab-${name[0]}`,
    port: hosts[name].port,
    adminKeyPath: hosts[name].adminKey.path,
    authorizedKeysFile: hosts[name].authorizedKeysFile,
    labels: { type: 'static-host', lab: name[0] },
  });
  // A short heartbeat timeout, so a killed agent's machines go offline soon (waited for, never timed).
  const yaml = `agent: { enabled: false }\nagents: { heartbeatTimeout: 4s }\n${staticMachinesYaml([machine('a1'), machine('a2'), machine('b1')])}`;
  api = await startApi(testConfig(yaml));
  admin = new Paddock({ url: api.url, token: api.adminToken });
  userToken = (await admin.createToken('dora', 'user')).token;
  for (const name of ['lab-a', 'lab-b']) agentTokens[name] = (await admin.createToken(name, 'agent')).token;
});

test.after.always(async () => {
  for (const agent of Object.values(agents)) await stopGracefully(agent.child);
  await api?.close();
  await Promise.all(Object.values(hosts ?? {}).map((host) => host.stop()));
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** `paddock agent --name NAME` as its own process, with its own token and data. */
function startAgent(name: string): void {
  agents[name] = startAgentProcess({ url: api.url, name, token: agentTokens[name], dir, args: ['--kinds', 'static'] });
}

const paddock = (args: string[], token: string) => runPaddock(api.url, token, args);

/** Until the agent's claims are heard (it took longer than the heartbeat timeout to start, its lab host may have gone silent before). */
const heard = (name: string) =>
  waitFor(
    async () => {
      const agent = (await admin.agents()).find((each) => each.name === name);
      return agent?.state === 'online' && agent.lastHeard !== undefined;
    },
    300_000,
    `agent ${name} heard`,
  );

const machine = async (name: string) => (await api.http().get(`v1/machines/${name}`)).body as MachineView;
const reservationOf = async (http: JsonClient, id: string) => (await http.get(`v1/reservations/${id}`)).body as ReservationView;

test.serial('each agent provisions only the machines of its own lab host', async (t) => {
  startAgent('lab-a');
  startAgent('lab-b');
  await Promise.all([heard('lab-a'), heard('lab-b')]);
  const user = new Paddock({ url: api.url, token: userToken });
  const onA = await user.reserve({ members: [{ role: 'main', spec: 'lab=a', count: 2 }], lease: '10m' }, { renew: false });
  const onB = await user.reserve({ members: [{ role: 'main', spec: 'lab=b' }], lease: '10m' }, { renew: false });
  await Promise.all([onA.ready({ timeout: 300 }), onB.ready({ timeout: 300 })]);
  t.deepEqual(
    onA.view.allocations.map((allocation) => allocation.machine),
    ['a1', 'a2'],
  );
  t.is(onB.view.allocations[0].machine, 'b1');
  // Which agent did the work: each logs the machines it made ready (just after it reported them).
  await waitFor(
    async () => /"machine":"a1".*"msg":"ready"/.test(agents['lab-a'].stderr()) && /"machine":"a2".*"msg":"ready"/.test(agents['lab-a'].stderr()),
    60_000,
    'logged',
  );
  await waitFor(async () => /"machine":"b1".*"msg":"ready"/.test(agents['lab-b'].stderr()), 60_000, 'logged');
  t.regex(agents['lab-a'].stderr(), /"machine":"a1".*"msg":"ready"/);
  t.regex(agents['lab-a'].stderr(), /"machine":"a2".*"msg":"ready"/);
  t.notRegex(agents['lab-a'].stderr(), /"machine":"b1"/);
  t.regex(agents['lab-b'].stderr(), /"machine":"b1".*"msg":"ready"/);
  t.notRegex(agents['lab-b'].stderr(), /"machine":"a[12]"/);

  // A hostile lab-a, with its real token: it cannot report on lab-b's allocation, in either name,
  // nor claim in lab-b's name, nor list or claim lab-b's machines.
  const labA = api.http(agentTokens['lab-a']);
  const allocation = onB.view.allocations[0].id;
  const forgedReady = { kind: 'ready', host: '10.6.6.6', port: 22, user: 'root', hostKey: 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEvil evil' };
  for (const report of [forgedReady, { kind: 'released' }, { kind: 'failed', reason: 'x', fault: 'infrastructure', code: 'machine_lost' }]) {
    const own = await labA.post(`v1/agent/tasks/${encodeURIComponent(allocation)}/report`, { json: { agent: 'lab-a', report } });
    t.is(own.statusCode, 403, JSON.stringify(own.body));
    t.is((own.body as { code: string }).code, 'not_your_task');
    const spoofed = await labA.post(`v1/agent/tasks/${encodeURIComponent(allocation)}/report`, { json: { agent: 'lab-b', report } });
    t.is(spoofed.statusCode, 403, JSON.stringify(spoofed.body));
  }
  t.is((await labA.post('v1/agent/claim', { json: { agent: 'lab-b', kinds: ['static'] } })).statusCode, 403);
  const claimed = await labA.post('v1/agent/claim', { json: { agent: 'lab-a', kinds: ['static'], wait: 0 } });
  t.is(claimed.statusCode, 200);
  t.false(
    (claimed.body as { tasks: AgentTask[] }).tasks.some((task) => task.machine.name === 'b1'),
    'no task of lab-b',
  );
  t.deepEqual(
    ((await labA.get('v1/agent/machines', { searchParams: { kinds: 'static' } })).body as { name: string }[]).map((each) => each.name),
    ['a1', 'a2'],
  );
  t.is((await labA.get('v1/agent/machines', { searchParams: { kinds: 'static', agent: 'lab-b' } })).statusCode, 403);
  const still = await reservationOf(api.http(userToken), onB.id);
  t.is(still.state, 'ready');
  t.is(still.allocations[0].host, '127.0.0.1', 'no forged address reached the owner');

  await Promise.all([onA.release(), onB.release()]);
  await waitFor(async () => (await onA.refresh()).state === 'released' && (await onB.refresh()).state === 'released', 300_000, 'released');
});

test.serial(
  'a lab host killed with -9 goes silent: its machines go offline, a ready reservation goes on flagged, and all comes back with the agent',
  async (t) => {
    const user = new Paddock({ url: api.url, token: userToken });
    const http = api.http(userToken);
    const held = await user.reserve({ members: [{ role: 'main', spec: 'lab=a' }], lease: '10m' }, { renew: false });
    await held.ready({ timeout: 300 });
    t.is(held.view.allocations[0].machine, 'a1');

    await killHard(agents['lab-a'].child);
    // Granted before the API noticed: nobody takes it, and it fails as the infrastructure's fault.
    const early = await user.reserve({ members: [{ role: 'main', spec: 'lab=a' }], lease: '10m' }, { renew: false });
    await waitFor(async () => (await machine('a2')).state === 'offline' && (await machine('a1')).state === 'offline', 300_000, 'lab-a offline');
    const a1 = await machine('a1');
    t.is(a1.labHost, 'lab-a');
    t.truthy(a1.offlineSince);
    t.regex(a1.reason ?? '', /lab host lab-a is silent/);
    t.is((await machine('b1')).state, 'available', "lab-b's machine is not touched");
    if (early.view.state === 'allocated') {
      await waitFor(async () => (await early.refresh()).state === 'failed', 300_000, 'the early request failed');
      t.is(early.view.allocations[0].failure?.code, 'lab_host_offline');
      t.is(early.view.allocations[0].failure?.fault, 'infrastructure');
      t.is((await machine('a2')).failures, 0, 'not counted against the machine');
    } else {
      await early.release(); // the API noticed first: it queued, and is not needed
    }

    // The ready reservation goes on, flagged; new requests for lab-a queue, others go to lab-b.
    await waitFor(async () => (await reservationOf(http, held.id)).allocations[0].labHostSilentSince !== undefined, 300_000, 'flagged');
    const flagged = await reservationOf(http, held.id);
    t.is(flagged.state, 'ready');
    const queued = await user.reserve({ members: [{ role: 'main', spec: 'lab=a' }], lease: '10m' }, { renew: false });
    t.is(queued.view.state, 'queued');
    const elsewhere = await user.reserve({ members: [{ role: 'main', spec: 'type=static-host' }], lease: '10m' }, { renew: false });
    await elsewhere.ready({ timeout: 300 });
    t.is(elsewhere.view.allocations[0].machine, 'b1');
    t.is((await queued.refresh()).state, 'queued');

    const listing = await paddock(['machines', 'ls'], userToken);
    t.regex(listing.stdout, /a2\s+static\s+offline\s+lab-a/);
    t.regex(listing.stdout, /a2: offline since \d{4}-\d\d-\d\dT[\d:.]+Z: its lab host lab-a is silent/);

    // agents ls: admins only; both agents with last heard and machines.
    const denied = await paddock(['agents', 'ls'], userToken);
    t.is(denied.code, 1);
    t.regex(denied.stderr, /\(forbidden\)/);
    t.is((await http.get('v1/agents')).statusCode, 403);
    const shown = await paddock(['agents', 'ls', '--json'], api.adminToken);
    t.is(shown.code, 0, shown.stderr);
    const list = JSON.parse(shown.stdout) as AgentView[];
    t.deepEqual(
      list.map((agent) => [agent.name, agent.state, agent.machines]),
      [
        ['lab-a', 'silent', ['a1', 'a2']],
        ['lab-b', 'online', ['b1']],
      ],
    );
    for (const agent of list) {
      t.truthy(agent.lastHeard, `${agent.name} was heard`);
      t.is(agent.version, '0.1.0');
      t.deepEqual(agent.warnings, [], `${agent.name}: same version, clock on time`);
    }
    t.truthy(list[0].silentSince);
    const table = await paddock(['agents', 'ls'], api.adminToken);
    t.regex(table.stdout, /lab-a\s+silent\s+0\.1\.0\s+\S+\s+a1,a2/);

    // Its owner releases the ready reservation while lab-a is silent: nothing can undo the
    // reservation's work on a1 meanwhile, so the release waits for lab-a's agent.
    await held.release();
    await waitFor(async () => (await reservationOf(http, held.id)).state === 'releasing', 300_000, 'releasing');
    t.is((await reservationOf(http, held.id)).allocations[0].state, 'releasing');
    t.is((await machine('a1')).state, 'offline');
    const keys = () => readFile(hosts.a1.authorizedKeysFile, 'utf8').catch(() => '');
    t.regex(await keys(), new RegExp(`paddock:${held.id}`), "the reservation's key is still on a1");

    // lab-a comes back: its machines return to what they were, the queued request gets a2, and the
    // release asked meanwhile completes (the key is gone from a1's tenant).
    startAgent('lab-a');
    await queued.ready({ timeout: 300 });
    t.is(queued.view.allocations[0].machine, 'a2');
    await waitFor(async () => (await held.refresh()).state === 'released', 300_000, 'the release asked while silent');
    const unflagged = await reservationOf(http, held.id);
    t.is(unflagged.allocations[0].state, 'released');
    t.is(unflagged.allocations[0].labHostSilentSince, undefined);
    t.notRegex(await keys(), new RegExp(`paddock:${held.id}`));
    const back = (await admin.agents()).find((agent) => agent.name === 'lab-a')!;
    t.is(back.state, 'online');
    t.is(back.silentSince, undefined);

    await Promise.all([queued.release(), elsewhere.release()]);
    await waitFor(
      async () => (await Promise.all([queued, elsewhere].map((each) => each.refresh()))).every((view) => view.state === 'released'),
      300_000,
      'released',
    );
    t.deepEqual(
      (await admin.machines()).map((each) => [each.name, each.state]),
      [
        ['a1', 'available'],
        ['a2', 'available'],
        ['b1', 'available'],
      ],
    );
  },
);
