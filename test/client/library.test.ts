// The client library against a real API and real sshd hosts, the way a job script uses it.
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import test from 'ava';
import type { EventView, ReservationView } from '../../protocol/api.js';
import { InvalidSpecError, NoMatchError, Paddock, PaddockError, UnauthorizedError } from '../../client/index.js';
import { startApi, staticMachinesYaml, testConfig, type TestApi } from '../helpers/api.js';
import { startSshd, type TestSshd } from '../helpers/sshd.js';

let api: TestApi;
let hosts: TestSshd[];
let paddock: Paddock;

test.before(async () => {
  hosts = await Promise.all([startSshd(), startSshd()]);
  api = await startApi(
    testConfig(
      `lease: { default: 60, max: 600 }\nreaper: { interval: 0.2 }\n${staticMachinesYaml(
        hosts.map((host, index) => ({
          name: `host-${index + 1}`,
          port: host.port,
          adminKeyPath: host.adminKey.path,
          authorizedKeysFile: host.authorizedKeysFile,
        })),
      )}`,
    ),
  );
  paddock = new Paddock({ url: api.url, token: api.adminToken });
});

test.after.always(async () => {
  await api?.close();
  await Promise.all((hosts ?? []).map((host) => host.stop()));
});

test.serial('reserve, wait with progress, run, copy both ways, and release on scope exit', async (t) => {
  const progress: (EventView | ReservationView)[] = [];
  const dir = mkdtempSync(path.join(os.tmpdir(), 'paddock-client-'));
  chmodSync(dir, 0o777); // the hosts' tenants write and read here
  let id = '';
  try {
    {
      await using reservation = await paddock.reserve({ members: [{ role: 'pair', spec: 'static-host', count: 2 }], lease: 60 });
      id = reservation.id;
      await reservation.ready({ timeout: 60, onProgress: (event) => progress.push(event) });
      t.is(reservation.state, 'ready');
      t.true(progress.some((event) => 'type' in event && event.type === 'stage' && event.to === 'sshReady'));
      t.true(progress.some((event) => 'type' in event && event.type === 'state' && event.to === 'ready'));

      const [first, second] = await Promise.all([reservation.run('pair', 'echo out; echo err >&2; exit 3'), reservation.run('pair.1', 'id -un')]);
      t.deepEqual(first, { stdout: 'out\n', stderr: 'err\n', code: 3 });
      t.true(
        hosts.some((host) => host.tenant === second.stdout.trim()),
        `logged in as a host's tenant, not ${second.stdout}`,
      );

      writeFileSync(path.join(dir, 'up.txt'), 'payload 42\n');
      await reservation.copyTo('pair[1]', path.join(dir, 'up.txt'), path.join(dir, 'remote.txt'));
      t.is(readFileSync(path.join(dir, 'remote.txt'), 'utf8'), 'payload 42\n', 'the file arrived (the hosts share this filesystem)');
      await reservation.copyFrom('pair.0', path.join(dir, 'remote.txt'), path.join(dir, 'down.txt'));
      t.is(readFileSync(path.join(dir, 'down.txt'), 'utf8'), 'payload 42\n');
      await t.throwsAsync(reservation.run('nobody', 'true'), { instanceOf: PaddockError, message: /no ready member nobody/ });
    }
    const after = await paddock.reservation(id);
    t.true(['releasing', 'released'].includes(after.state), 'released when the scope ended');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test.serial('a host presenting another host key is refused', async (t) => {
  await using reservation = await paddock.reserve({ members: [{ role: 'main', spec: 'static-host' }] });
  await reservation.ready({ timeout: 300 });
  const target = await reservation.target('main');
  const other = hosts.find((host) => host.hostKey !== target.hostKey)!;
  const credentials = await reservation.credentials();
  credentials.machines[0].hostKey = other.hostKey; // as if someone else answered on that address
  await t.throwsAsync(reservation.run('main', 'true'), { instanceOf: PaddockError, message: /host key other than the one Paddock pinned/ });
});

test.serial('the lease is renewed while the process holds the reservation', async (t) => {
  // A 6 s lease is renewed every 2 s: two heartbeats may be late on a loaded machine.
  await using reservation = await paddock.reserve({ members: [{ role: 'main', spec: 'static-host' }], lease: 6 });
  await reservation.ready({ timeout: 300 });
  await new Promise((resolve) => setTimeout(resolve, 13_000));
  t.is((await reservation.refresh()).state, 'ready', 'still held after twice its lease');
  const unrenewed = await paddock.reserve({ members: [{ role: 'main', spec: 'static-host' }], lease: 2 }, { renew: false });
  const deadline = Date.now() + 120_000;
  while ((await unrenewed.refresh()).state !== 'expired' && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 250));
  t.is(unrenewed.view.state, 'expired');
  t.is(unrenewed.view.reason, 'lease expired');
});

test.serial('typed errors: no match, bad spec, bad token', async (t) => {
  const noMatch = await t.throwsAsync(paddock.reserve({ members: [{ role: 'board', spec: 'arch=armv7' }] }), { instanceOf: NoMatchError });
  t.is(noMatch!.reasons[0].role, 'board');
  const badSpec = await t.throwsAsync(paddock.reserve({ members: [{ role: 'main', spec: 'ram>=' }] }), { instanceOf: InvalidSpecError });
  t.is(badSpec!.position, 5);
  const stranger = new Paddock({ url: api.url, token: 'pdk_wrong-token-value' });
  const denied = await t.throwsAsync(stranger.machines(), { instanceOf: UnauthorizedError });
  t.false(denied!.message.includes('wrong-token-value'));
  t.throws(() => new Paddock({ url: api.url, token: '' }), { message: /PADDOCK_TOKEN/ });
});
