// Qualification before service on real static hosts (a test sshd): a machine seen for the first time
// boots `boots` times with the check command before anyone gets it; one that fails too often is
// quarantined with the failures' codes and stages, and qualifies again once activated; a restart
// goes on with a qualification where it was.
import { execFile } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import test, { type ExecutionContext } from 'ava';
import type { MachineView, ReservationView } from '../../protocol/api.js';
import { startApi, staticHostOn, staticMachinesYaml, testConfig, type TestApi } from '../helpers/api.js';
import { configProblems } from '../helpers/config.js';
import { startSshd, type TestSshd } from '../helpers/sshd.js';
import { waitFor } from '../helpers/wait.js';

/**
 * A folder the host's login can write: the check counts its runs in `count` and fails the runs
 * listed in `fails` (space-separated numbers), saying which.
 */
function checkScratch(t: ExecutionContext): { dir: string; check: string; runs: () => number; failOn: (runs: number[]) => void } {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'paddock-qualify-'));
  chmodSync(dir, 0o777);
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const failOn = (runs: number[]) => {
    writeFileSync(path.join(dir, 'fails'), ` ${runs.join(' ')} `);
    chmodSync(path.join(dir, 'fails'), 0o666);
  };
  failOn([]);
  const check =
    `n=$(( $(cat ${dir}/count 2>/dev/null || echo 0) + 1 )); echo $n > ${dir}/count; ` +
    `case "$(cat ${dir}/fails)" in *" $n "*) echo "run $n: the check fails" >&2; exit 3;; esac`;
  const runs = () => {
    try {
      return Number(readFileSync(path.join(dir, 'count'), 'utf8'));
    } catch {
      return 0;
    }
  };
  return { dir, check, runs, failOn };
}

function qualifyingHostYaml(sshd: TestSshd, qualify: string): string {
  return `${staticMachinesYaml([staticHostOn(sshd, 'fresh-1')])}\n    qualify: ${qualify}\n`;
}

/** `paddock ARGS` against the API, as an admin at a terminal would run it. */
function paddock(api: TestApi, args: string[]): Promise<string> {
  const env = { ...process.env, PADDOCK_URL: api.url, PADDOCK_TOKEN: api.adminToken, PADDOCK_FROM_SOURCE: '1' };
  return new Promise((resolve, reject) =>
    execFile(process.execPath, [path.resolve('bin/paddock.js'), ...args], { env }, (error, stdout) => (error ? reject(error) : resolve(stdout))),
  );
}

async function machine(api: TestApi, name = 'fresh-1'): Promise<MachineView> {
  return (await api.http().get(`v1/machines/${name}`)).body as MachineView;
}

async function reachesState(api: TestApi, state: MachineView['state'], timeoutMs = 240_000): Promise<MachineView> {
  await waitFor(async () => (await machine(api)).state === state, timeoutMs, `machine state ${state}`);
  return machine(api);
}

test('a machine seen for the first time qualifies before it serves anyone: 4 of 5 boots with one failure pass', async (t) => {
  const sshd = await startSshd();
  t.teardown(() => sshd.stop());
  const scratch = checkScratch(t);
  scratch.failOn([3]);
  const api = await startApi(testConfig(qualifyingHostYaml(sshd, JSON.stringify({ check: scratch.check, boots: 5, pass: 4 }))));
  t.teardown(() => api.close());

  t.is((await machine(api)).state, 'qualifying');
  const user = (await api.http().post('v1/reservations', { json: { members: [{ role: 'main', spec: 'static-host' }] } })).body as ReservationView;
  t.is(user.state, 'queued', 'a qualifying machine is not handed out');

  // Once qualified, the machine goes to the request that waited for it.
  await waitFor(async () => (await machine(api)).qualification?.state !== 'running', 240_000, 'the qualification ended');
  const done = await machine(api);
  const qualification = done.qualification!;
  t.like(qualification, { state: 'passed', boots: 5, needed: 4, passed: 4, failed: 1 });
  t.is(qualification.failures.length, 1);
  t.like(qualification.failures[0], { code: 'check_failed', stage: 'probed' });
  t.regex(qualification.failures[0].reason, /exited 3: run 3: the check fails/);
  t.is(scratch.runs(), 5, 'the check ran once per boot');

  // Each boot was a reservation of paddock's, and the user's request was granted only after the last.
  const all = (await api.http().get('v1/reservations', { searchParams: { all: 1, ended: 1, limit: 100 } })).body as ReservationView[];
  const boots = all.filter((reservation) => reservation.owner === 'paddock');
  t.is(boots.length, 5);
  t.is(boots.filter((reservation) => reservation.state === 'failed').length, 1);
  const ready = (await api.http().get(`v1/reservations/${user.id}`, { searchParams: { wait: 'ready', timeout: 60 } })).body as ReservationView;
  t.is(ready.state, 'ready');
  t.true(Date.parse(ready.grantedAt!) >= Date.parse(qualification.endedAt!), 'granted after the qualification ended');
  await api.http().delete(`v1/reservations/${user.id}`);
});

