// Console logs have a cap: a board that prints far more than consoles.maxLogSize over its console
// line (a TCP console, as ser2net serves one) leaves a rotated board log and a reservation log that
// keeps its head and a marker, both within the cap.
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import test from 'ava';
import { CappedLog, cappedMarker } from '../../boards/console/capped-log.js';
import { BoardConsole } from '../../boards/console/index.js';
import { waitFor } from '../helpers/wait.js';

const KiB = 1024;
const cap = 64 * KiB;

test('a board printing ten times the cap leaves a rotated board log and a capped reservation log', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'paddock-console-log-'));
  const lines = Array.from({ length: 8000 }, (_, index) => `board line ${String(index).padStart(5, '0')} ${'x'.repeat(70)}\n`);
  const printed = lines.join('');
  t.true(printed.length > 10 * cap);
  // The board: prints its boot, then floods the line.
  const board = net.createServer((socket) => socket.end(printed));
  await new Promise<void>((resolve) => board.listen(0, '127.0.0.1', resolve));
  const boardLog = path.join(dir, 'boards', 'b1', 'console.log');
  const reservationLog = path.join(dir, 'consoles', 'r1', 'b1.log');
  const console = new BoardConsole({ tcp: `127.0.0.1:${(board.address() as net.AddressInfo).port}` }, boardLog, cap);
  const log = new CappedLog(reservationLog, cap, 'head');
  const untap = console.tap((chunk) => log.write(chunk));
  try {
    await console.open();
    await console.expect([/board line 07999/], 60_000, 'the last line');
  } finally {
    untap();
    log.end();
    await console.close();
    await new Promise((resolve) => board.close(resolve));
  }
  // Both files are written by streams of their own: wait until both are flushed.
  const newest = () => readFileSync(`${boardLog}.1`, 'utf8') + readFileSync(boardLog, 'utf8');
  await waitFor(async () => newest().endsWith(lines.at(-1)!) && printed.endsWith(newest()), 120_000, 'the board log written');

  const current = statSync(boardLog).size;
  const previous = statSync(`${boardLog}.1`).size;
  t.true(current + previous <= cap, `the board log and its previous file hold ${current} + ${previous} bytes`);
  t.true(printed.endsWith(newest()), 'the newest output is kept, in order');

  await waitFor(async () => readFileSync(reservationLog, 'utf8').endsWith(cappedMarker(cap)), 120_000, 'the marker');
  const kept = readFileSync(reservationLog, 'utf8');
  t.is(kept.length, cap, 'the reservation log stops at the cap');
  t.true(kept.startsWith(lines.slice(0, 10).join('')), 'its head is the start of the output');

  // A restarted agent finds the full log and adds nothing to it.
  const again = new CappedLog(reservationLog, cap, 'head');
  again.write(Buffer.from('more after a restart\n'));
  again.end();
  await new Promise((resolve) => setTimeout(resolve, 200));
  t.is(statSync(reservationLog).size, cap);
  rmSync(dir, { recursive: true, force: true });
});
