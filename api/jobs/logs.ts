// Runs' output: one file per run under DATA/runs/, appended in order, cut at the configured size
// with one note. Writes never fail the caller: a write that fails is logged and dropped.
import { appendFile, mkdir, stat } from 'node:fs/promises';
import path from 'node:path';
import type { Log } from '../../protocol/log.js';

export class RunLogs {
  private readonly sizes = new Map<string, number>();
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
    const previous = this.writes.get(id) ?? Promise.resolve();
    const next = previous.then(async () => {
      let size = this.sizes.get(id);
      if (size === undefined)
        size = await stat(this.file(id)).then(
          (info) => info.size,
          () => 0,
        );
      const bytes = typeof data === 'string' ? Buffer.from(data) : data;
      const limit = this.maxBytes;
      if (size >= limit) return;
      const room = limit - size;
      const kept =
        bytes.length > room
          ? Buffer.concat([bytes.subarray(0, room), Buffer.from(`\npaddock: the log reached ${limit} bytes; further output is dropped\n`)])
          : bytes;
      await appendFile(this.file(id), kept, { mode: 0o600 });
      this.sizes.set(id, size + kept.length);
    });
    const settled = next.catch((error: unknown) => this.log.error({ run: id, error: (error as Error).message }, 'cannot write the run log'));
    this.writes.set(id, settled);
    void settled.finally(() => {
      if (this.writes.get(id) === settled) this.writes.delete(id);
    });
    return settled;
  }
}
