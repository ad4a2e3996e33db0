// `paddock machines` for a machine's health, as a user and an admin run it, on a real sshd: after a
// reservation that fails because Paddock's admin key went missing (an infrastructure failure at
// sshReady) and one that comes up, the HEALTH column, the history in `machines show`, and
// `machines retire` with `ls --retired`.
import { copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import test from 'ava';
import { Paddock } from '../../client/index.js';
import type { MachineView } from '../../protocol/api.js';
import { startApi, staticMachinesYaml, testConfig } from '../helpers/api.js';
import { runPaddock } from '../helpers/server.js';
import { startSshd } from '../helpers/sshd.js';
import { waitFor } from '../helpers/wait.js';

test('machines ls and show give the health score and the history; retire takes a machine out for good', async (t) => {
  const host = await startSshd();
  t.teardown(() => host.stop());
  // Paddock's admin key for host-1 is a copy the test can take away.
  const keys = mkdtempSync(path.join(os.tmpdir(), 'paddock-health-key-'));
  t.teardown(() => rmSync(keys, { recursive: true, force: true }));
  const adminKey = path.join(keys, 'admin_key');
  copyFileSync(host.adminKey.path, adminKey);
  const api = await startApi(
    testConfig(staticMachinesYaml([{ name: 'host-1', port: host.port, adminKeyPath: adminKey, authorizedKeysFile: host.authorizedKeysFile }])),
  );
  t.teardown(() => api.close());
  const userToken = ((await api.http().post('v1/tokens', { json: { name: 'dana', role: 'user' } })).body as { token: string }).token;
  const paddock = (args: string[], token = userToken) => runPaddock(api.url, token, args);

  // Without the key first (an admin login, once open, is kept a few seconds), then with it. The key
  // comes back while the failed reservation is released, so its release goes through.
  // The reservations go through the client library: the commands under test are the machines ones.
  const user = new Paddock({ url: api.url, token: userToken });
  const request = { members: [{ role: 'main', spec: 'static-host' }], lease: '10m' };
  rmSync(adminKey);
  const down = await user.reserve(request, { renew: false });
  await waitFor(async () => (await down.refresh()).state === 'releasing', 120_000, 'the failed reservation releasing');
  copyFileSync(host.adminKey.path, adminKey);
  await t.throwsAsync(down.ready({ timeout: 120 }), { message: /infrastructure_failed/ });
  const downId = down.id;
  const up = await user.reserve(request, { renew: false });
  await up.ready({ timeout: 120 });
  const upId = up.id;
  await up.release();

  const listed = await paddock(['machines', 'ls']);
  t.is(listed.code, 0, listed.stderr);
  t.regex(listed.stdout, /^NAME\s+KIND\s+STATE\s+LAB HOST\s+HEALTH\s+RESERVATION\s+LABELS$/m);
  t.regex(listed.stdout, /^host-1\s+static\s+\S+\s+local\s+0\.5\s/m);
  const shown = await paddock(['machines', 'show', 'host-1']);
  t.is(shown.code, 0, shown.stderr);
  t.regex(shown.stdout, /^health: 0\.5$/m);
  t.regex(shown.stdout, /^ENDED\s+RESERVATION\s+OWNER\s+OUTCOME\s+TOTAL\s+STAGES$/m);
  const rows = shown.stdout.split('\n').filter((line) => /^\d{4}-/.test(line));
  t.is(rows.length, 2);
  t.regex(rows[1], new RegExp(`^\\S+Z\\s+${downId}\\s+dana\\s+failed infrastructure_failed at sshReady \\(infrastructure\\)\\s+\\d+\\.\\ds\\s+`));
  t.regex(rows[0], new RegExp(`^\\S+Z\\s+${upId}\\s+dana\\s+ready\\s+\\d+\\.\\ds\\s+addressKnown \\d+\\.\\ds, sshReady \\d+\\.\\ds$`));
  const json = JSON.parse((await paddock(['machines', 'show', 'host-1', '--json', '--limit', '1'])).stdout) as MachineView;
  t.is(json.health, 0.5);
  t.deepEqual(
    json.provisionings?.map((run) => [run.reservationId, run.outcome, run.stage]),
    [[upId, 'ready', undefined]],
  );

  const retired = await paddock(['machines', 'retire', 'host-1', '--reason', 'disk failing'], api.adminToken);
  t.is(retired.stdout.trim(), 'host-1: retired', retired.stderr);
  t.notRegex((await paddock(['machines', 'ls'])).stdout, /host-1/);
  t.regex((await paddock(['machines', 'ls', '--retired'])).stdout, /^host-1\s+static\s+retired\s+local\s+0\.5\s/m);
  const again = await paddock(['machines', 'activate', 'host-1'], api.adminToken);
  t.is(again.code, 1);
  t.regex(again.stderr, /^paddock: machine host-1 is retired: it never comes back \(machine_retired\)$/m);
});
