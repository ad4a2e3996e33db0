// kill -9 of `paddock serve` mid-run, then a restart on the same data directory: no reservation
// is lost, one caught mid-provisioning is finished, the queue carries on, and no machine stays
// marked busy once everything is released.
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import test from 'ava';
import type { MachineView, ReservationView } from '../../protocol/api.js';
import { jsonClient, staticMachinesYaml } from '../helpers/api.js';
import { freePort } from '../helpers/ports.js';
import { startSshd } from '../helpers/sshd.js';
import { killHard, startServerProcess } from '../helpers/server.js';

test('kill -9 mid-run and restart: nothing lost, nothing stuck busy', async (t) => {
  t.timeout(900_000);
  const hosts = await Promise.all([startSshd(), startSshd(), startSshd()]);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'paddock-crash-'));
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const configFile = path.join(dir, 'paddock.yaml');
  writeFileSync(
    configFile,
    `listen: 127.0.0.1:${port}\ndataDir: data\n${staticMachinesYaml(
      hosts.map((host, index) => ({ name: `host-${index}`, port: host.port, adminKeyPath: host.adminKey.path, authorizedKeysFile: host.authorizedKeysFile })),
    )}\n`,
  );
  let server: ChildProcess | undefined;
  try {
    server = await startServerProcess(['--config', configFile], url);
    const token = readFileSync(path.join(dir, 'data', 'admin-token'), 'utf8').trim();
    const http = jsonClient(url, token);
    const reserve = async (spec: string, count: number) =>
      (await http.post('v1/reservations', { json: { members: [{ role: 'main', spec, count }], lease: 300 } })).body as ReservationView;
    const get = async (id: string, wait = false) =>
      (await http.get(`v1/reservations/${id}`, { searchParams: wait ? { wait: 'ready', timeout: 300 } : {} })).body as ReservationView;

    const ready = await reserve('static-host', 1);
    t.is((await get(ready.id, true)).state, 'ready');
    const released = await reserve('static-host', 1);
    await get(released.id, true);
    await http.delete(`v1/reservations/${released.id}`);
    const midway = await reserve('static-host', 2); // granted at once, killed while provisioning
    const gang = await reserve('static-host', 3); // queued behind the others
    t.is(gang.state, 'queued');

    await killHard(server);
    server = await startServerProcess(['--config', configFile], url);

    const afterReady = await get(ready.id);
    t.is(afterReady.state, 'ready', 'a ready reservation carries on');
    t.regex(readFileSync(hosts[Number(afterReady.allocations[0].machine.slice(5))].authorizedKeysFile, 'utf8'), new RegExp(`paddock:${ready.id}`));
    const afterMidway = await get(midway.id, true);
    t.is(afterMidway.state, 'ready', `one caught mid-provisioning is finished: ${afterMidway.reason}`);
    t.is((await get(gang.id)).state, 'queued', 'the queue survives');
    const afterReleased = await get(released.id);
    t.true(['releasing', 'released'].includes(afterReleased.state));

    await http.delete(`v1/reservations/${ready.id}`);
    await http.delete(`v1/reservations/${midway.id}`);
    const granted = await get(gang.id, true);
    t.is(granted.state, 'ready', granted.reason);
    await http.delete(`v1/reservations/${gang.id}`);
    const deadline = Date.now() + 120_000;
    let machines: MachineView[] = [];
    while (Date.now() < deadline) {
      machines = (await http.get('v1/machines')).body as MachineView[];
      if (machines.every((machine) => machine.state === 'available')) break;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    t.deepEqual(
      machines.map((machine) => machine.state),
      ['available', 'available', 'available'],
      'no machine stuck busy',
    );
    for (const host of hosts) t.notRegex(readFileSync(host.authorizedKeysFile, 'utf8'), /paddock:r-/, 'no reservation key left on a host');
    const everything = (await http.get('v1/reservations', { searchParams: { all: 1, ended: 1 } })).body as ReservationView[];
    t.is(everything.length, 4, 'no reservation lost');
  } finally {
    server?.kill('SIGKILL');
    await Promise.all(hosts.map((host) => host.stop()));
    rmSync(dir, { recursive: true, force: true });
  }
});
