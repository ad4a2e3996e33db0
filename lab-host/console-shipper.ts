// Sends the reservations' console logs from the lab host to the API, so `paddock console` serves
// any lab host's machines. The kinds write CONSOLES/RESERVATION/MACHINE.log (capped); every few
// hundred milliseconds each log's new bytes go to POST /v1/agent/consoles/RESERVATION/MACHINE in
// chunks, each with the byte offset it starts at. The API skips what it already has and answers
// its size, so a chunk whose answer was lost (a broken connection, an API restart) is sent again
// without being stored twice, and an agent that restarts asks the API where to go on from.
//
// Once a machine is released the loop calls finish(): the log becomes MACHINE.log.ended and goes
// as soon as the API has all of it, so a lab host keeps no console after its reservation. While
// the API cannot be reached, logs wait on disk and are sent when it answers again.
import { setTimeout as sleep } from 'node:timers/promises';
import { open, readdir, rename, rm, rmdir, stat } from 'node:fs/promises';
import path from 'node:path';
import type { Got } from 'got';
import { describeFailure } from '../protocol/worker.js';
import { warmPrefix } from './warm.js';
import type { Log } from '../protocol/log.js';

/** The most bytes one request carries. */
const chunkBytes = 256 * 1024;
const name = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
const endedSuffix = '.log.ended';

interface ShipperOptions {
  http: Got;
  /** The kinds' console logs (KindContext.consolesDir). */
  dir: string;
  log: Log;
  /** How often new bytes are looked for (default 250 ms). */
  intervalMs?: number;
}

interface LogFile {
  reservationId: string;
  machine: string;
  file: string;
  ended: boolean;
}

export class ConsoleShipper {
  /** What the API holds of each log (by reservation/machine), once it has said. */
  private readonly sent = new Map<string, number>();
  /** Logs the API capped: nothing more is sent. */
  private readonly capped = new Set<string>();
  /** One pass at a time per log. */
  private readonly queues = new Map<string, Promise<void>>();
  private timer?: NodeJS.Timeout;
  private failing?: string;

  constructor(private readonly options: ShipperOptions) {}

  get dir(): string {
    return this.options.dir;
  }

