// The API's copies of the reservations' console logs, DATA/consoles/RESERVATION/MACHINE.log: what
// `paddock console` and the console stream serve, kept after release. Lab-host agents write them
// by appending chunks at a byte offset (POST /v1/agent/consoles/…), so a chunk sent again after a
// broken connection is not stored twice and a gap is refused: the agent resumes at the size the
// API answers. Each log is capped at consoles.maxLogSize, whatever a lab host sends.
import { open, stat, mkdir } from 'node:fs/promises';
import path from 'node:path';
import { ApiError } from './errors.js';

const logName = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

export interface AppendAnswer {
  /** The log's size now: where the next chunk starts. */
  size: number;
  /** The log reached its cap: later chunks are dropped. */
  capped: boolean;
}

export class ConsoleLogs {
  /** One append at a time per log. */
  private readonly queues = new Map<string, Promise<unknown>>();

  constructor(
    readonly dir: string,
    readonly maxBytes: number,
  ) {}

  /** The log of one of a reservation's machines, built from checked names only. */
  file(reservationId: string, machine: string): string {
    for (const name of [reservationId, machine]) {
      if (!logName.test(name)) throw new ApiError(500, 'internal', 'a stored name is not a name');
    }
    return path.join(this.dir, reservationId, `${machine}.log`);
  }

  async size(reservationId: string, machine: string): Promise<number> {
    return stat(this.file(reservationId, machine)).then(
      (info) => info.size,
      () => 0,
    );
  }

  /**
   * Stores `bytes`, which start at byte `offset` of the lab host's log. Bytes the API already has
   * (a chunk sent again) are skipped; a chunk that starts past the end is refused (409
   * offset_ahead, with the size to resume from).
   */
  append(reservationId: string, machine: string, offset: number, bytes: Buffer): Promise<AppendAnswer> {
    const file = this.file(reservationId, machine);
    const previous = this.queues.get(file) ?? Promise.resolve();
    const next = previous.then(async (): Promise<AppendAnswer> => {
      const size = await this.size(reservationId, machine);
      if (offset > size) {
        throw new ApiError(409, 'offset_ahead', `the console log of ${machine} in ${reservationId} holds ${size} bytes; send from there`, { size });
      }
      const fresh = bytes.subarray(Math.min(bytes.length, size - offset));
      const room = Math.max(0, this.maxBytes - size);
      const kept = fresh.subarray(0, room);
      if (kept.length > 0) {
        await mkdir(path.dirname(file), { recursive: true });
        const handle = await open(file, 'a');
        try {
          await handle.write(kept);
        } finally {
          await handle.close();
        }
      }
      return { size: size + kept.length, capped: size + kept.length >= this.maxBytes };
    });
    const settled = next.catch(() => undefined);
    this.queues.set(file, settled);
    void settled.then(() => {
      if (this.queues.get(file) === settled) this.queues.delete(file);
    });
    return next;
  }
}
