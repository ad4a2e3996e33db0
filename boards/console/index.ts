// A board's console: the line (transport.ts) kept open for the agent's lifetime, every byte
// appended to the board's log, copied to whoever taps it (the reservation's log, the telnet
// relay), and `expect`-style waiting for patterns with timeouts for the boot strategies (the
// Console interface, types.ts).
import { CappedLog, defaultConsoleLogMax } from './capped-log.js';
import { createTransport, type ConsoleSettings, type ConsoleTransport } from './transport.js';
import { consoleLines, ExpectTimeout, type Console } from './types.js';

export type { ConsoleSettings } from './transport.js';
export { ExpectTimeout, type Console } from './types.js';

const keep = 256 * 1024;

export class BoardConsole implements Console {
  private readonly transport: ConsoleTransport;
  private readonly taps = new Set<(chunk: Buffer) => void>();
  private readonly waiters = new Set<() => void>();
  private log?: CappedLog;
  /** Recent output; `cursor` is where the next expect starts looking. */
  private text = '';
  private cursor = 0;
  private opening?: Promise<void>;

  constructor(
    settings: ConsoleSettings,
    private readonly logFile: string,
    /** The board's log is rotated so it never holds more than this (capped-log.ts). */
    private readonly logMax = defaultConsoleLogMax,
  ) {
    this.transport = createTransport(settings);
  }

  get describe(): string {
    return this.transport.describe;
  }

  /** Opens the line once; later calls wait for the same opening. */
  open(): Promise<void> {
    this.opening ??= (async () => {
      this.log = new CappedLog(this.logFile, this.logMax, 'rotate');
      await this.transport.open((chunk) => this.receive(chunk));
    })().catch((error: unknown) => {
      this.opening = undefined;
      throw error;
    });
    return this.opening;
  }

  /** Whether the line can be reached now (the transport's check: this console's open line counts). */
  check(signal: AbortSignal): Promise<void> {
    return this.transport.check(signal);
  }

  async close(): Promise<void> {
    await this.transport.close();
    this.log?.end();
    this.opening = undefined;
  }

  /** Gets a copy of everything the board prints until the returned function is called. */
  tap(listener: (chunk: Buffer) => void): () => void {
    this.taps.add(listener);
    return () => this.taps.delete(listener);
  }

  async send(text: string | Buffer): Promise<void> {
    await this.transport.write(text);
  }

  mark(): void {
    this.cursor = this.text.length;
  }

  async expect(patterns: RegExp[], timeoutMs: number, what: string, signal?: AbortSignal): Promise<{ index: number; match: RegExpExecArray; before: string }> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const window = this.text.slice(this.cursor);
      let best: { index: number; match: RegExpExecArray; before: string } | undefined;
      patterns.forEach((pattern, index) => {
        const match = new RegExp(pattern.source, pattern.flags.replace('g', '')).exec(window);
        if (match && (!best || match.index < best.match.index)) best = { index, match, before: window.slice(0, match.index) };
      });
      if (best) {
        this.cursor += best.match.index + best.match[0].length;
        return best;
      }
      signal?.throwIfAborted();
      const left = deadline - Date.now();
      if (left <= 0) throw new ExpectTimeout(what, timeoutMs, this.tail());
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer);
          this.waiters.delete(done);
          signal?.removeEventListener('abort', done);
          resolve();
        };
        const timer = setTimeout(done, Math.min(left, 1000));
        this.waiters.add(done);
        signal?.addEventListener('abort', done, { once: true });
      });
    }
  }

  /** What the board printed since the last match of `expect` (or the mark), as far as it is kept. */
  unread(): string {
    return this.text.slice(this.cursor);
  }

  tail(lines = 15): string {
    return consoleLines(this.text.slice(-8192), lines);
  }

  private receive(chunk: Buffer): void {
    this.log?.write(chunk);
    for (const tap of this.taps) tap(chunk);
    this.text += chunk.toString('latin1');
    if (this.text.length > 2 * keep) {
      const cut = this.text.length - keep;
      this.text = this.text.slice(cut);
      this.cursor = Math.max(0, this.cursor - cut);
    }
    for (const waiter of [...this.waiters]) waiter();
  }
}
