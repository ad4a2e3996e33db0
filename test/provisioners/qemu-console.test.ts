// A VM's serial console log has a cap (consoles.maxLogSize): a guest that floods its console with
// many times the cap leaves a log that keeps its boot and a marker, no bigger than the cap, and the
// VM keeps working.
import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import test from 'ava';
import { Paddock } from '../../client/index.js';
import { cappedMarker } from '../../boards/console/capped-log.js';
import { embeddedConfig } from '../../api/config.js';
import { startApi, testConfig, type TestApi } from '../helpers/api.js';
import { waitFor } from '../helpers/wait.js';
import { testImages } from '../helpers/images.js';

const cap = 128 * 1024;
let api: TestApi;
let paddock: Paddock;

test.before(async () => {
  const images = await testImages();
  api = await startApi(testConfig(`consoles: { maxLogSize: ${cap} }\n${embeddedConfig}`));
  paddock = new Paddock({ url: api.url, token: api.adminToken });
  await paddock.images.upload(images.initramfs, { name: 'tiny', tag: 'test', format: 'bundle', arch: 'x86_64' });
});

test.after.always(async () => {
  await api?.close();
});

test('a guest printing four times the cap on its serial console leaves a log of its boot and a marker, within the cap', async (t) => {
  const reservation = await paddock.reserve({ members: [{ role: 'vm', spec: 'arch=x86_64', image: 'tiny:test' }], lease: '10m' });
  try {
    await reservation.ready({ timeout: 300 });
    const machine = reservation.view.allocations[0].machine;
    const log = path.join(api.dataDir, 'consoles', reservation.id, `${machine}.log`);
    const flood = await reservation.run('vm', `(head -c ${4 * cap} /dev/zero | tr '\\000' x > /dev/ttyS0; echo flood-done > /tmp/flood) >/dev/null 2>&1 &`);
    t.is(flood.code, 0, flood.stderr);
    await waitFor(
      async () => (await reservation.run('vm', 'cat /tmp/flood 2>/dev/null || true')).stdout.includes('flood-done'),
      240_000,
      'the guest to finish printing',
    );
    await waitFor(async () => readFileSync(log, 'utf8').endsWith(cappedMarker(cap)), 120_000, 'the marker in the log');
    const text = readFileSync(log, 'utf8');
    t.is(statSync(log).size, cap, 'the log stops at the cap');
    t.regex(text, /paddock: ssh ready/, 'the boot is kept');
    t.regex(text, /x{1000}/, 'the flood started in the log');
    const after = await reservation.run('vm', 'echo still here');
    t.is(after.stdout.trim(), 'still here', 'the VM works on');
  } finally {
    await reservation.release();
  }
});
