// Benchmark (not a test): reserve→ready for a stock Debian cloud image (images/recipes/debian-cloud.sh,
// uploaded with access cloud-init) through Paddock, against a plain script that boots the same
// image with the same kind of NoCloud seed (the same cloud-config, a `cidata` ISO made with
// genisoimage) by running QEMU directly with the same options, and polls until an SSH login with
// the pinned host key works. Same run, rounds alternating (bench/compare.ts), one VM slot. Aim:
// ratio ≤ 1.05. Under TCG one boot takes a minute or more: few rounds. The first Paddock boot, which
// also copies the image into the agent's cache, is shown apart and not counted.
//
//   node --import tsx bench/cloud-image.ts [ROUNDS]      (default 3; needs the image: run as root)
import { setTimeout as sleep } from 'node:timers/promises';
import { execFile, execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { parseConfig } from '../api/config.js';
import { serve } from '../cli/serve.js';
import { Paddock } from '../client/index.js';
import { cloudConfig, newHostKey, noCloudMetaData } from '../provisioners/cloud-init.js';
import { freeLoopbackPort } from '../provisioners/qemu/adapter.js';
import { compareToPlain, reserveToReady } from './compare.js';
import { silentLog } from '../protocol/log.js';

const run = promisify(execFile);
const rounds = Number(process.argv[2] ?? 3);
const root = path.resolve(import.meta.dirname, '..');
const built = execFileSync('bash', [path.join(root, 'images/recipes/build-test-images.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
const imageDir = built
  .split('\n')
  .find((line) => line.startsWith('debian-cloud '))
  ?.split(' ')[1];
if (!imageDir) throw new Error('no Debian cloud image: run images/recipes/build-test-images.sh as root');
const image = path.join(imageDir, 'disk.qcow2');
const dir = mkdtempSync(path.join(os.tmpdir(), 'paddock-bench-cloud-'));

// The plain script: what a lab would write by hand. The same QEMU options as the qemu kind's defaults
// (bootTimeout aside) on a 1 CPU, 1 GiB slot; the console to a file.
const script = path.join(dir, 'boot.sh');
writeFileSync(
  script,
  `#!/bin/bash
set -e
IMG=$1 PORT=$2 KEY=$3 RUN=$4
genisoimage -quiet -output "$RUN/seed.iso" -volid cidata -joliet -rock "$RUN/user-data" "$RUN/meta-data"
qemu-img create -q -f qcow2 -F qcow2 -b "$IMG" "$RUN/overlay.qcow2"
qemu-system-x86_64 -machine q35,accel=tcg -cpu max -smp 1 -m 1024 -nodefaults -no-user-config -display none \\
  -serial file:"$RUN/console.log" -nic user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:"$PORT"-:22 -device virtio-rng-pci \\
  -drive file="$RUN/overlay.qcow2",if=virtio,format=qcow2,cache=unsafe -drive file="$RUN/seed.iso",if=virtio,format=raw,readonly=on \\
  -daemonize -pidfile "$RUN/qemu.pid"
echo "[127.0.0.1]:$PORT $(cat "$RUN/host.pub")" > "$RUN/known_hosts"
until ssh -q -i "$KEY" -p "$PORT" -o BatchMode=yes -o ConnectTimeout=5 -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$RUN/known_hosts" root@127.0.0.1 true; do
  sleep 0.5
done
`,
);
const key = path.join(dir, 'key');
execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', key]);
const publicKey = readFileSync(`${key}.pub`, 'utf8').trim();

const config = {
  ...parseConfig('machines:\n  - { name: vm, kind: qemu, count: 1, capacities: { cpus: 1, ram: 1GiB }, settings: { bootTimeout: 1800 } }\n'),
  listen: { host: '127.0.0.1', port: 0 },
  dataDir: path.join(dir, 'data'),
};
const server = await serve({ config, log: silentLog() });
const seconds = (since: bigint) => Number(process.hrtime.bigint() - since) / 1e9;
try {
  const paddock = new Paddock({ url: server.url, token: readFileSync(server.adminTokenFile, 'utf8').trim() });
  await paddock.images.upload(image, { name: 'debian-cloud', format: 'qcow2', access: 'cloud-init' });

  const throughPaddock = () => reserveToReady(paddock, 'debian-cloud', 1800);
  const plain = async (round: number) => {
    const runDir = mkdtempSync(path.join(dir, `plain-${round}-`));
    const hostKey = newHostKey(`bench-${round}`);
    writeFileSync(path.join(runDir, 'user-data'), cloudConfig({ publicKey, hostKey }), { mode: 0o600 });
    writeFileSync(path.join(runDir, 'meta-data'), noCloudMetaData({ instanceId: `bench-${round}-${Date.now()}`, hostname: 'vm-1' }));
    writeFileSync(path.join(runDir, 'host.pub'), hostKey.publicKey.split(' ').slice(0, 2).join(' '));
    const port = await freeLoopbackPort();
    const started = process.hrtime.bigint();
    try {
      await run('bash', [script, image, String(port), key, runDir], { timeout: 1800_000 });
      return seconds(started);
    } finally {
      const pid = Number(existsSync(path.join(runDir, 'qemu.pid')) ? readFileSync(path.join(runDir, 'qemu.pid'), 'utf8') : 0);
      if (pid > 0) process.kill(pid, 'SIGTERM');
      await sleep(500);
      rmSync(runDir, { recursive: true, force: true });
    }
  };

  console.log(`first boot through Paddock (image copy into the agent's cache included): ${(await throughPaddock()).toFixed(2)} s`);
  await compareToPlain({
    rounds,
    what: 'reserve→ready (Debian cloud image, cloud-init seed)',
    aim: 1.05,
    plain: (round) => plain(round),
    paddock: throughPaddock,
  });
} finally {
  await server.close();
  rmSync(dir, { recursive: true, force: true });
}
