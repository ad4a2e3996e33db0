// How Paddock reaches a board's console: one file per transport, chosen by the key the board's
// `console:` settings hold (`device:` a serial line, `tcp:` a TCP port), as power drivers are
// chosen by `driver:`. Each file keeps its schema light: a transport loads what it needs (a native
// module) only when it opens the line.
import { z } from 'zod';
import { SerialTransport, serialSettingsSchema } from './serial.js';
import { TcpTransport, tcpSettingsSchema } from './tcp.js';

export const consoleSettingsSchema = z.union([serialSettingsSchema, tcpSettingsSchema]);

export type ConsoleSettings = z.output<typeof consoleSettingsSchema>;

export interface ConsoleTransport {
  readonly describe: string;
  /** Opens the line; `onData` gets every byte until close(). Rejects if it cannot be opened. */
  open(onData: (chunk: Buffer) => void): Promise<void>;
  write(data: string | Buffer): Promise<void>;
  close(): Promise<void>;
}

export function createTransport(settings: ConsoleSettings): ConsoleTransport {
  return 'device' in settings ? new SerialTransport(settings) : new TcpTransport(settings);
}
