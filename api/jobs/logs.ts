// Runs' output: one file per run under DATA/runs/, appended in order, cut at the configured size
// with one note. Writes never fail the caller: a write that fails is logged and dropped.
//
// A runner host's output comes with its offset in what that host sent (the API's own notes are not
// counted in it), and how much of it is stored is kept beside the log (ID.received, on the data
// directory every API server shares), so a chunk sent again after a broken connection, to this
// server or to the next leader, is stored once.
import { appendFile, mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Log } from '../../protocol/log.js';

export class RunLogs {
  private readonly sizes = new Map<string, number>();
  /** Bytes of each run's runner output stored (its offset for the next chunk). */
  private readonly received = new Map<string, number>();
  private readonly writes = new Map<string, Promise<void>>();

  constructor(
    private readonly dataDir: string,
    /** The longest log kept per run; output beyond it is dropped (the run goes on). */
    private readonly maxBytes: number,
    private readonly log: Log,
  ) {}

  get dir(): string {
    return path.join(this.dataDir, 'runs');
  }

  file(id: string): string {
    return path.join(this.dir, `${id}.log`);
  }

  async start(): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
  }

  /** Resolves once every write begun so far is done. */
  async settle(): Promise<void> {
    await Promise.all(this.writes.values());
  }

  /** Appends to the run's log in order; past maxBytes, output is dropped with one note. */
  write(id: string, data: string | Buffer): Promise<void> {
    return this.queue(id, () => this.append(id, typeof data === 'string' ? Buffer.from(data) : data));
  }

  /**
   * Appends a runner host's output that starts at byte `offset` of what it has sent for the run:
   * bytes stored already are skipped, and output that never arrived (the runner host went on past
   * a chunk the API did not get) is marked with a note where it is missing.
   */
  output(id: string, offset: number, chunk: Buffer): Promise<void> {
    return this.queue(id, async () => {
      const received = this.received.get(id) ?? (await this.readReceived(id));
      if (offset > received) await this.append(id, Buffer.from(`\npaddock: ${offset - received} bytes of the runner host's output never arrived here\n`));
      const fresh = chunk.subarray(Math.min(chunk.length, Math.max(0, received - offset)));
      if (fresh.length === 0) return;
      await this.append(id, fresh);
      const total = Math.max(received, offset) + fresh.length;
      this.received.set(id, total);
      await writeFile(this.receivedFile(id), `${total}\n`, { mode: 0o600 });
    });
  }

  /** The run ended (no more output is taken): what was kept for its writes goes, from memory and beside the log. */
  ended(id: string): Promise<void> {
    return this.queue(id, async () => {
      this.sizes.delete(id);
      this.received.delete(id);
      await rm(this.receivedFile(id), { force: true });
    });
  }

  private receivedFile(id: string): string {
    return path.join(this.dir, `${id}.received`);
  }

  private async readReceived(id: string): Promise<number> {
    const text = await readFile(this.receivedFile(id), 'utf8').catch(() => '0');
    const value = Number(text.trim());
    return Number.isSafeInteger(value) && value >= 0 ? value : 0;
  }

  /** Runs `work` after every write to the run's log begun before it; a failure is logged, never thrown. */
  private queue(id: string, work: () => Promise<void>): Promise<void> {
    const previous = this.writes.get(id) ?? Promise.resolve();
    const settled = previous.then(work).catch((error: unknown) => this.log.error({ run: id, error: (error as Error).message }, 'cannot write the run log'));
    this.writes.set(id, settled);
    void settled.finally(() => {
      if (this.writes.get(id) === settled) this.writes.delete(id);
    });
    return settled;
  }

  private async append(id: string, bytes: Buffer): Promise<void> {
    let size = this.sizes.get(id);
    if (size === undefined)
      size = await stat(this.file(id)).then(
        (info) => info.size,
        () => 0,
      );
    const limit = this.maxBytes;
    if (size >= limit) return;
    const room = limit - size;
    const kept =
      bytes.length > room
        ? Buffer.concat([bytes.subarray(0, room), Buffer.from(`\npaddock: the log reached ${limit} bytes; further output is dropped\n`)])
        : bytes;
    await appendFile(this.file(id), kept, { mode: 0o600 });
    this.sizes.set(id, size + kept.length);
  }
}
