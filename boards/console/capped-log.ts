// A console log on disk that never grows past its cap, whatever a guest or a board prints.
//
// Two policies, for two kinds of log:
// - `head` (a reservation's log, DATA/agent/consoles/RESERVATION/MACHINE.log): the first bytes up to the
//   cap are kept, then one marker line says the rest was dropped. The boot, where failures are
//   read, is what a reader needs; a guest that floods its console loses only its own later output.
// - `rotate` (a board's lifetime log, DATA/boards/BOARD/console.log): when the file reaches half the
//   cap it becomes FILE.1 (replacing the one before) and a new file starts, so the newest output is
//   always kept and the two files together stay under the cap.
// The size on disk is counted from the file as found at open, so a restarted agent keeps the cap.
import { createWriteStream, mkdirSync, openSync, renameSync, statSync, type WriteStream } from 'node:fs';
import path from 'node:path';

export const defaultConsoleLogMax = 16 * 1024 ** 2;

export function cappedMarker(maxBytes: number): string {
  return `\n[paddock: console log capped at ${maxBytes} bytes; later output is not kept]\n`;
}

/** The line a reservation's log gets before another boot of the same lease (a power action, a re-deploy) is appended. */
export function bootNote(what: string): string {
  return `\n[paddock: ${what} at ${new Date().toISOString()}]\n`;
}

export class CappedLog {
  private stream: WriteStream;
  private size: number;
  /** Bytes in the file now (what was there at open, and what was written since). */
  get bytes(): number {
    return this.size;
  }
  private capped = false;

  constructor(
    readonly file: string,
    readonly maxBytes: number,
    readonly policy: 'head' | 'rotate',
  ) {
    mkdirSync(path.dirname(file), { recursive: true });
    this.size = sizeOf(file);
    this.capped = policy === 'head' && this.size >= maxBytes;
    this.stream = appendTo(file);
  }

  write(chunk: Buffer): void {
    if (this.policy === 'rotate') return this.rotating(chunk);
    if (this.capped) return;
    const marker = Buffer.from(cappedMarker(this.maxBytes));
    const room = this.maxBytes - marker.length - this.size;
    if (chunk.length <= room) {
      this.append(chunk);
      return;
    }
    if (room > 0) this.append(chunk.subarray(0, room));
    this.append(marker);
    this.capped = true;
  }

  end(): void {
    if (!this.stream.writableEnded) this.stream.end();
  }

  private rotating(chunk: Buffer): void {
    const half = Math.max(1, Math.floor(this.maxBytes / 2));
    for (let rest = chunk; rest.length > 0;) {
      if (this.size >= half) {
        this.stream.end();
        try {
          renameSync(this.file, `${this.file}.1`);
        } catch {
          // Gone or not movable: the new file starts all the same.
        }
        this.stream = appendTo(this.file);
        this.size = 0;
      }
      const piece = rest.subarray(0, half - this.size);
      this.append(piece);
      rest = rest.subarray(piece.length);
    }
  }

  private append(bytes: Buffer): void {
    this.size += bytes.length;
    this.stream.write(bytes);
  }
}

/** Opened at once (not when the stream gets round to it), so the file exists for a rotation. */
function appendTo(file: string): WriteStream {
  return createWriteStream(file, { fd: openSync(file, 'a', 0o600) });
}

function sizeOf(file: string): number {
  try {
    return statSync(file).size;
  } catch {
    return 0;
  }
}
