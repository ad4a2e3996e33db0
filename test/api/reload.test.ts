// A configuration reload (what SIGHUP does to `paddock serve`, api/serve.ts: reload) applies the
// file's machine list and nothing else: a machine named for the first time is in service at once,
// a free machine no longer named is retired, a reserved one keeps serving its reservation and is
// retired once released (or stays when named again meanwhile), a retired one named again stays
// retired, a changed definition or setting waits for a restart, and a file with problems changes
// nothing. The machines are static hosts on real sshd servers, served by the embedded agent.
// test/deploy/sighup.test.ts sends the real signal to a `paddock serve` process.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import test from 'ava';
import type { MachineView, ReservationView } from '../../protocol/api.js';
import { serve } from '../../cli/serve.js';
import { jsonClient, startApi, staticHostOn, staticMachinesYaml, testConfig } from '../helpers/api.js';
import { captureLog } from '../helpers/log.js';
import { labApi, provision, release, staticLab, type LabApi } from '../helpers/static-lab.js';
import { startSshd } from '../helpers/sshd.js';

test('a reload adds and retires machines, never takes one from its reservation, and applies nothing but the machine list', async (t) => {
  t.timeout(600_000);
  const hosts = await Promise.all([startSshd(), startSshd(), startSshd()]);
  t.teardown(() => Promise.all(hosts.map((host) => host.stop())));
  const entries = {
    m1: staticHostOn(hosts[0], 'm1', { slot: 'a' }),
    m2: staticHostOn(hosts[1], 'm2', { slot: 'b' }),
    m3: staticHostOn(hosts[2], 'm3', { slot: 'c' }),
  };
  const dir = mkdtempSync(path.join(os.tmpdir(), 'paddock-reload-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'paddock.yaml');
  const write = (names: (keyof typeof entries)[], extra = '', labels?: Record<string, string>) =>
    writeFileSync(
      file,
      `listen: 127.0.0.1:0\ndataDir: data\n${extra}${names.length === 0 ? 'machines: []\n' : staticMachinesYaml(names.map((name) => ({ ...entries[name], ...(labels ? { labels } : {}) })))}\n`,
    );
  write(['m1', 'm2']);
  const logs: string[] = [];
  let server = await serve({ configPath: file, log: captureLog(logs) });
  t.teardown(() => server.close());
  const admin = jsonClient(server.url, readFileSync(server.adminTokenFile, 'utf8').trim());
  const token = ((await admin.post('v1/tokens', { json: { name: 'erin', role: 'user' } })).body as { token: string }).token;
  const lab: LabApi = { api: undefined as never, admin, user: jsonClient(server.url, token) };
  const machine = async (name: string) => (await admin.get(`v1/machines/${name}`)).body as MachineView;
  const reservation = async (id: string) => (await admin.get(`v1/reservations/${id}`)).body as ReservationView;

  const held = await provision(lab, 'slot=a');
  t.is(held.state, 'ready');
  t.is(held.allocations[0].machine, 'm1');

  // m1 (reserved) and m2 (free) leave the file, m3 comes in; the lease policy changes too.
  write(['m3'], 'lease: { default: 10m }\n');
  const first = await server.reload();
  t.like(first, { applied: true, added: ['m3'], retired: ['m2'], retiredOnRelease: ['m1'], kept: [], stillRetired: [], changed: [], restartNeeded: ['lease'] });
  t.is((await machine('m2')).state, 'retired');
  t.is((await machine('m2')).reason, 'no longer in the configuration');
  t.is((await machine('m1')).state, 'reserved', 'the reservation keeps its machine');
  t.is((await machine('m3')).state, 'available');
  t.is((await reservation(held.id)).state, 'ready');
  t.regex(readFileSync(hosts[0].authorizedKeysFile, 'utf8'), new RegExp(`paddock:${held.id}`), 'its key is still on the host');
  t.true(
    logs.some((line) => /a restart is needed/.test(line) && /"lease"/.test(line)),
    'the changed setting is said to wait for a restart',
  );
  t.is((await admin.get('v1/reservations')).statusCode, 200);
  const lease = (await lab.user.post('v1/reservations', { json: { members: [{ role: 'main', spec: 'slot=c' }] } })).body as ReservationView;
  t.is(lease.leaseSeconds, 1800, 'the lease default is still the one the server started with');
  await lab.user.delete(`v1/reservations/${lease.id}`);

  const onM3 = await provision(lab, 'slot=c');
  t.is(onM3.state, 'ready', 'the added machine serves');
  await release(lab, onM3.id);
  const refused = await lab.user.post('v1/reservations', { json: { members: [{ role: 'main', spec: 'slot=b' }] } });
  t.is((refused.body as { code?: string }).code, 'unsatisfiable', 'a retired machine is never matched');

  await release(lab, held.id);
  t.is((await machine('m1')).state, 'retired', 'retired once released');
  t.notRegex(readFileSync(hosts[0].authorizedKeysFile, 'utf8'), /paddock:r-/, 'and released properly by its agent first');

  // Named again: m1 stays retired; m3 changed (labels) keeps its running definition.
  write(['m1', 'm3'], '', { slot: 'c', room: '2' });
  const second = await server.reload();
  t.like(second, { applied: true, added: [], retired: [], retiredOnRelease: [], stillRetired: ['m1'], changed: ['m3'], restartNeeded: [] });
  t.false('room' in (await machine('m3')).labels, 'the running definition stays until a restart');

  // A file with problems: nothing changes.
  writeFileSync(file, 'listen: 127.0.0.1:0\nmachines:\n  - name: m4\n    kind: teleporter\n');
  const bad = await server.reload();
  t.like(bad, { applied: false, reason: 'invalid configuration' });
  t.regex(String((bad as { problems?: string[] }).problems), /machines\[0\]\.kind: unknown machine kind "teleporter"/);
  t.is((await admin.get('v1/machines/m4')).statusCode, 404);
  t.is((await machine('m3')).state, 'available');
  t.true(logs.some((line) => /configuration not reloaded/.test(line)));

  // Dropped while reserved, named again before the release: it stays in service.
  const again = await provision(lab, 'slot=c');
  write([]);
  t.like(await server.reload(), { applied: true, retiredOnRelease: ['m3'] });
  write(['m3']);
  t.like(await server.reload(), { applied: true, kept: ['m3'] });
  await release(lab, again.id);
  t.is((await machine('m3')).state, 'available');
  t.is((await machine('m3')).reason, undefined);

  // A restart on the same file and data agrees with what the reloads did.
  await server.close();
  server = await serve({ configPath: file, log: captureLog([]) });
  const after = jsonClient(server.url, readFileSync(server.adminTokenFile, 'utf8').trim());
  const states = ((await after.get('v1/machines', { searchParams: { retired: 'true' } })).body as MachineView[]).map((each) => [each.name, each.state]);
  t.deepEqual(states, [
    ['m1', 'retired'],
    ['m2', 'retired'],
  ]);
  t.is(((await after.get('v1/machines/m3')).body as MachineView).state, 'available');
});

test('without a config file there is nothing to read again', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'paddock-reload-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const { parseConfig } = await import('../../api/config.js');
  const config = { ...parseConfig('agent: { enabled: false }\n'), listen: { host: '127.0.0.1', port: 0 }, dataDir: dir };
  const server = await serve({ config, log: captureLog([]) });
  t.teardown(() => server.close());
  t.deepEqual(await server.reload(), { applied: false, reason: 'no config file' });
});

test('a reserved machine gone from the configuration across a restart stays retired once its reservation is released', async (t) => {
  t.timeout(300_000);
  const lab = await staticLab(t);
  const dataDir = testConfig(lab.machines).dataDir;
  const first = await labApi(lab.machines, dataDir);
  const held = await provision(first, 'slot=a');
  t.is(held.allocations[0].machine, 'm1');
  await first.api.server.close();
  const second = await startApi(testConfig(lab.only('m2'), dataDir));
  t.teardown(() => second.close());
  const admin = second.http();
  t.is(((await admin.get('v1/machines/m1')).body as MachineView).state, 'retired');
  await release({ api: second, admin, user: admin }, held.id);
  t.is(((await admin.get(`v1/reservations/${held.id}`)).body as ReservationView).reason, 'machine m1 left the inventory');
  t.is(((await admin.get('v1/machines/m1')).body as MachineView).state, 'retired', 'not brought back (quarantined) by its release');
});
