// A machine that cannot be prepared: the reservation ends failed with a reason that names the
// machine, the stage and the cause; the failure counts against the machine, which is quarantined
// after `health.quarantineAfter` failures in a row and taken back into service by an admin.
import test from 'ava';
import type { MachineView, ReservationView } from '../../protocol/api.js';
import { startApi, staticMachinesYaml, testConfig } from '../helpers/api.js';
import { startSshd } from '../helpers/sshd.js';

test('a host Paddock cannot log in to fails the reservation and is quarantined', async (t) => {
  const host = await startSshd();
  const api = await startApi(
    testConfig(
      `health: { quarantineAfter: 1 }\n${staticMachinesYaml([
        { name: 'broken-1', port: host.port, adminKeyPath: '/nonexistent/admin_ed25519', authorizedKeysFile: host.authorizedKeysFile },
      ])}`,
    ),
  );
  try {
    const created = (await api.http().post('v1/reservations', { json: { members: [{ role: 'main', spec: 'static-host' }] } })).body as ReservationView;
    let view = created;
    const deadline = Date.now() + 120_000;
    while (view.state !== 'failed' && Date.now() < deadline) {
      view = (await api.http().get(`v1/reservations/${created.id}`, { searchParams: { wait: 'ready', timeout: 5 } })).body as ReservationView;
      if (view.state !== 'failed') await new Promise((resolve) => setTimeout(resolve, 100));
    }
    t.is(view.state, 'failed');
    t.regex(view.reason ?? '', /^main\[0\] on broken-1 at sshReady: .*cannot read the admin key \/nonexistent\/admin_ed25519 \(ENOENT\)/);
    const machine = (await api.http().get('v1/machines/broken-1')).body as MachineView;
    t.is(machine.state, 'quarantined');
    t.is(machine.failures, 1);
    t.regex(machine.reason ?? '', /admin key/, 'the reason says what went wrong');
    const queued = (await api.http().post('v1/reservations', { json: { members: [{ role: 'main', spec: 'static-host' }] } })).body as ReservationView;
    t.is(queued.state, 'queued', 'a quarantined machine is not handed out');
    const activated = (await api.http().post('v1/machines/broken-1/activate')).body as MachineView;
    t.is(activated.failures, 0);
    await api.http().delete(`v1/reservations/${queued.id}`);
  } finally {
    await api.close();
    await host.stop();
  }
});
