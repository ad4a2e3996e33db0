// Interactive console access to a real board on the emulated lab (arm64 U-Boot board, console on
// TCP as ser2net offers it, booting a console-only image): only the owner types, through the API's
// console stream (`paddock console -i`, the client library); a local process on the relay's port
// gets nothing without the reservation's console secret; one writer at a time with an explicit
// takeover; and a bundle whose cmdline would type commands at U-Boot is refused before power-on.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import test from 'ava';
import { ForbiddenError, InvalidRequestError, NotFoundError, Paddock, ReservationFailedError, type Reservation } from '../../client/index.js';
import { startApi, testConfig, type TestApi } from '../helpers/api.js';
import { testImages } from '../helpers/images.js';
import { powerScript, startLab, type Lab } from '../helpers/lab/index.js';
import { waitFor } from '../helpers/wait.js';

const tftpRoot = '/tmp/paddock-test-tftp';
let lab: Lab;
let api: TestApi;
let owner: Paddock;
let mallory: Paddock;
let malloryToken: string;
let ownerToken: string;
let scratch: string;

test.before(async () => {
  const images = await testImages();
  lab = await startLab(1, { tcpConsoles: [1] });
  scratch = mkdtempSync(path.join(os.tmpdir(), 'paddock-console-test-'));
  api = await startApi(
    testConfig(
      ['machines:', lab.boardYaml(lab.boards[0], { tftpRoot, name: 'console-board', labels: { arch: 'arm64', type: 'console-only' }, ssh: false })].join('\n'),
    ),
  );
  const token = async (name: string) => ((await api.http().post('v1/tokens', { json: { name, role: 'user' } })).body as { token: string }).token;
  ownerToken = await token('olivia');
  owner = new Paddock({ url: api.url, token: ownerToken });
  malloryToken = await token('mallory');
  mallory = new Paddock({ url: api.url, token: malloryToken });
  // The console-only system (no network), and the same with a cmdline that would type at U-Boot.
  execFileSync('tar', ['-xf', images.arm64, '-C', scratch]);
  const cmdline = readFileSync(path.join(scratch, 'cmdline'), 'utf8').trim();
  writeFileSync(path.join(scratch, 'cmdline'), `${cmdline} paddock.network=off`);
  execFileSync('tar', ['-cf', path.join(scratch, 'nonet.tar'), '-C', scratch, 'kernel', 'initrd', 'cmdline']);
  await owner.images.upload(path.join(scratch, 'nonet.tar'), { name: 'arm-nonet', format: 'bundle', arch: 'arm64' });
  writeFileSync(path.join(scratch, 'cmdline'), `${cmdline}\n; reset \x03 tftpboot 0x40000000 /etc/shadow`);
  execFileSync('tar', ['-cf', path.join(scratch, 'inject.tar'), '-C', scratch, 'kernel', 'initrd', 'cmdline']);
  await owner.images.upload(path.join(scratch, 'inject.tar'), { name: 'arm-inject', format: 'bundle', arch: 'arm64' });
});

test.after.always(async () => {
  await api?.close();
  await lab?.stop();
  rmSync(scratch, { recursive: true, force: true });
});

const outletState = () => execFileSync(powerScript, [lab.dir, 'status', '1'], { encoding: 'utf8' }).trim();

test.serial('a bundle whose cmdline holds a newline and ^C is refused before anything is typed at U-Boot (image_invalid)', async (t) => {
  const reservation = await owner.reserve({ members: [{ role: 'board', spec: 'type=console-only', image: 'arm-inject' }], lease: '10m' });
  const error = await t.throwsAsync(reservation.ready({ timeout: 300 }), { instanceOf: ReservationFailedError });
  t.is(error?.failureCode, 'image_invalid');
  t.is(error?.view.allocations[0].failure?.fault, 'request');
  t.regex(error?.view.allocations[0].failure?.reason ?? '', /printable ASCII: byte 0x0a/);
  t.is(outletState(), 'off', 'the board was never powered on');
  const log = path.join(api.dataDir, 'consoles', reservation.id, 'console-board.log');
  t.false(existsSync(log) && /reset|tftpboot/.test(readFileSync(log, 'utf8')), 'nothing was typed');
  t.true(
    (await owner.machines()).every((machine) => machine.failures === 0),
    'not counted against the board',
  );
});

