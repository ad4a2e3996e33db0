// A console line's check, as the agent runs it: a serial device must exist and be a character
// device; a TCP console must accept a connection, which is closed at once with nothing sent, and
// a line the agent holds open counts as reached without a second connection (ser2net may allow
// only one).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import test from 'ava';
import { SerialTransport } from '../../boards/console/serial.js';
import { TcpTransport } from '../../boards/console/tcp.js';
import { freePort } from '../helpers/ports.js';
import { waitFor } from '../helpers/wait.js';

const signal = () => AbortSignal.timeout(20_000);

test('a serial line: missing, not a character device, or there', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'paddock-console-check-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const missing = path.join(dir, 'ttyUSB9');
  await t.throwsAsync(new SerialTransport({ device: missing, baud: 115200 }).check(), { message: `no such serial device ${missing}` });
  const file = path.join(dir, 'plain');
  writeFileSync(file, '');
  await t.throwsAsync(new SerialTransport({ device: file, baud: 115200 }).check(), { message: `${file} is not a serial device (not a character device)` });
  await t.notThrowsAsync(new SerialTransport({ device: '/dev/null', baud: 115200 }).check());
});

test('a TCP console: one short connection with nothing sent; none while the line is held open; refused when nothing listens', async (t) => {
  const connections: { received: number; closed: boolean }[] = [];
  const server = net.createServer((socket) => {
    const connection = { received: 0, closed: false };
    connections.push(connection);
    socket.on('data', (chunk) => (connection.received += chunk.length));
    socket.on('close', () => (connection.closed = true));
    socket.on('error', () => undefined);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  t.teardown(() => server.close());

  await new TcpTransport({ tcp: `127.0.0.1:${port}` }).check(signal());
  await waitFor(async () => connections.length === 1 && connections[0].closed, 60_000, 'the check connection closed');
  t.is(connections[0].received, 0, 'nothing was sent');

  const held = new TcpTransport({ tcp: `127.0.0.1:${port}` });
  await held.open(() => undefined);
  t.teardown(() => held.close());
  await waitFor(async () => connections.length === 2, 60_000, 'the line opened');
  await held.check(signal());
  await held.check(signal());
  // A fresh transport's check after them is the third connection the server accepts, not the fifth.
  await new TcpTransport({ tcp: `127.0.0.1:${port}` }).check(signal());
  await waitFor(async () => connections.length >= 3, 60_000, 'the last check seen');
  t.is(connections.length, 3, 'no connection beside the open line');
  t.false(connections[1].closed);

  const nothing = await freePort();
  await t.throwsAsync(new TcpTransport({ tcp: `127.0.0.1:${nothing}` }).check(signal()), {
    message: `the console at tcp 127.0.0.1:${nothing} does not answer (connection refused)`,
  });
});
