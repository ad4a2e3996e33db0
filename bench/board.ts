// Benchmark (not a test): reserve→ready of an arm64 board through Paddock, divided by a plain
// script that does the same by hand on the same board and image in the same run: power on through
// pdudaemon's HTTP API, stop U-Boot's autoboot on the serial line, type the same commands (TFTP from
// the same tftpd-hpa), boot, and poll with `ssh` until a login works. Rounds alternate. Aim: Paddock
// adds at most 10 % (ratio ≤ 1.10). The board is the test lab's emulated one (QEMU + U-Boot).
//
//   node --import tsx bench/board.ts [ROUNDS]      (default 5)
import { setTimeout as sleep } from 'node:timers/promises';
import { execFile, execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { SerialPort } from 'serialport';
import { parseConfig } from '../api/config.js';
import { serve } from '../cli/serve.js';
import { Paddock } from '../client/index.js';
import { compareToPlain } from './compare.js';
import { ensureTftpd } from '../boards/boot/tftpd.js';
import { startLab } from '../test/helpers/lab/index.js';
import { silentLog } from '../protocol/log.js';

const run = promisify(execFile);
const rounds = Number(process.argv[2] ?? 5);
const root = path.resolve(import.meta.dirname, '..');
const built = execFileSync('bash', [path.join(root, 'images/recipes/build-test-images.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
const imageDir = built
  .split('\n')
  .find((line) => line.startsWith('arm64-initramfs '))!
  .split(' ')[1];
// The same TFTP root as the board tests: one tftpd-hpa serves a host's port 69.
const tftpRoot = '/tmp/paddock-test-tftp';
const dir = mkdtempSync(path.join(os.tmpdir(), 'paddock-bench-board-'));
const lab = await startLab(1);
const board = lab.boards[0];
const seconds = (since: bigint) => Number(process.hrtime.bigint() - since) / 1e9;

// The plain script's files, staged by hand once.
mkdirSync(path.join(tftpRoot, 'plain'), { recursive: true });
copyFileSync(path.join(imageDir, 'Image.gz'), path.join(tftpRoot, 'plain', 'kernel'));
copyFileSync(path.join(imageDir, 'initrd.cpio.gz'), path.join(tftpRoot, 'plain', 'initrd'));
const cmdline = readFileSync(path.join(imageDir, 'cmdline'), 'utf8').trim();
execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', path.join(dir, 'key')]);
const key = Buffer.from(readFileSync(path.join(dir, 'key.pub'))).toString('base64');
await ensureTftpd(tftpRoot, '127.0.0.1:69');

async function plain(): Promise<number> {
  const port = new SerialPort({ path: board.tty, baudRate: 115200 });
  let text = '';
  port.on('data', (chunk: Buffer) => (text += chunk.toString('latin1')));
  const until = async (pattern: RegExp) => {
    while (!pattern.test(text)) await sleep(10);
    text = '';
  };
  const type = async (command: string) => {
    port.write(`${command}\n`);
    await until(/\n=> $/);
  };
  const started = process.hrtime.bigint();
  await fetch(`${lab.pdu.url}/power/control/on?hostname=${lab.pdu.name}&port=${board.outlet}`);
  await until(/Hit any key to stop autoboot/);
  port.write(' ');
  await until(/=> $/);
  for (const command of [
    'setenv autoload no',
    'setenv ipaddr 10.0.2.15',
    'setenv netmask 255.255.255.0',
    'setenv gatewayip 10.0.2.2',
    'setenv serverip 127.0.0.1',
    'tftpboot ${kernel_addr_r} plain/kernel',
    'setenv kernel_comp_addr_r 0x48000000',
    'setenv kernel_comp_size ${filesize}',
    'tftpboot ${ramdisk_addr_r} plain/initrd',
    'setenv initrd ${ramdisk_addr_r}:${filesize}',
    `setenv bootargs '${cmdline} paddock.authorized_key=${key}'`,
  ]) {
    await type(command);
  }
  port.write('booti ${kernel_addr_r} ${initrd} ${fdtcontroladdr}\n');
  for (;;) {
    const login = await run('ssh', [
      '-q',
      '-i',
      path.join(dir, 'key'),
      '-p',
      String(board.sshPort),
      '-o',
      'BatchMode=yes',
      '-o',
      'ConnectTimeout=2',
      '-o',
      'StrictHostKeyChecking=no',
      '-o',
      'UserKnownHostsFile=/dev/null',
      'root@127.0.0.1',
      'true',
    ]).then(
      () => true,
      () => false,
    );
    if (login) break;
    await sleep(100);
  }
  const elapsed = seconds(started);
  await new Promise<void>((resolve) => port.close(() => resolve()));
  await fetch(`${lab.pdu.url}/power/control/off?hostname=${lab.pdu.name}&port=${board.outlet}`);
  await sleep(1000); // the board's off-time, as Paddock keeps it
  return elapsed;
}

const config = {
  ...parseConfig(`machines:\n${lab.boardYaml(board, { tftpRoot })}\n`),
  listen: { host: '127.0.0.1', port: 0 },
  dataDir: path.join(dir, 'data'),
};
let server = await serve({ config, log: silentLog() });
const client = () => new Paddock({ url: server.url, token: readFileSync(server.adminTokenFile, 'utf8').trim() });
await client().images.upload(path.join(imageDir, 'bundle.tar'), { name: 'arm', format: 'bundle', arch: 'arm64' });

async function throughPaddock(): Promise<number> {
  const paddock = client();
  const started = process.hrtime.bigint();
  const reservation = await paddock.reserve({ members: [{ role: 'board', spec: 'arch=arm64', image: 'arm' }], lease: '10m' }, { renew: false });
  await reservation.ready({ timeout: 300 });
  const elapsed = seconds(started);
  await reservation.release();
  while ((await paddock.machines()).some((machine) => machine.state !== 'available')) await sleep(50);
  // Paddock keeps the console open while it runs; the plain script opens the line itself.
  await server.close();
  server = await serve({ config, log: silentLog() });
  return elapsed;
}

try {
  console.log(`first boot through Paddock (image download and bundle unpack included): ${(await throughPaddock()).toFixed(2)} s`);
  await compareToPlain({ rounds, what: 'board reserve→ready', aim: 1.1, plain: () => plain(), paddock: throughPaddock });
} finally {
  await server.close();
  await lab.stop();
  rmSync(dir, { recursive: true, force: true });
  rmSync(path.join(tftpRoot, 'plain'), { recursive: true, force: true });
}
