// Benchmark (not a test): the time from reserve to ready for a QEMU VM through Paddock, divided
// by the time a plain shell script takes to start the same QEMU command on the same image and poll
// until SSH answers, measured in the same run, alternating, on one VM slot. Aim: Paddock adds at
// most 5 % (ratio ≤ 1.05). The first Paddock boot, which also downloads the image into the
// agent's cache and unpacks the bundle, is shown apart and not counted.
//
//   node --import tsx bench/qemu.ts [ROUNDS]      (default 7)
import { setTimeout as sleep } from 'node:timers/promises';
import { execFile, execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { parseConfig } from '../api/config.js';
import { serve } from '../cli/serve.js';
import { Paddock } from '../client/index.js';
import { freeLoopbackPort } from '../provisioners/qemu/adapter.js';
import { compareToPlain, reserveToReady } from './compare.js';
import { silentLog } from '../protocol/log.js';

const run = promisify(execFile);
const rounds = Number(process.argv[2] ?? 7);
const root = path.resolve(import.meta.dirname, '..');
const built = execFileSync('bash', [path.join(root, 'images/recipes/build-test-images.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
const imageDir = built
  .split('\n')
  .find((line) => line.startsWith('x86-initramfs '))!
  .split(' ')[1];
const dir = mkdtempSync(path.join(os.tmpdir(), 'paddock-bench-qemu-'));

// The plain script: what a lab would write by hand without Paddock.
const script = path.join(dir, 'boot.sh');
writeFileSync(
  script,
  `#!/bin/bash
set -e
IMG=$1 PORT=$2 KEY=$3 RUN=$4
qemu-system-x86_64 -machine q35,accel=tcg -cpu max -smp 1 -m 256 -nodefaults -no-user-config -display none \\
  -kernel "$IMG/vmlinux" -initrd "$IMG/initrd.cpio.gz" -append "$(cat "$IMG/cmdline")" \\
  -fw_cfg name=opt/paddock/authorized_keys,file="$KEY.pub" \\
  -nic user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:"$PORT"-:22 \\
  -serial file:"$RUN/console.log" -daemonize -pidfile "$RUN/qemu.pid"
until ssh -q -i "$KEY" -p "$PORT" -o BatchMode=yes -o ConnectTimeout=2 -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null root@127.0.0.1 true; do
  sleep 0.1
done
`,
);
execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', path.join(dir, 'key')]);

const config = {
  ...parseConfig('machines:\n  - { name: vm, kind: qemu, count: 1 }\n'),
  listen: { host: '127.0.0.1', port: 0 },
  dataDir: path.join(dir, 'data'),
};
const server = await serve({ config, log: silentLog() });
const seconds = (since: bigint) => Number(process.hrtime.bigint() - since) / 1e9;
try {
  const paddock = new Paddock({ url: server.url, token: readFileSync(server.adminTokenFile, 'utf8').trim() });
  await paddock.images.upload(path.join(imageDir, 'bundle.tar'), { name: 'tiny', format: 'bundle' });

  const throughPaddock = () => reserveToReady(paddock, 'tiny', 300);
  const plain = async (round: number) => {
    const runDir = mkdtempSync(path.join(dir, `plain-${round}-`));
    const port = await freeLoopbackPort();
    const started = process.hrtime.bigint();
    await run('bash', [script, imageDir, String(port), path.join(dir, 'key'), runDir]);
    const elapsed = seconds(started);
    process.kill(Number(readFileSync(path.join(runDir, 'qemu.pid'), 'utf8')), 'SIGTERM');
    await sleep(300);
    return elapsed;
  };

  console.log(`first boot through Paddock (image download and bundle unpack included): ${(await throughPaddock()).toFixed(2)} s`);
  await compareToPlain({ rounds, what: 'reserve→ready', aim: 1.05, plain: (round) => plain(round), paddock: throughPaddock });
} finally {
  await server.close();
  // The plain script's VMs that a failed round may have left.
  await run('pkill', ['-f', dir]).catch(() => undefined);
  rmSync(dir, { recursive: true, force: true });
}
