// SIGHUP to a `paddock serve` process reads its config file again and applies the machine list:
// the process lives on, a machine left out of the file keeps serving the reservation that holds it
// and is retired once it is released, a machine added serves at once, and a file with problems is
// logged and ignored (the running configuration stays). test/api/reload.test.ts goes through every
// case in process.
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import test from 'ava';
import type { MachineView, ReservationView } from '../../protocol/api.js';
import { jsonClient, staticHostOn, staticMachinesYaml } from '../helpers/api.js';
import { parseLogLines } from '../helpers/log.js';
import { freePort } from '../helpers/ports.js';
import { startServerProcess, stopGracefully } from '../helpers/server.js';
import { startSshd } from '../helpers/sshd.js';
import { waitFor } from '../helpers/wait.js';

test('SIGHUP applies the machine list to a running server without dropping a live reservation; a bad file is ignored', async (t) => {
  t.timeout(600_000);
  const hosts = await Promise.all([startSshd(), startSshd()]);
  t.teardown(() => Promise.all(hosts.map((host) => host.stop())));
  const dir = mkdtempSync(path.join(os.tmpdir(), 'paddock-sighup-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const file = path.join(dir, 'paddock.yaml');
  const entries = { m1: staticHostOn(hosts[0], 'm1', { slot: 'a' }), m2: staticHostOn(hosts[1], 'm2', { slot: 'b' }) };
  const write = (...names: (keyof typeof entries)[]) =>
    writeFileSync(file, `listen: 127.0.0.1:${port}\ndataDir: data\n${staticMachinesYaml(names.map((name) => entries[name]))}\n`);
  write('m1');
  let output = '';
  const server: ChildProcess = await startServerProcess(['--config', file], url, (chunk) => (output += chunk));
  t.teardown(() => stopGracefully(server));
  const http = jsonClient(url, readFileSync(path.join(dir, 'data', 'admin-token'), 'utf8').trim());
  // The log's JSON lines (not the line bin/paddock.js writes when it runs the sources without a build).
  const logLines = () =>
    parseLogLines(
      output
        .split('\n')
        .filter((line) => line.startsWith('{'))
        .join('\n'),
    );
  const messages = () => logLines().map((line) => String(line.msg));
  const signalled = async (what: RegExp) => {
    const seen = messages().filter((message) => what.test(message)).length;
    server.kill('SIGHUP');
    await waitFor(async () => messages().filter((message) => what.test(message)).length > seen, 30_000, `a log line ${what}`);
  };
  const state = async (name: string) => ((await http.get(`v1/machines/${name}`)).body as MachineView).state;

  const created = (await http.post('v1/reservations', { json: { members: [{ role: 'main', spec: 'slot=a' }], lease: 600 } })).body as ReservationView;
  const ready = (await http.get(`v1/reservations/${created.id}`, { searchParams: { wait: 'ready', timeout: 120 } })).body as ReservationView;
  t.is(ready.state, 'ready', ready.reason);

  write('m2');
  await signalled(/^configuration reloaded/);
  t.is(server.exitCode, null, 'the process lives on');
  t.is(server.signalCode, null);
  const reloaded = logLines().find((line) => String(line.msg).startsWith('configuration reloaded'))!;
  t.like(reloaded, { added: ['m2'], retired: [], retiredOnRelease: ['m1'] });
  t.is(await state('m1'), 'reserved', 'the reservation keeps its machine');
  t.is(await state('m2'), 'available');
  t.is(((await http.get(`v1/reservations/${created.id}`)).body as ReservationView).state, 'ready');
  t.regex(readFileSync(hosts[0].authorizedKeysFile, 'utf8'), new RegExp(`paddock:${created.id}`));

  const second = (await http.post('v1/reservations', { json: { members: [{ role: 'main', spec: 'slot=b' }] } })).body as ReservationView;
  t.is(((await http.get(`v1/reservations/${second.id}`, { searchParams: { wait: 'ready', timeout: 120 } })).body as ReservationView).state, 'ready');

  await http.delete(`v1/reservations/${created.id}`);
  await waitFor(async () => (await state('m1')) === 'retired', 60_000, 'm1 retired once released');
  t.notRegex(readFileSync(hosts[0].authorizedKeysFile, 'utf8'), /paddock:r-/, 'released on its host first');

  writeFileSync(file, `listen: 127.0.0.1:${port}\nmachines:\n  - name: m3\n    kind: static\n    colour: blue\n`);
  await signalled(/^configuration not reloaded/);
  const refused = logLines().find((line) => String(line.msg).startsWith('configuration not reloaded'))!;
  t.regex(JSON.stringify(refused.problems), /line 5: machines\[0\]\.colour: unknown key/);
  t.is((await http.get('healthz')).statusCode, 200, 'still serving');
  t.is(await state('m2'), 'reserved', 'the running machine list stays');
  t.is((await http.get('v1/machines/m3')).statusCode, 404);
  await http.delete(`v1/reservations/${second.id}`);
});
