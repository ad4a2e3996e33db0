// How Paddock reaches a board's console: one file per transport, chosen by the key the board's
// `console:` settings hold (`device:` a serial line, `tcp:` a TCP port), as power drivers are
// chosen by `driver:`. Each file keeps its schema light: a transport loads what it needs (a native
// module) only when it opens the line.
import { z } from 'zod';
import { SerialTransport, serialSettingsSchema } from './serial.js';
import { TcpTransport, tcpSettingsSchema } from './tcp.js';
import type { ConsoleTransport } from './types.js';

export const consoleSettingsSchema = z.union([serialSettingsSchema, tcpSettingsSchema]);

export type ConsoleSettings = z.output<typeof consoleSettingsSchema>;

export type { ConsoleTransport } from './types.js';

export function createTransport(settings: ConsoleSettings): ConsoleTransport {
  return 'device' in settings ? new SerialTransport(settings) : new TcpTransport(settings);
}
