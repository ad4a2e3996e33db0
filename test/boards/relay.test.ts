// The console relay on a real TCP console line whose far end plays a board's shell: it echoes what
// it is sent (as a serial console does) and prints what the test tells it to. Driven as a hostile
// local process would (no secret, a wrong one), and as the owner's sessions (telnet, framed).
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { BoardConsole } from '../../boards/console/index.js';
import { ConsoleRelay } from '../../boards/console/relay.js';
import { RelayClient, type ModeChange } from '../../protocol/console-relay.js';
import { waitFor } from '../helpers/wait.js';

const secret = 'Zm9vYmFyYmF6cXV4LXRlc3Qtc2VjcmV0';

interface Board {
  relay: { host: string; port: number };
  /** Everything the board received from the console line. */
  received(): string;
  print(text: string): void;
}

async function board(t: ExecutionContext): Promise<Board> {
  let received = '';
  const lines = new Set<net.Socket>();
  const far = net.createServer((socket) => {
    lines.add(socket);
    socket.on('data', (chunk) => {
      received += chunk.toString('latin1');
      socket.write(chunk); // the echo
    });
  });
  await new Promise<void>((resolve) => far.listen(0, '127.0.0.1', resolve));
  const dir = mkdtempSync(path.join(os.tmpdir(), 'paddock-relay-test-'));
  const console = new BoardConsole({ tcp: `127.0.0.1:${(far.address() as net.AddressInfo).port}` }, path.join(dir, 'console.log'));
  await console.open();
  const relay = new ConsoleRelay(console, secret);
  const address = await relay.listen('127.0.0.1');
  t.teardown(async () => {
    await relay.close();
    await console.close();
    for (const socket of lines) socket.destroy();
    far.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return { relay: address, received: () => received, print: (text) => [...lines].forEach((socket) => socket.write(text)) };
}

/** A raw TCP connection, as telnet or any local process would open. */
async function raw(address: { host: string; port: number }) {
  const socket = net.connect(address);
  let seen = '';
  let closed = false;
  socket.on('data', (chunk: Buffer) => (seen += chunk.toString('latin1')));
  socket.on('close', () => (closed = true));
  socket.on('error', () => undefined);
  await new Promise((resolve) => socket.once('connect', resolve));
  return { socket, seen: () => seen, closed: () => closed };
}

const settle = () => new Promise((resolve) => setTimeout(resolve, 300));

test('a local process without the secret sees nothing of the console and types nothing into it', async (t) => {
  const line = await board(t);
  const intruder = await raw(line.relay);
  intruder.socket.write('reboot\r\n'); // taken as its answer to the secret: wrong
  const guesser = await raw(line.relay);
  guesser.socket.write('\xff\xfb\x01'); // telnet negotiation, then nothing: no answer yet
  line.print('OWNER-ONLY-OUTPUT\r\n');
  guesser.socket.write('echo typed-by-guesser');
  await settle();
  await waitFor(async () => intruder.closed(), 120_000, 'the wrong secret closing the connection');
  t.regex(intruder.seen(), /wrong console secret/);
  for (const connection of [intruder, guesser]) t.notRegex(connection.seen(), /OWNER-ONLY-OUTPUT/);
  t.is(line.received(), '', 'nothing reached the board');
  // The owner is not locked out by them.
  const owner = await RelayClient.connect(line.relay, secret, 'write');
  t.is(owner.mode, 'write');
  owner.write(Buffer.from('echo owner\n'));
  await waitFor(async () => line.received() === 'echo owner\n', 120_000, 'the owner typing');
  owner.close();
  guesser.socket.destroy();
});

test('telnet with the secret: the console shows and the keystrokes reach the board', async (t) => {
  const line = await board(t);
  const person = await raw(line.relay);
  await waitFor(async () => /secret/.test(person.seen()), 120_000, 'the greeting');
  person.socket.write(`${secret}\r\n`);
  await waitFor(async () => /you type/.test(person.seen()), 120_000, 'typing granted');
  line.print('board says hi\r\n');
  person.socket.write('ls\r');
  await waitFor(async () => /board says hi/.test(person.seen()) && line.received().length >= 3, 120_000, 'output and typing');
  t.regex(person.seen(), /board says hi/);
  t.is(line.received(), 'ls\r');
  person.socket.destroy();
});

test('one writer at a time: a second writer watches until it takes over; the first is told and demoted', async (t) => {
  const line = await board(t);
  const first = await RelayClient.connect(line.relay, secret, 'write');
  const second = await RelayClient.connect(line.relay, secret, 'write');
  t.is(first.mode, 'write');
  t.is(second.mode, 'read', 'the second writer waits');
  let secondSaw = '';
  second.on('data', (bytes: Buffer) => (secondSaw += bytes.toString()));
  second.write(Buffer.from('second-too-early\n'));
  first.write(Buffer.from('first-types\n'));
  await waitFor(async () => secondSaw.includes('first-types'), 120_000, "the watcher seeing the writer's echo");
  t.is(line.received(), 'first-types\n', "the watcher's keystrokes were dropped");

  const demoted = new Promise<ModeChange>((resolve) => first.once('mode', resolve));
  const promoted = new Promise<ModeChange>((resolve) => second.once('mode', resolve));
  second.takeover();
  t.like(await demoted, { mode: 'read' });
  t.regex((await demoted).reason, /took over/);
  t.like(await promoted, { mode: 'write' });
  first.write(Buffer.from('first-after-demotion\n'));
  second.write(Buffer.from('second-types\n'));
  await waitFor(async () => line.received().includes('second-types'), 120_000, 'the new writer typing');
  await settle();
  t.is(line.received(), 'first-types\nsecond-types\n');
  // A reader never types, even with nobody typing.
  second.close();
  const reader = await RelayClient.connect(line.relay, secret, 'read');
  t.is(reader.mode, 'read');
  reader.write(Buffer.from('reader\n'));
  await settle();
  t.notRegex(line.received(), /reader/);
  first.close();
  reader.close();
});