/** `paddock console ID -i` as the owner runs it, stdin a pipe. */
function cli(reservation: Reservation, args: string[] = []) {
  const child = spawn(process.execPath, [path.resolve('bin/paddock.js'), 'console', reservation.id, 'board', '-i', ...args], {
    env: { ...process.env, PADDOCK_URL: api.url, PADDOCK_TOKEN: ownerToken },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString('latin1')));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
  return { child, stdout: () => stdout, stderr: () => stderr, exited, type: (text: string) => child.stdin.write(text) };
}

test.serial('only the owner types at the board: paddock console -i, a hostile local process on the relay, another user, a takeover', async (t) => {
  const reservation = await owner.reserve({ members: [{ role: 'board', spec: 'type=console-only', image: 'arm-nonet' }], lease: '10m' });
  await reservation.ready({ timeout: 300 });
  const relay = reservation.view.allocations[0].console!;
  t.truthy(relay, 'the board has a relay on its lab host');
  t.is((await reservation.credentials()).console, undefined, 'telnet is off: no console secret is handed out');

  // A local process on the relay's port, as telnet would: it answers garbage, then tries to type.
  const intruder = net.connect(relay);
  let intruderSaw = '';
  intruder.on('data', (chunk: Buffer) => (intruderSaw += chunk.toString('latin1')));
  intruder.on('error', () => undefined);
  await new Promise((resolve) => intruder.once('connect', resolve));
  intruder.write('letmein\r\necho INTRUDER-$((3*3))\r\n');

  // The owner, through the API.
  const session = cli(reservation);
  await waitFor(async () => /you type/.test(session.stderr()), 120_000, 'the CLI typing');
  session.type('echo owner-$((6*7))\n');
  await waitFor(async () => session.stdout().includes('owner-42'), 120_000, 'the board answering the owner');

  // Another user: refused before the stream opens, whatever the mode.
  const stolen = await mallory.reservation(reservation.id, { renew: false }).catch((error: unknown) => error);
  t.true(stolen instanceof ForbiddenError, 'another user cannot even see it');
  for (const query of ['?mode=write&takeover=1', '']) {
    const { socket, opened } = await mallory.http.webSocket(`v1/reservations/${reservation.id}/console/stream${query}`);
    await t.throwsAsync(opened, { instanceOf: ForbiddenError });
    t.not(socket.readyState, socket.OPEN);
  }
  await t.throwsAsync(reservation.openConsole({ machine: '../../x' }), { instanceOf: InvalidRequestError });
  await t.throwsAsync(reservation.openConsole({ machine: 'board-9' }), { instanceOf: NotFoundError });

  // A second writer (the owner's script, through the library) waits, then takes over.
  const second = await reservation.openConsole({ write: true });
  t.is(second.mode, 'read', 'one writer at a time');
  let secondSaw = '';
  second.on('data', (bytes: Buffer) => (secondSaw += bytes.toString('latin1')));
  const promoted = second.nextMode();
  second.takeover();
  t.is((await promoted).mode, 'write');
  await waitFor(async () => /read-only: another session took over/.test(session.stderr()), 120_000, 'the CLI told it was demoted');
  session.type('echo demoted-$((2*2))\n');
  second.write('echo second-$((5*5))\n');
  await waitFor(async () => secondSaw.includes('second-25'), 120_000, 'the board answering the new writer');
  await new Promise((resolve) => setTimeout(resolve, 1000));
  t.true(session.stdout().includes('second-25'), 'the demoted session still watches');

  session.type('~.');
  t.is(await session.exited, 0, '~. quits');
  second.close();
  const log = readFileSync(path.join(api.dataDir, 'consoles', reservation.id, 'console-board.log'), 'latin1');
  t.regex(log, /owner-42/);
  t.regex(log, /second-25/);
  t.notRegex(log, /demoted-4|echo demoted/, 'the demoted session typed nothing');
  t.notRegex(log, /INTRUDER|letmein/, 'the intruder typed nothing');
  t.regex(intruderSaw, /wrong console secret/);
  t.notRegex(intruderSaw, /owner-42|second-25/, 'the intruder saw nothing of the console');
  intruder.destroy();
  await reservation.release();
});
