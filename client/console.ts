// A machine's console through the API's console stream (a WebSocket): what the machine prints
// arrives as `data`, and the owner types with `write` once the session has the `write` mode. One
// session types at a time: another session's takeover demotes this one (a `mode` event with
// mode `read`), and `takeover()` takes typing back.
import { EventEmitter } from 'node:events';
import type WebSocket from 'ws';
import type { Http } from './http.js';

export interface ConsoleOptions {
  /** Which of the reservation's machines (default: the first board, else the first machine). */
  machine?: string;
  /** Ask to type (owner only): granted when no other session types. Default: watch only. */
  write?: boolean;
  /** Type now, demoting whichever session typed (owner only). */
  takeover?: boolean;
}

export type ConsoleMode = 'read' | 'write';

/**
 * Events: `data` (Buffer), `mode` ({mode, reason}) at the start and whenever it changes, `close`
 * ({code, reason}) when the console or the reservation ends.
 */
export class ConsoleSession extends EventEmitter {
  mode: ConsoleMode = 'read';

  constructor(private readonly socket: WebSocket) {
    super();
    socket.on('message', (data: Buffer, binary: boolean) => {
      if (binary) return this.emit('data', data);
      const message = JSON.parse(data.toString()) as { type: string; mode?: ConsoleMode; reason?: string; code?: string; message?: string };
      if (message.type === 'mode' && message.mode) {
        this.mode = message.mode;
        this.emit('mode', { mode: message.mode, reason: message.reason ?? '' });
      } else if (message.type === 'error') {
        this.emit('notice', `${message.message ?? ''} (${message.code ?? 'error'})`);
      }
    });
    socket.on('close', (code: number, reason: Buffer) => this.emit('close', { code, reason: reason.toString() }));
    socket.on('error', () => undefined);
  }

  /** Keystrokes, sent as they are; the console takes them only while this session types. */
  write(data: string | Buffer): void {
    if (this.socket.readyState === this.socket.OPEN) this.socket.send(typeof data === 'string' ? Buffer.from(data) : data, { binary: true });
  }

  takeover(): void {
    if (this.socket.readyState === this.socket.OPEN) this.socket.send(JSON.stringify({ type: 'takeover' }));
  }

  close(): void {
    this.socket.close(1000);
  }

  /** Resolves with the next mode the server announces (the first one comes right after opening). */
  nextMode(): Promise<{ mode: ConsoleMode; reason: string }> {
    return new Promise((resolve) => this.once('mode', resolve));
  }
}

/** Opens the console stream of reservation `id`; resolves once the server said the session's mode. */
export async function openConsole(http: Http, reservationPath: string, options: ConsoleOptions = {}): Promise<ConsoleSession> {
  const query: Record<string, string> = {};
  if (options.machine) query.machine = options.machine;
  if (options.write || options.takeover) query.mode = 'write';
  if (options.takeover) query.takeover = '1';
  const { socket, opened } = await http.webSocket(`${reservationPath}/console/stream`, query);
  const session = new ConsoleSession(socket);
  const first = Promise.race([session.nextMode(), new Promise((resolve) => socket.once('close', resolve))]);
  await opened;
  await first;
  return session;
}
