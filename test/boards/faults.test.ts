// Board faults on the emulated lab (arm64 boards running Debian's U-Boot, powered through a real
// pdudaemon, console on a serial line, files from the real tftpd-hpa): each fails at its stage with
// its reason and the console tail; infrastructure faults count against the board and quarantine it
// after N in a row, an image's fault does not.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import test from 'ava';
import { Paddock, ReservationFailedError, type MachineView } from '../../client/index.js';
import { ensureTftpd } from '../../boards/boot/tftpd.js';
import { startApi, testConfig, type TestApi } from '../helpers/api.js';
import { powerScript, startLab, type Lab } from '../helpers/lab/index.js';
import { waitFor } from '../helpers/wait.js';

export const tftpRoot = '/tmp/paddock-test-tftp';
let lab: Lab;
let scratch: string;
let junkBundle: string;

test.before(async () => {
  lab = await startLab(2);
  scratch = mkdtempSync(path.join(os.tmpdir(), 'paddock-board-faults-'));
  // A bundle whose kernel is not a kernel: U-Boot loads it and refuses to boot it.
  writeFileSync(path.join(scratch, 'kernel'), randomBytes(64 * 1024));
  writeFileSync(path.join(scratch, 'cmdline'), 'console=ttyAMA0 panic=-1');
  junkBundle = path.join(scratch, 'junk.tar');
  execFileSync('tar', ['-cf', junkBundle, '-C', scratch, 'kernel', 'cmdline']);
  await ensureTftpd(tftpRoot, '127.0.0.1:69');
});

test.after.always(async () => {
  await lab?.stop();
  rmSync(scratch, { recursive: true, force: true });
});

async function withPaddock(machinesYaml: string, work: (paddock: Paddock, api: TestApi) => Promise<void>, extraYaml = ''): Promise<void> {
  const api = await startApi(testConfig(`health: { quarantineAfter: 2 }\n${extraYaml}machines:\n${machinesYaml}\n`));
  try {
    const paddock = new Paddock({ url: api.url, token: api.adminToken });
    await paddock.images.upload(junkBundle, { name: 'junk', format: 'bundle', arch: 'arm64' });
    await work(paddock, api);
  } finally {
    await api.close();
  }
}

async function failure(paddock: Paddock, spec = 'arch=arm64'): Promise<ReservationFailedError> {
  const reservation = await paddock.reserve({ members: [{ role: 'board', spec, image: 'junk' }], lease: '10m' }, { renew: false });
  try {
    await reservation.ready({ timeout: 300 });
  } catch (error) {
    if (error instanceof ReservationFailedError) return error;
    throw error;
  }
  throw new Error('the reservation became ready');
}

const outletState = (outlet: number) => execFileSync(powerScript, [lab.dir, 'status', String(outlet)], { encoding: 'utf8' }).trim();
const machine = async (paddock: Paddock, name: string) => (await paddock.machines()).find((each) => each.name === name) as MachineView;

test.serial("a kernel U-Boot refuses is the image's fault: failed at bootSeen, board powered off, staged files removed, health untouched", async (t) => {
  await withPaddock(lab.boardYaml(lab.boards[0], { tftpRoot }), async (paddock) => {
    const error = await failure(paddock);
    t.is(error.failureCode, 'image_unbootable', error.view.allocations[0].failure?.reason);
    const allocation = error.view.allocations[0];
    t.is(allocation.failure?.fault, 'request');
    t.is(allocation.failure?.stage, 'bootSeen');
    t.regex(allocation.failure?.reason ?? '', /Bad Linux ARM64 Image magic/);
    t.regex(allocation.failure?.reason ?? '', /console tail:\n[\s\S]*=> /, 'the console tail is in the reason');
    await waitFor(async () => (await machine(paddock, 'board-1')).state === 'available');
    t.is((await machine(paddock, 'board-1')).failures, 0);
    t.is(outletState(1), 'off', 'release powered the board off');
    t.false(
      readdirSync(path.join(tftpRoot, 'paddock')).some((name) => name.startsWith(error.view.id)),
      'the staged files are gone',
    );
  });
});

