// Qualification of boards on the emulated lab (arm64 boards running Debian's U-Boot, powered through
// a real pdudaemon, booted from the real tftpd-hpa): a board whose console stays silent 3 times in
// its first boots fails a 19-of-20 qualification as soon as it cannot pass, quarantined with the
// failures' codes and stages; a board whose console fails once in a 1-of-2 qualification goes into
// service. A board's console fails by the lab's `fail-boots` count (test/helpers/lab/board-power.sh).
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import test from 'ava';
import { ensureTftpd } from '../../boards/boot/tftpd.js';
import type { MachineView } from '../../protocol/api.js';
import { Paddock } from '../../client/index.js';
import { startApi, testConfig } from '../helpers/api.js';
import { testImages } from '../helpers/images.js';
import { startLab } from '../helpers/lab/index.js';
import { waitFor } from '../helpers/wait.js';

const tftpRoot = '/tmp/paddock-test-tftp';

test('a board whose console fails 3 times in 20 fails qualification; one that fails once in a 1-of-2 qualification serves', async (t) => {
  const images = await testImages();
  await ensureTftpd(tftpRoot, '127.0.0.1:69');
  const lab = await startLab(2);
  t.teardown(() => lab.stop());
  writeFileSync(path.join(lab.boards[0].dir, 'fail-boots'), '3');
  writeFileSync(path.join(lab.boards[1].dir, 'fail-boots'), '1');

  // The admin uploads the pools' reference image first, then adds the boards to the config.
  const first = testConfig('machines: []\n');
  const empty = await startApi(first);
  await new Paddock({ url: empty.url, token: empty.adminToken }).images.upload(images.arm64, { name: 'arm', format: 'bundle', arch: 'arm64' });
  await empty.server.close();

  const timeouts = '      timeouts: { bootloader: 6 }';
  const yaml = [
    'machines:',
    lab.boardYaml(lab.boards[0], {
      tftpRoot,
      extra: `${timeouts}\n    qualify: { image: arm, check: "grep -q paddock.authorized_key /proc/cmdline", boots: 20 }`,
    }),
    lab.boardYaml(lab.boards[1], { tftpRoot, extra: `${timeouts}\n    qualify: { image: arm, check: "test -d /proc/1", boots: 2, pass: 1 }` }),
  ].join('\n');
  const api = await startApi(testConfig(yaml, first.dataDir));
  t.teardown(() => api.close());
  const paddock = new Paddock({ url: api.url, token: api.adminToken });
  const machine = async (name: string) => (await paddock.machines()).find((each) => each.name === name) as MachineView;
  t.is((await machine('board-1')).state, 'qualifying');
  t.is((await machine('board-2')).state, 'qualifying');

  await waitFor(async () => (await machine('board-1')).state === 'quarantined', 200_000, 'board-1 quarantined');
  const failed = await machine('board-1');
  t.like(failed.qualification, { state: 'failed', boots: 20, needed: 19, passed: 0, failed: 2 });
  t.deepEqual(
    failed.qualification!.failures.map((each) => [each.code, each.stage]),
    [
      ['bootloader_timeout', 'bootSeen'],
      ['bootloader_timeout', 'bootSeen'],
    ],
  );
  t.regex(
    failed.reason ?? '',
    /^failed qualification: 0 of 2 boots passed, 19 of 20 needed; failures: bootloader_timeout at bootSeen, bootloader_timeout at bootSeen$/,
  );
  t.is(readFileSync(path.join(lab.boards[0].dir, 'fail-boots'), 'utf8').trim(), '1', 'no third boot: 19 of 20 could no longer pass');

  await waitFor(async () => (await machine('board-2')).state === 'available', 300_000, 'board-2 in service');
  const passed = await machine('board-2');
  t.like(passed.qualification, { state: 'passed', passed: 1, failed: 1 });
  t.is(passed.qualification!.failures[0].code, 'bootloader_timeout');
});
