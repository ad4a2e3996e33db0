// A job script's side of the several-hosts test, run inside the user's network namespace with the
// client library (PADDOCK_URL, PADDOCK_TOKEN from the environment). Prints one JSON line.
//   gang BOARD_IMAGE VM_IMAGE   reserves a board and a VM in one gang and waits until both are ready
//   copy ID                     copies a file made on the board to the VM (both through tunnels)
import { rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Paddock } from '../../client/index.js';

const [command, ...rest] = process.argv.slice(2);
const paddock = new Paddock();
if (command === 'gang') {
  const [boardImage, vmImage] = rest;
  const reservation = await paddock.reserve({
    members: [
      { role: 'board', spec: 'arch=arm64', image: boardImage },
      { role: 'vm', spec: 'arch=x86_64', image: vmImage },
    ],
    lease: '20m',
  });
  await reservation.ready({ timeout: 300 });
  const credentials = await reservation.credentials();
  process.stdout.write(`${JSON.stringify({ id: reservation.id, via: credentials.machines.map((machine) => [machine.role, machine.via]) })}\n`);
} else if (command === 'copy') {
  const reservation = await paddock.reservation(rest[0]);
  const made = await reservation.run('board', 'head -c 300000 /dev/urandom > /tmp/from-board.bin && sha256sum /tmp/from-board.bin');
  if (made.code !== 0) throw new Error(`the board could not make the file: ${made.stderr}`);
  const local = path.join(os.tmpdir(), `paddock-netns-copy-${process.pid}.bin`);
  await reservation.copyFrom('board', '/tmp/from-board.bin', local);
  await reservation.copyTo('vm', local, '/tmp/from-board.bin');
  rmSync(local, { force: true });
  const arrived = await reservation.run('vm', 'sha256sum /tmp/from-board.bin');
  process.stdout.write(`${JSON.stringify({ board: made.stdout.split(' ')[0], vm: arrived.stdout.split(' ')[0] })}\n`);
} else {
  throw new Error(`unknown command ${command}`);
}