test.serial('a TFTP file the server does not have fails at bootSeen as an infrastructure fault', async (t) => {
  const elsewhere = mkdtempSync(path.join(os.tmpdir(), 'paddock-unserved-tftp-'));
  try {
    // Files staged in a root no TFTP server serves: U-Boot asks the lab's server, which has no such file.
    await withPaddock(
      lab.boardYaml(lab.boards[0], { tftpRoot: elsewhere }).replace(`tftpRoot: "${elsewhere}"`, `tftpRoot: "${elsewhere}", tftpServer: external`),
      async (paddock) => {
        const error = await failure(paddock);
        t.is(error.failureCode, 'tftp_failed');
        const allocation = error.view.allocations[0];
        t.is(allocation.failure?.fault, 'infrastructure');
        t.is(allocation.failure?.stage, 'bootSeen');
        t.regex(allocation.failure?.reason ?? '', /File not found|TFTP error/);
        t.is((await machine(paddock, 'board-1')).failures, 1);
      },
    );
  } finally {
    rmSync(elsewhere, { recursive: true, force: true });
  }
});

test.serial(
  'a board that never shows U-Boot fails at bootSeen with bootloader_timeout; two in a row quarantine it, and requests get another board',
  async (t) => {
    writeFileSync(path.join(lab.boards[1].dir, 'broken'), '');
    try {
      const yaml = [
        lab.boardYaml(lab.boards[0], { tftpRoot }),
        lab.boardYaml(lab.boards[1], { tftpRoot, labels: { arch: 'arm64', type: 'flaky' }, extra: '      timeouts: { bootloader: 4 }' }),
      ].join('\n');
      await withPaddock(yaml, async (paddock) => {
        for (let attempt = 1; attempt <= 2; attempt++) {
          const error = await failure(paddock, 'type=flaky');
          t.is(error.failureCode, 'bootloader_timeout');
          t.is(error.view.allocations[0].failure?.fault, 'infrastructure');
          t.is(error.view.allocations[0].failure?.stage, 'bootSeen');
          t.regex(error.view.allocations[0].failure?.reason ?? '', /not seen within 4s/);
        }
        await waitFor(async () => (await machine(paddock, 'board-2')).state === 'quarantined');
        t.regex((await machine(paddock, 'board-2')).reason ?? '', /2 infrastructure failures in a row/);
        // A quarantined board is no longer matched: an arm64 request gets the other board, and one
        // only the quarantined board could serve waits.
        const other = await paddock.reserve({ members: [{ role: 'board', spec: 'arch=arm64', image: 'junk' }], lease: '10m' }, { renew: false });
        t.is(other.view.allocations[0]?.machine, 'board-1');
        const waiting = await paddock.reserve({ members: [{ role: 'board', spec: 'type=flaky', image: 'junk' }], lease: '10m' }, { renew: false });
        t.is(waiting.view.state, 'queued');
        await waiting.release();
        await other.release();
      });
    } finally {
      rmSync(path.join(lab.boards[1].dir, 'broken'), { force: true });
    }
  },
);

// A PDU that goes down between two of the agent's checks: the checks are off here, so the request
// is granted and fails (test/cli/lab-host-checks.test.ts shows a PDU found down by a check).
test.serial('the PDU daemon down fails at powerConfirmed as an infrastructure fault', async (t) => {
  await withPaddock(
    lab.boardYaml(lab.boards[0], { tftpRoot }),
    async (paddock) => {
      await lab.stopPdu();
      const error = await failure(paddock);
      t.is(error.failureCode, 'power_failed');
      t.is(error.view.allocations[0].failure?.fault, 'infrastructure');
      t.is(error.view.allocations[0].failure?.stage, 'powerConfirmed');
      t.regex(error.view.allocations[0].failure?.reason ?? '', /unreachable|ECONNREFUSED|refused/i);
      t.false(existsSync(path.join(tftpRoot, 'paddock', `${error.view.id}-board-1`)));
    },
    'agent: { checkInterval: 0 }\n',
  );
});
