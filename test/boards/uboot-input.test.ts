// What is typed at U-Boot: a value holding a control character (from the image's command line or
// from a board's settings) is refused before the first keystroke. The console is a real TCP line
// (as ser2net offers one) whose far end records every byte it receives.
import net from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import test from 'ava';
import { BoardConsole } from '../../boards/console/index.js';
import { BootError, ubootBoot, type UbootBoot } from '../../boards/boot/uboot.js';

/** A console line whose board side records what it is sent (and shows a prompt once autoboot is stopped). */
async function recordingLine(t: { teardown(fn: () => void): void }, greeting = ''): Promise<{ console: BoardConsole; received: () => string }> {
  let received = '';
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.write(greeting);
    socket.on('data', (chunk) => {
      received += chunk.toString('latin1');
      if (received === ' ') socket.write('\r\n=> ');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const dir = mkdtempSync(path.join(os.tmpdir(), 'paddock-uboot-test-'));
  const console = new BoardConsole({ tcp: `127.0.0.1:${(server.address() as net.AddressInfo).port}` }, path.join(dir, 'console.log'));
  await console.open();
  t.teardown(() => {
    void console.close();
    for (const socket of sockets) socket.destroy();
    server.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return { console, received: () => received };
}

const boot = (console: BoardConsole, change: Partial<UbootBoot> = {}): UbootBoot => ({
  console,
  prompt: '=> ',
  network: { serverIp: '10.0.2.2', netmask: '255.255.255.0', ip: '10.0.2.15' },
  files: { kernel: 'paddock/r-1-board/kernel', initrd: 'paddock/r-1-board/initrd' },
  kernelCompressed: false,
  bootCommand: 'booti',
  decompressAddress: '0x48000000',
  bootargs: 'console=ttyAMA0 paddock.authorized_key=c3NoLWVkMjU1MTkgQUFBQQ==',
  timeouts: { bootloader: 2000, tftp: 2000, kernel: 2000 },
  signal: AbortSignal.timeout(30_000),
  ...change,
});

for (const [what, bootargs] of [
  ['a newline and a command', 'console=ttyAMA0\n; reset'],
  ['^C', 'console=ttyAMA0 \x03 reset'],
  ['a carriage return', 'quiet\rtftpboot 0x40000000 /etc/shadow'],
  ['a non-ASCII byte', 'console=ttyAMA0 ü'],
]) {
  test(`a kernel command line with ${what} is refused as the image's fault and nothing is typed`, async (t) => {
    const line = await recordingLine(t);
    const error = await t.throwsAsync(ubootBoot(boot(line.console, { bootargs })), { instanceOf: BootError });
    t.is(error?.code, 'image_invalid');
    t.is(error?.fault, 'request');
    await new Promise((resolve) => setTimeout(resolve, 200));
    t.is(line.received(), '', 'not one byte reached the board');
  });
}

test("a board setting or a staged file name with a control character is refused as the infrastructure's fault, before typing", async (t) => {
  const line = await recordingLine(t);
  const settings = await t.throwsAsync(ubootBoot(boot(line.console, { network: { serverIp: '10.0.2.2\nreset', netmask: '255.255.255.0' } })), {
    instanceOf: BootError,
  });
  t.is(settings?.code, 'boot_settings_invalid');
  t.is(settings?.fault, 'infrastructure');
  const file = await t.throwsAsync(ubootBoot(boot(line.console, { files: { kernel: 'paddock/x\x03/kernel' } })), { instanceOf: BootError });
  t.is(file?.code, 'boot_settings_invalid');
  await new Promise((resolve) => setTimeout(resolve, 200));
  t.is(line.received(), '');
});

test('a clean boot gets typed (the check lets printable input through)', async (t) => {
  const line = await recordingLine(t, 'U-Boot 2026.01\r\nHit any key to stop autoboot:  2 ');
  // The far end is no U-Boot: it never echoes, so the first command times out after being typed.
  const error = await t.throwsAsync(ubootBoot(boot(line.console)), { instanceOf: BootError });
  t.is(error?.code, 'bootloader_timeout');
  t.is(line.received(), ' echo paddock-attached\n');
});
