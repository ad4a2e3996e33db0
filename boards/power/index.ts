// Power control for one board around a driver (types.ts):
// * commands to one PDU never interleave, whichever board sends them (a queue per `driver.pdu`);
// * a board stays off for at least its minimum off-time: an `on` after an `off` waits the
//   remainder. The last switch-off is remembered per board name in this process and, with
//   `stateFile`, on disk, so an agent restarted in between still honours it;
// * where the driver can read the port's state, it is read back after every command and a
//   mismatch is a PowerError; elsewhere the state is what was last commanded.
import { randomUUID } from 'node:crypto';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { z } from 'zod';
import { commandSettingsSchema, createCommandDriver } from './command.js';
import { createPdudaemonDriver, pdudaemonSettingsSchema } from './pdudaemon.js';
import { createSnmpDriver, snmpSettingsSchema } from './snmp.js';
import { PowerError, type PowerDriver, type PowerObserver, type PowerState } from './types.js';

export { PowerError, type PowerDriver, type PowerObserver, type PowerState } from './types.js';
export { pdudaemonSettingsSchema, commandSettingsSchema, snmpSettingsSchema };

export const powerSettingsSchema = z.discriminatedUnion('driver', [pdudaemonSettingsSchema, commandSettingsSchema, snmpSettingsSchema]);
export type PowerSettings = z.output<typeof powerSettingsSchema>;

export function createPowerDriver(settings: PowerSettings): PowerDriver {
  switch (settings.driver) {
    case 'pdudaemon':
      return createPdudaemonDriver(settings);
    case 'command':
      return createCommandDriver(settings);
    case 'snmp':
      return createSnmpDriver(settings);
  }
}

export interface PowerControlOptions {
  /** The board's name: its last switch-off is remembered under it. */
  board: string;
  /** The least time the board stays off between an `off` and the next `on` (default 0). */
  minOffTimeMs?: number;
  /** JSON file keeping each board's last switch-off across restarts (created when missing). */
  stateFile?: string;
  /** Where the off-time is read and waited (default: the wall clock). */
  clock?: PowerClock;
  /** The driver's model (`pdudaemon`, `snmp`, `command`), and who is told of each command as it ends. */
  observe?: { driver: string; observer: PowerObserver };
}