test('a machine that fails too often is quarantined with the failures, and qualifies again once activated', async (t) => {
  const sshd = await startSshd();
  t.teardown(() => sshd.stop());
  const scratch = checkScratch(t);
  scratch.failOn([2, 3]);
  const api = await startApi(testConfig(qualifyingHostYaml(sshd, JSON.stringify({ check: scratch.check, boots: 4, pass: 3 }))));
  t.teardown(() => api.close());

  const quarantined = await reachesState(api, 'quarantined');
  t.is(scratch.runs(), 3, 'it stops as soon as 3 of 4 can no longer pass');
  t.like(quarantined.qualification, { state: 'failed', passed: 1, failed: 2, boots: 4, needed: 3 });
  t.regex(quarantined.reason ?? '', /^failed qualification: 1 of 3 boots passed, 3 of 4 needed; failures: check_failed at probed, check_failed at probed$/);

  const shown = await paddock(api, ['machines', 'show', 'fresh-1']);
  t.regex(shown, /^fresh-1 {2}static {2}quarantined/);
  t.regex(shown, /\nqualification failed at \S+: 1 passed, 2 failed of at most 4 boots \(3 needed\); 1 of 3 boots passed, 3 of 4 needed\n/);
  t.regex(shown, /\n {2}failed boot r-[0-9a-f]+: check_failed at probed: qualification check exited 3: run 2: the check fails\n/);

  // Repaired: an admin activates it, and it qualifies again before it is available.
  scratch.failOn([]);
  const activated = (await api.http().post('v1/machines/fresh-1/activate')).body as MachineView;
  t.is(activated.state, 'qualifying');
  const passed = await reachesState(api, 'available');
  t.like(passed.qualification, { state: 'passed', passed: 3, failed: 0 });
  t.is(scratch.runs(), 6, 'three more boots: the outcome is certain after three passes');
});

test('a restart goes on with a qualification where it was', async (t) => {
  const sshd = await startSshd();
  t.teardown(() => sshd.stop());
  const scratch = checkScratch(t);
  const yaml = qualifyingHostYaml(sshd, JSON.stringify({ check: scratch.check, boots: 4, pass: 4 }));
  const first = testConfig(yaml);
  const api = await startApi(first);
  let closed = false;
  t.teardown(async () => {
    if (!closed) await api.server.close();
  });
  await waitFor(async () => ((await machine(api)).qualification?.passed ?? 0) >= 2, 120_000, 'two boots passed');
  await api.server.close();
  closed = true;
  const before = scratch.runs();

  const again = await startApi(testConfig(yaml, first.dataDir));
  t.teardown(() => again.close());
  const resumed = await machine(again);
  t.is(resumed.state, 'qualifying');
  t.true(resumed.qualification!.passed >= 2, 'the boots passed before the restart still count');
  const passed = await reachesState(again, 'available');
  t.like(passed.qualification, { state: 'passed', passed: 4, failed: 0 });
  // A boot under way at the restart may be done again, no more.
  t.true(scratch.runs() <= 5 && scratch.runs() >= before);
});

test('by default a machine boots 20 times and needs 19 passes', (t) => {
  const config = testConfig(
    `machines:\n  - name: m\n    kind: static\n    settings: { address: 127.0.0.1, user: u, adminUser: a, adminKey: /k, authorizedKeys: /a }\n    qualify: { check: "true" }\n`,
  );
  t.like(config.machines[0].qualify, { check: 'true', boots: 20, pass: 19 });
});

test('the config refuses a qualification that cannot be met or a check with control characters', (t) => {
  const machine = (qualify: string) =>
    `machines:\n  - name: m\n    kind: static\n    settings: { address: 127.0.0.1, user: u, adminUser: a, adminKey: /k, authorizedKeys: /a }\n    qualify: ${qualify}\n`;
  t.regex(configProblems(machine('{ check: "true", boots: 3, pass: 4 }')), /machines\[0\]\.qualify\.pass: pass cannot be more than boots/);
  t.regex(configProblems(machine(JSON.stringify({ check: 'true\u001b[2J' }))), /control characters are refused in the check command/);
  t.regex(configProblems(machine('{ check: "true", runs: 3 }')), /runs/);
  t.regex(configProblems(machine('{ boots: 3 }')), /check/);
});