  start(): void {
    let passing = false;
    this.timer = setInterval(() => {
      if (passing) return;
      passing = true;
      void this.pass().finally(() => (passing = false));
    }, this.options.intervalMs ?? 250);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** Sends what is new in every log (and removes the ended logs the API has in full). */
  async pass(): Promise<void> {
    try {
      await Promise.all((await this.logs()).map((log) => this.ship(log)));
      if (this.failing) this.options.log.info('console logs reach the API again');
      this.failing = undefined;
    } catch (error) {
      const reason = describeFailure(error);
      if (this.failing !== reason) this.options.log.warn({ reason }, 'console logs cannot be sent now; they wait on this host');
      this.failing = reason;
    }
  }

  /**
   * After a release: marks the machine's log ended and sends the rest, waiting at most `waitMs`
   * (the release is reported all the same; what is left goes with the next passes).
   */
  async finish(reservationId: string, machine: string, waitMs = 30_000): Promise<void> {
    if (!name.test(reservationId) || !name.test(machine)) return;
    const live = path.join(this.options.dir, reservationId, `${machine}.log`);
    const ended: LogFile = { reservationId, machine, file: path.join(this.options.dir, reservationId, `${machine}${endedSuffix}`), ended: true };
    await this.serialized(key(ended), async () => {
      await rename(live, ended.file).catch((error: NodeJS.ErrnoException) => {
        if (error.code !== 'ENOENT') throw error;
      });
    });
    const deadline = Date.now() + waitMs;
    for (;;) {
      try {
        await this.ship(ended);
        return;
      } catch (error) {
        if (Date.now() >= deadline) {
          this.options.log.warn(
            { reservation: reservationId, machine, error: describeFailure(error) },
            'the console log is not all at the API yet; it is kept and sent later',
          );
          return;
        }
        await sleep(1000);
      }
    }
  }

  private async logs(): Promise<LogFile[]> {
    const found: LogFile[] = [];
    const reservations = await readdir(this.options.dir).catch(() => [] as string[]);
    for (const reservationId of reservations) {
      // A warm VM's log (lab-host/warm.ts) is no reservation's: it stays here and goes with the VM.
      if (!name.test(reservationId) || reservationId.startsWith(warmPrefix)) continue;
      const files = await readdir(path.join(this.options.dir, reservationId)).catch(() => [] as string[]);
      for (const file of files) {
        const ended = file.endsWith(endedSuffix);
        const machine = ended ? file.slice(0, -endedSuffix.length) : file.endsWith('.log') ? file.slice(0, -'.log'.length) : undefined;
        if (machine === undefined || !name.test(machine)) continue;
        found.push({ reservationId, machine, file: path.join(this.options.dir, reservationId, file), ended });
      }
    }
    return found;
  }

  private ship(log: LogFile): Promise<void> {
    return this.serialized(key(log), () => this.shipNow(log));
  }

  private async shipNow(log: LogFile): Promise<void> {
    const id = key(log);
    const size = await stat(log.file).then(
      (info) => info.size,
      () => undefined,
    );
    if (size === undefined) return; // renamed or removed meanwhile
    let sent = this.sent.get(id) ?? (await this.send(log, 0, Buffer.alloc(0)));
    while (sent < size && !this.capped.has(id)) {
      const handle = await open(log.file, 'r');
      let bytes: Buffer;
      try {
        const buffer = Buffer.alloc(Math.min(chunkBytes, size - sent));
        const { bytesRead } = await handle.read(buffer, 0, buffer.length, sent);
        bytes = buffer.subarray(0, bytesRead);
      } finally {
        await handle.close();
      }
      if (bytes.length === 0) break;
      sent = await this.send(log, sent, bytes);
    }
    if (log.ended && (sent >= size || this.capped.has(id))) {
      await rm(log.file, { force: true });
      await rmdir(path.dirname(log.file)).catch(() => undefined); // the reservation's other logs may still be there
      this.sent.delete(id);
      this.capped.delete(id);
    }
  }

  /** One chunk; resolves to the size the API now holds. */
  private async send(log: LogFile, offset: number, bytes: Buffer): Promise<number> {
    const id = key(log);
    const request = this.options.http.post(`v1/agent/consoles/${log.reservationId}/${encodeURIComponent(log.machine)}`, {
      searchParams: { offset },
      body: bytes,
      headers: { 'content-type': 'application/octet-stream' },
      throwHttpErrors: false,
    });
    const answer = await request;
    const body = parse(answer.body);
    if (answer.statusCode === 409 && typeof body.details?.size === 'number') {
      // The API holds less than was sent before (restored from a backup, say): go on from there.
      this.sent.set(id, body.details.size);
      return body.details.size;
    }
    if (answer.statusCode === 404 || answer.statusCode === 403) {
      // Not a log the API takes from this lab host (a reservation it does not know): dropped, once.
      this.options.log.warn(
        { reservation: log.reservationId, machine: log.machine, answer: body.message ?? answer.statusCode },
        'the API refuses the console log; it is removed here',
      );
      this.capped.add(id);
      this.sent.set(id, Number.MAX_SAFE_INTEGER);
      return Number.MAX_SAFE_INTEGER;
    }
    if (answer.statusCode !== 200 || typeof body.size !== 'number') {
      throw new Error(`the API answered ${answer.statusCode} to a console chunk${body.code ? ` (${body.code})` : ''}`);
    }
    if (body.capped) this.capped.add(id);
    this.sent.set(id, body.size);
    return body.size;
  }

  private serialized(id: string, work: () => Promise<void>): Promise<void> {
    const next = (this.queues.get(id) ?? Promise.resolve()).catch(() => undefined).then(work);
    this.queues.set(id, next);
    void next
      .finally(() => {
        if (this.queues.get(id) === next) this.queues.delete(id);
      })
      .catch(() => undefined);
    return next;
  }
}

const key = (log: Pick<LogFile, 'reservationId' | 'machine'>) => `${log.reservationId}/${log.machine}`;

function parse(text: string): { size?: number; capped?: boolean; code?: string; message?: string; details?: { size?: number } } {
  try {
    return JSON.parse(text) as ReturnType<typeof parse>;
  } catch {
    return {};
  }
}
