// Retirement: an admin retires a machine (a reserved one once released, even across a restart of
// the API); it is never matched again, maintenance and activation refuse it with a stable code, it
// is left out of the machine list but for `retired=true`, and it keeps its history. A machine
// removed from the configuration is retired, and stays retired when the configuration names it again.
// The machines are static hosts on real sshd servers, served by the embedded agent.
import test from 'ava';
import type { MachineView } from '../../protocol/api.js';
import { startApi, testConfig, type JsonClient } from '../helpers/api.js';
import { labApi, provision, release, staticLab } from '../helpers/static-lab.js';

const names = async (http: JsonClient, query = '') => ((await http.get(`v1/machines${query}`)).body as MachineView[]).map((machine) => machine.name);
const codeOf = (body: unknown) => (body as { code?: string }).code;

test('a retired machine never comes back: reserved then retired, refused by maintenance and activation, listed apart, across restarts and config changes', async (t) => {
  const lab = await staticLab(t);
  const dataDir = testConfig(lab.machines).dataDir;
  const first = await labApi(lab.machines, dataDir);
  let open = first.api.server;
  t.teardown(() => open.close());
  const held = await provision(first, 'slot=b');
  t.is(held.state, 'ready');
  t.is(held.allocations[0].machine, 'm2');

  const denied = await first.user.post('v1/machines/m2/retire', { json: {} });
  t.is(denied.statusCode, 403);
  t.is(codeOf(denied.body), 'forbidden');
  const retiring = await first.admin.post('v1/machines/m2/retire', { json: { reason: 'SD card worn out' } });
  t.is(retiring.statusCode, 200, JSON.stringify(retiring.body));
  t.is((retiring.body as MachineView).state, 'reserved', 'retired once released');
  for (const action of ['activate', 'maintenance']) {
    const refused = await first.admin.post(`v1/machines/m2/${action}`, { json: {} });
    t.is(refused.statusCode, 409, action);
    t.is(codeOf(refused.body), 'machine_retired', action);
    t.regex((refused.body as { message: string }).message, /machine m2 is retired \(once released\): it never comes back/);
  }

  // A restart while it is still reserved keeps the retirement for its release.
  await first.api.server.close();
  const second = await labApi(lab.machines, dataDir);
  open = second.api.server;
  t.is(((await second.admin.get('v1/machines/m2')).body as MachineView).state, 'reserved');
  await release(second, held.id);
  const m2 = (await second.user.get('v1/machines/m2')).body as MachineView;
  t.is(m2.state, 'retired');
  t.is(m2.reason, 'SD card worn out');
  t.is(m2.provisionings?.length, 1, 'its history is kept');
  t.deepEqual(await names(second.user), ['m1'], 'left out of the list');
  t.deepEqual(await names(second.user, '?retired=true'), ['m2']);
  t.deepEqual(await names(second.user, '?state=retired'), ['m2']);
  const never = await second.user.post('v1/reservations', { json: { members: [{ role: 'main', spec: 'slot=b' }] } });
  t.is(never.statusCode, 422, 'no machine could ever serve it: not queued behind a retired one');
  t.is(codeOf(never.body), 'unsatisfiable');
  const other = await provision(second, 'type=box');
  t.is(other.allocations[0].machine, 'm1');
  await release(second, other.id);
  t.is((await second.admin.post('v1/machines/m2/retire', { json: {} })).statusCode, 409, 'retired once');
  await second.api.server.close();

  // m1 leaves the configuration: retired, with its history; m2 is still named there and stays retired.
  const third = await startApi(testConfig(lab.only('m2'), dataDir));
  open = third.server;
  const m1 = (await third.http().get('v1/machines/m1')).body as MachineView;
  t.is(m1.state, 'retired');
  t.is(m1.reason, 'no longer in the configuration');
  t.is(m1.provisionings?.length, 1);
  t.deepEqual(await names(third.http(), '?retired=1'), ['m1', 'm2']);
  t.is(((await third.http().get('v1/machines/m2')).body as MachineView).state, 'retired');
  await third.server.close();

  // Named again: m1 stays retired (and still listed) after another restart.
  const fourth = await startApi(testConfig(lab.machines, dataDir));
  open = fourth.server;
  t.teardown(() => fourth.close());
  t.deepEqual(await names(fourth.http()), []);
  t.deepEqual(await names(fourth.http(), '?retired=1'), ['m1', 'm2']);
  t.is(((await fourth.http().get('v1/machines/m1')).body as MachineView).reason, 'no longer in the configuration');
});
