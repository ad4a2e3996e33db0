// A provisioning whose report the API refuses stops without reporting a failure. The reservation
// was released while its board booted: the allocation is the release's now, and once the agent
// has claimed that release, a failure reported by the old provisioning would be taken for a failed
// release and quarantine a healthy board. The test runs the shared loop against the real API, as
// the agent's token, and claims the release just before any failure report goes out: the order
// that, under load, loses boards (the simlab benchmark saw 18 of 100 quarantined in 20 s).
import test from 'ava';
import got from 'got';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ProvisioningJournal } from '../../lab-host/journal.js';
import { TaskLoop } from '../../lab-host/loop.js';
import type { AgentReport, AgentTask } from '../../protocol/agent.js';
import { silentLog } from '../../protocol/log.js';
import { createProvisioner, machineKinds } from '../../provisioners/registry.js';
import { registerSimKind, simKind } from '../../bench/simlab/kind.js';
import { startApi, testConfig } from '../helpers/api.js';

registerSimKind(machineKinds);

test('a provisioning whose stage report is refused after its release began reports no failure, and its board stays in service', async (t) => {
  const api = await startApi(
    testConfig(
      [
        'agent: { enabled: false }',
        'agents: { heartbeatTimeout: 1d }',
        'machines:',
        // On at once; the boot is seen a second later, by which time the reservation is released.
        '  - { name: board-1, kind: sim, labHost: host-1, settings: { bootSeconds: 3, bootSpread: 0, failureRate: 0, powerSeconds: 0, timeScale: 1 } }',
      ].join('\n'),
    ),
  );
  const dir = mkdtempSync(path.join(os.tmpdir(), 'paddock-refused-'));
  t.teardown(async () => {
    await api.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const admin = api.http();
  const token = ((await admin.post('v1/tokens', { json: { name: 'host-1', role: 'agent' } })).body as { token: string }).token;
  const agent = got.extend({ prefixUrl: api.url, headers: { authorization: `Bearer ${token}` }, retry: { limit: 0 } });
  const claim = async () => (await agent.post('v1/agent/claim', { json: { agent: 'host-1', kinds: ['sim'], wait: 5 } }).json<{ tasks: AgentTask[] }>()).tasks;

  let release: AgentTask | undefined;
  const sent: AgentReport['kind'][] = [];
  const loop = new TaskLoop({
    provisioner: () => createProvisioner(simKind, { dataDir: dir, consolesDir: dir, images: undefined as never, lost: () => undefined, log: silentLog() }),
    journal: new ProvisioningJournal(path.join(dir, 'provisioning')),
    report: async (taskId, report) => {
      // The race made certain: the agent holds the release before a failure report reaches the API.
      if (report.kind === 'failed' && !release) release = (await claim())[0];
      sent.push(report.kind);
      await agent.post(`v1/agent/tasks/${encodeURIComponent(taskId)}/report`, { json: { agent: 'host-1', report } });
    },
    log: silentLog(),
    concurrency: 4,
    provisionTimeoutMs: 60_000,
  });

  const created = await admin.post('v1/reservations', { json: { members: [{ role: 'board', spec: 'type=simboard', count: 1 }] } });
  const id = (created.body as { id: string }).id;
  const [provision] = await claim();
  t.is(provision.action, 'provision');
  const provisioning = loop.submit(provision);
  for (;;) {
    const view = (await admin.get(`v1/reservations/${id}`)).body as { allocations: { stages: Record<string, string> }[] };
    if (view.allocations[0].stages.powerConfirmed) break;
    await sleep(20);
  }
  t.is((await admin.delete(`v1/reservations/${id}`)).statusCode, 200);
  await provisioning;
  t.deepEqual(sent, ['stage', 'stage'], 'powerConfirmed taken, bootSeen refused, and no failure');

  release ??= (await claim())[0];
  t.is(release?.action, 'release');
  await loop.submit(release!);
  t.like((await admin.get(`v1/reservations/${id}`)).body, { state: 'released' });
  t.like((await admin.get('v1/machines/board-1')).body, { state: 'available' });
});
