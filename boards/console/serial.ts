// A console on a serial device (a USB-serial adapter, or a pty), opened with serialport. The line
// is opened again when it drops (an adapter unplugged, a pty whose other side went away), since a
// console must outlive power cycles. serialport (a native module) is loaded when a line is first
// opened, so reading a board's settings never loads it.
import { constants } from 'node:fs';
import { access, stat } from 'node:fs/promises';
import type { SerialPort } from 'serialport';
import { z } from 'zod';
import type { ConsoleTransport } from './types.js';

export const serialSettingsSchema = z.strictObject({ device: z.string().min(1), baud: z.number().int().positive().default(115200) });

export type SerialSettings = z.output<typeof serialSettingsSchema>;

export class SerialTransport implements ConsoleTransport {
  readonly describe: string;
  private port?: SerialPort;
  private closed = false;

  constructor(private readonly settings: SerialSettings) {
    this.describe = `serial ${settings.device} at ${settings.baud} baud`;
  }

  async open(onData: (chunk: Buffer) => void): Promise<void> {
    this.closed = false;
    const { SerialPort } = await import('serialport');
    const port = new SerialPort({ path: this.settings.device, baudRate: this.settings.baud, autoOpen: false });
    await new Promise<void>((resolve, reject) =>
      port.open((error) => (error ? reject(new Error(`cannot open ${this.describe}: ${error.message}`)) : resolve())),
    );
    port.on('data', onData);
    port.on('error', () => undefined);
    port.on('close', () => {
      if (!this.closed) setTimeout(() => void this.open(onData).catch(() => undefined), 1000).unref();
    });
    this.port = port;
  }

  /** The device exists, is a character device, and this process may read and write it. */
  async check(): Promise<void> {
    const { device } = this.settings;
    const code = (error: unknown) => (error as NodeJS.ErrnoException).code ?? (error as Error).message;
    let stats;
    try {
      stats = await stat(device);
    } catch (error) {
      throw new Error(code(error) === 'ENOENT' ? `no such serial device ${device}` : `cannot look at serial device ${device} (${code(error)})`);
    }
    if (!stats.isCharacterDevice()) throw new Error(`${device} is not a serial device (not a character device)`);
    await access(device, constants.R_OK | constants.W_OK).catch((error: unknown) => {
      throw new Error(`serial device ${device} cannot be opened for reading and writing (${code(error)})`);
    });
  }

  async write(data: string | Buffer): Promise<void> {
    const port = this.port;
    if (!port?.isOpen) throw new Error(`${this.describe} is not open`);
    await new Promise<void>((resolve, reject) => port.write(data, (error) => (error ? reject(error) : port.drain(() => resolve()))));
  }

  async close(): Promise<void> {
    this.closed = true;
    const port = this.port;
    if (port?.isOpen) await new Promise<void>((resolve) => port.close(() => resolve()));
  }
}
