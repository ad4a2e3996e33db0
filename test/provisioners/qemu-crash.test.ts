// kill -9 of `paddock serve` while QEMU VMs run, then a restart on the same data directory: the
// ready VM is re-attached (still serving, and watched again), the VM caught mid-boot is finished,
// a VM left by a reservation that is over (known from its provisioning record) is stopped, and no
// QEMU process is unaccounted for.
import { execFileSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import test from 'ava';
import { Paddock, type ReservationView } from '../../client/index.js';
import { isVmProcess, vmProcessesUnder } from '../../provisioners/qemu/adapter.js';
import { freePort } from '../helpers/ports.js';
import { waitFor } from '../helpers/wait.js';
import { testImages } from '../helpers/images.js';
import { killHard, startServerProcess } from '../helpers/server.js';
import { readyVmRecord, writeRecordFile } from '../helpers/records.js';

test('kill -9 while VMs run, restart: VMs re-attached or cleaned, none unaccounted for', async (t) => {
  t.timeout(240_000);
  const images = await testImages();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'paddock-qemu-crash-'));
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const data = path.join(dir, 'data');
  const qemuRoot = path.join(data, 'qemu');
  const args = ['--listen', `127.0.0.1:${port}`, '--data', data]; // the embedded defaults: two VM slots
  let server: ChildProcess | undefined;
  try {
    server = await startServerProcess(args, url);
    const paddock = new Paddock({ url, token: readFileSync(path.join(data, 'admin-token'), 'utf8').trim() });
    await paddock.images.upload(images.initramfs, { name: 'tiny', format: 'bundle' });

    const ready = await paddock.reserve({ members: [{ role: 'vm', spec: 'arch=x86_64', image: 'tiny' }], lease: '10m' }, { renew: false });
    await ready.ready({ timeout: 300 });
    const [readyVm] = await vmProcessesUnder(qemuRoot);
    const midway = await paddock.reserve({ members: [{ role: 'vm', spec: 'arch=x86_64', image: 'tiny' }], lease: '10m' }, { renew: false });
    await waitFor(async () => (await midway.refresh()).allocations[0]?.stages.powerConfirmed !== undefined, 60_000);

    // A VM whose reservation is over (as a crash during its release would leave it): a QEMU
    // process with its pid file in its run directory, and the loop's provisioning record of a
    // ready VM that no live reservation owns.
    const orphanDir = path.join(qemuRoot, 'vm-1', 'r-0000000000aa');
    mkdirSync(orphanDir, { recursive: true });
    execFileSync('qemu-system-x86_64', ['-machine', 'none', '-nodefaults', '-display', 'none', '-daemonize', '-pidfile', path.join(orphanDir, 'qemu.pid')]);
    const orphanPid = Number(readFileSync(path.join(orphanDir, 'qemu.pid'), 'utf8'));
    const records = path.join(data, 'agent', 'provisioning');
    t.true(existsSync(path.join(records, ready.view.allocations[0].machine, `${ready.id}.json`)), 'the ready VM has its provisioning record');
    writeRecordFile(data, 'vm-1', 'r-0000000000aa', JSON.stringify(readyVmRecord('vm-1', 'r-0000000000aa', { port: 1, pid: orphanPid })));

    await killHard(server);
    t.true(await isVmProcess(readyVm.pid, qemuRoot), 'VMs outlive a crashed server');
    server = await startServerProcess(args, url);

    await waitFor(async () => !(await isVmProcess(orphanPid, qemuRoot)), 120_000).catch(() => undefined);
    t.false(await isVmProcess(orphanPid, qemuRoot), 'the orphan VM was stopped');
    const carriedOn = await ready.refresh();
    t.is(carriedOn.state, 'ready', 'the ready reservation carries on');
    t.true(await isVmProcess(readyVm.pid, qemuRoot), 'on the same VM');
    t.is((await ready.run('vm', 'echo alive')).stdout.trim(), 'alive');
    await midway.ready({ timeout: 300 });
    t.is((await midway.run('vm', 'echo finished')).stdout.trim(), 'finished', 'the VM caught mid-boot is finished');

    // Every QEMU process under the data directory belongs to a live allocation.
    const live = new Set([ready, midway].map((reservation) => path.join(qemuRoot, reservation.view.allocations[0].machine, reservation.id)));
    const running = await vmProcessesUnder(qemuRoot);
    t.is(running.length, 2);
    for (const vm of running) t.true(live.has(path.dirname(vm.pidFile)), `${vm.pidFile} belongs to a live reservation`);

    // The re-attached VM is watched again: if it dies, its reservation fails.
    process.kill(readyVm.pid, 'SIGKILL');
    await waitFor(async () => (await ready.refresh()).state === 'failed', 120_000);
    t.is((ready.view as ReservationView).allocations[0].failure?.code, 'machine_lost');

    await midway.release();
    await waitFor(async () => (await vmProcessesUnder(qemuRoot)).length === 0, 120_000).catch(() => undefined);
    t.deepEqual(await vmProcessesUnder(qemuRoot), [], 'nothing is left once everything is released');
  } finally {
    if (server) await killHard(server);
    for (const vm of await vmProcessesUnder(qemuRoot)) process.kill(vm.pid, 'SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
});
