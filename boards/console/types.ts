// The console capability: what a boot strategy (boot/uboot.ts) may do with a board's console,
// whatever line carries it (serial.ts, tcp.ts) and whoever else watches it (the relay, the logs).
// Strategies depend on this interface only, so they can be driven on any console.

export interface Console {
  /** Human-readable line, for messages (`serial /dev/ttyUSB0 at 115200 baud`). */
  readonly describe: string;
  /** Types `text` on the line. */
  send(text: string | Buffer): Promise<void>;
  /** Forgets what was printed so far: the next expect looks only at new output. */
  mark(): void;
  /**
   * Waits until one of `patterns` appears in the output after the mark; resolves with its index
   * and match, and moves the mark past it. Throws ExpectTimeout, or the signal's reason.
   */
  expect(patterns: RegExp[], timeoutMs: number, what: string, signal?: AbortSignal): Promise<{ index: number; match: RegExpExecArray; before: string }>;
  /** The last lines printed, control characters removed. */
  tail(lines?: number): string;
}

/** A pattern not seen in time. `tail` is the console's last lines, for the failure reason. */
export class ExpectTimeout extends Error {
  constructor(
    readonly what: string,
    readonly timeoutMs: number,
    readonly tail: string,
  ) {
    super(`${what} not seen within ${timeoutMs / 1000}s`);
    this.name = 'ExpectTimeout';
  }
}

/** The last `lines` lines of console output, without carriage returns, escape sequences or control characters. */
export function consoleLines(text: string, lines: number): string {
  /* eslint-disable no-control-regex -- removing them is the point */
  const clean = text
    .replace(/\r/g, '')
    .replace(/\x1b\[[0-9;?]*[A-Za-z]/g, '')
    .replace(/[\x00-\x08\x0b-\x1f\x7f]/g, '');
  /* eslint-enable no-control-regex */
  return clean.trim().split('\n').slice(-lines).join('\n') || '(the console is empty)';
}

/** One way to reach a console line (a serial device, a TCP port): one file per transport. */
export interface ConsoleTransport {
  readonly describe: string;
  /** Opens the line; `onData` gets every byte until close(). Rejects if it cannot be opened. */
  open(onData: (chunk: Buffer) => void): Promise<void>;
  write(data: string | Buffer): Promise<void>;
  close(): Promise<void>;
  /**
   * Whether the line can be reached now, without writing to it or taking it from whoever holds it:
   * throws saying what is wrong (no such device, nothing listening). A line this transport holds
   * open is reached.
   */
  check(signal: AbortSignal): Promise<void>;
}