/** The time the off-time is counted in, and how it is waited. */
export interface PowerClock {
  now(): number;
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

const wallClock: PowerClock = { now: () => Date.now(), sleep: wait };

/** Runs tasks for one key one at a time, in call order; a task whose signal fires while it waits never runs. */
function serialized<T>(queues: Map<string, Promise<void>>, key: string, signal: AbortSignal | undefined, task: () => Promise<T>): Promise<T> {
  const previous = queues.get(key) ?? Promise.resolve();
  let release!: () => void;
  const done = new Promise<void>((resolve) => (release = resolve));
  const tail = previous.then(() => done);
  queues.set(key, tail);
  return (async () => {
    try {
      await untilAborted(previous, signal);
      return await task();
    } finally {
      release();
      if (queues.get(key) === tail) queues.delete(key);
    }
  })();
}

function untilAborted<T>(promise: Promise<T>, signal?: AbortSignal): Promise<T> {
  if (!signal) return promise;
  signal.throwIfAborted();
  return new Promise((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

async function wait(ms: number, signal?: AbortSignal): Promise<void> {
  try {
    await sleep(ms, undefined, { signal });
  } catch (error) {
    throw signal?.aborted ? signal.reason : error;
  }
}

// Module-level, so they hold across PowerControl instances in one process.
const pduQueues = new Map<string, Promise<void>>();
const boardQueues = new Map<string, Promise<void>>();
const fileQueues = new Map<string, Promise<void>>();
const boards = new Map<string, { lastOffAt?: number; state: PowerState | 'unknown' }>();

const stateFileSchema = z.object({
  boards: z.record(z.string(), z.object({ lastOffAt: z.iso.datetime() })),
});

async function readStateFile(file: string): Promise<z.output<typeof stateFileSchema>> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return { boards: {} };
    throw new PowerError(`cannot read the power state file ${file}: ${(error as Error).message}`, { cause: error });
  }
  try {
    return stateFileSchema.parse(JSON.parse(text));
  } catch (error) {
    throw new PowerError(`the power state file ${file} is not valid (expected {"boards": {"<board>": {"lastOffAt": "<ISO time>"}}}); fix or remove it`, {
      cause: error,
    });
  }
}

export class PowerControl {
  readonly board: string;
  readonly driver: PowerDriver;
  readonly minOffTimeMs: number;
  readonly stateFile?: string;
  private readonly clock: PowerClock;
  private readonly observe?: PowerControlOptions['observe'];

  constructor(driver: PowerDriver, options: PowerControlOptions) {
    if (!options.board) throw new TypeError('PowerControl needs a board name');
    this.driver = driver;
    this.board = options.board;
    this.minOffTimeMs = Math.max(0, options.minOffTimeMs ?? 0);
    this.stateFile = options.stateFile === undefined ? undefined : path.resolve(options.stateFile);
    this.clock = options.clock ?? wallClock;
    this.observe = options.observe;
    if (!boards.has(this.board)) boards.set(this.board, { state: 'unknown' });
  }

  private get record() {
    return boards.get(this.board)!;
  }

  /** Read back after each command where the driver can; otherwise the last state commanded ('unknown' after a failure). */
  get state(): PowerState | 'unknown' {
    return this.record.state;
  }

  on(signal?: AbortSignal): Promise<void> {
    return serialized(boardQueues, this.board, signal, async () => {
      await this.waitOffTime(signal);
      await this.switch('on', signal);
    });
  }

  off(signal?: AbortSignal): Promise<void> {
    return serialized(boardQueues, this.board, signal, () => this.switchOff(signal));
  }

  /** Off, the minimum off-time, on. */
  cycle(signal?: AbortSignal): Promise<void> {
    return serialized(boardQueues, this.board, signal, async () => {
      await this.switchOff(signal);
      await this.waitOffTime(signal);
      await this.switch('on', signal);
    });
  }

  private async switchOff(signal?: AbortSignal): Promise<void> {
    try {
      await this.switch('off', signal);
    } catch (error) {
      // The power may have gone off all the same: count the off-time from now.
      await this.recordOff(this.clock.now()).catch(() => undefined);
      throw error;
    }
    await this.recordOff(this.clock.now());
  }

  /** One command under the PDU's queue, then the read-back where there is one. */
  private switch(wanted: PowerState, signal?: AbortSignal): Promise<void> {
    return serialized(pduQueues, this.driver.pdu, signal, async () => {
      const record = this.record;
      const started = performance.now();
      const observe = (failed: boolean) =>
        this.observe?.observer({ driver: this.observe.driver, operation: wanted, seconds: (performance.now() - started) / 1000, failed });
      try {
        await (wanted === 'on' ? this.driver.on(signal) : this.driver.off(signal));
        record.state = this.driver.readState ? await this.driver.readState(signal) : wanted;
      } catch (error) {
        record.state = 'unknown';
        observe(true);
        throw error;
      }
      observe(record.state !== wanted);
      if (record.state !== wanted) {
        throw new PowerError(`${this.board} (${this.driver.describe}): commanded ${wanted} but the PDU reports ${record.state}`);
      }
    });
  }

  private async waitOffTime(signal?: AbortSignal): Promise<void> {
    if (this.minOffTimeMs === 0) return;
    let lastOffAt = this.record.lastOffAt;
    if (this.stateFile) {
      const stored = (await readStateFile(this.stateFile)).boards[this.board];
      if (stored) lastOffAt = Math.max(lastOffAt ?? 0, Date.parse(stored.lastOffAt));
    }
    if (lastOffAt === undefined) return;
    // Capped, in case the clock went back since.
    const remaining = Math.min(this.minOffTimeMs, lastOffAt + this.minOffTimeMs - this.clock.now());
    if (remaining > 0) await this.clock.sleep(remaining, signal);
  }

  private async recordOff(at: number): Promise<void> {
    this.record.lastOffAt = at;
    const file = this.stateFile;
    if (!file) return;
    await serialized(fileQueues, file, undefined, async () => {
      const content = await readStateFile(file);
      content.boards[this.board] = { lastOffAt: new Date(at).toISOString() };
      try {
        await mkdir(path.dirname(file), { recursive: true });
        const temporary = `${file}.${randomUUID()}.tmp`;
        await writeFile(temporary, `${JSON.stringify(content, null, 2)}\n`);
        await rename(temporary, file);
      } catch (error) {
        throw new PowerError(`${this.board} was switched off, but its off time could not be saved to ${file}: ${(error as Error).message}`, { cause: error });
      }
    });
  }
}
