// What a program (the API's console stream) and the console relay say to each other, and the
// relay's client. Every connection starts the same way, for people and programs alike: the relay
// greets with one text line, the peer answers one line `SECRET [read|write|takeover] [framed]`.
// A person on telnet omits `framed` and gets plain console text with bracketed notices; a program
// says `framed` and then both sides exchange frames: one type byte, a 4-byte big-endian length, the
// payload. Relay to program: `D` console output, `M` a JSON mode change `{mode, reason}`. Program to
// relay: `D` keystrokes, `T` take over typing.
import { EventEmitter } from 'node:events';
import net from 'node:net';
import type { Duplex } from 'node:stream';

export const greeting = "paddock console relay: answer with the reservation's console secret\r\n";
export type RelayMode = 'read' | 'write';
/** What a session asks for: watch, type when nobody else does, or type and demote whoever does. */
export type RelayRequest = RelayMode | 'takeover';
export interface ModeChange {
  mode: RelayMode;
  reason: string;
}

const maxFrame = 1024 * 1024;

export function frame(type: 'D' | 'M' | 'T', payload: Buffer | string = Buffer.alloc(0)): Buffer {
  const body = typeof payload === 'string' ? Buffer.from(payload) : payload;
  const header = Buffer.alloc(5);
  header.write(type, 0, 'latin1');
  header.writeUInt32BE(body.length, 1);
  return Buffer.concat([header, body]);
}

/** Cuts a byte stream into frames; throws on a frame larger than 1 MiB (a peer speaking nonsense). */
export class FrameReader {
  private pending = Buffer.alloc(0);

  push(chunk: Buffer): { type: string; payload: Buffer }[] {
    this.pending = Buffer.concat([this.pending, chunk]);
    const frames: { type: string; payload: Buffer }[] = [];
    while (this.pending.length >= 5) {
      const length = this.pending.readUInt32BE(1);
      if (length > maxFrame) throw new Error(`a relay frame of ${length} bytes`);
      if (this.pending.length < 5 + length) break;
      frames.push({ type: this.pending.toString('latin1', 0, 1), payload: this.pending.subarray(5, 5 + length) });
      this.pending = this.pending.subarray(5 + length);
    }
    return frames;
  }
}

/**
 * A framed session with a console relay. Emits `data` (Buffer, console output), `mode`
 * (ModeChange) and `close`. `connect` resolves once the relay accepted the secret and said which
 * mode the session got.
 */
export class RelayClient extends EventEmitter {
  private constructor(
    private readonly socket: Duplex,
    public mode: RelayMode,
  ) {
    super();
  }

  static connect(address: { host: string; port: number }, secret: string, request: RelayRequest, timeoutMs = 10_000): Promise<RelayClient> {
    const socket = net.connect(address);
    socket.setNoDelay(true);
    return RelayClient.over(socket, `${address.host}:${address.port}`, secret, request, timeoutMs);
  }

  /** The same over a stream already open to the relay (a tunnel through the API); `where` names it in errors. */
  static over(socket: Duplex, where: string, secret: string, request: RelayRequest, timeoutMs = 10_000): Promise<RelayClient> {
    return new Promise((resolve, reject) => {
      let text = '';
      let client: RelayClient | undefined;
      const reader = new FrameReader();
      const fail = (message: string) => {
        clearTimeout(timer);
        socket.destroy();
        reject(new Error(message));
      };
      const timer = setTimeout(() => fail(`the console relay at ${where} did not answer`), timeoutMs);
      const frames = (chunk: Buffer) => {
        let received;
        try {
          received = reader.push(chunk);
        } catch (error) {
          return fail((error as Error).message);
        }
        for (const { type, payload } of received) {
          if (type === 'M') {
            const change = JSON.parse(payload.toString()) as ModeChange;
            if (!client) {
              clearTimeout(timer);
              client = new RelayClient(socket, change.mode);
              resolve(client);
            }
            client.mode = change.mode;
            client.emit('mode', change);
          } else if (type === 'D') {
            client?.emit('data', payload);
          }
        }
      };
      // The greeting line comes first, as text; everything after it is frames.
      let greeted = false;
      socket.on('data', (chunk: Buffer) => {
        if (greeted) return frames(chunk);
        text = (text + chunk.toString('latin1')).slice(-1024);
        const end = text.indexOf('\n');
        if (end < 0) return;
        greeted = true;
        socket.write(`${secret} ${request} framed\n`);
        const rest = Buffer.from(text.slice(end + 1), 'latin1');
        if (rest.length > 0) frames(rest);
      });
      let closed = false;
      const gone = (message: string) => {
        if (!client) return fail(message);
        if (!closed) client.emit('close');
        closed = true;
      };
      socket.on('error', (error) => gone(`cannot reach the console relay at ${where}: ${error.message}`));
      socket.on('close', () => gone('the console relay refused the session'));
    });
  }

  /** Keystrokes for the console; the relay drops them unless this session types. */
  write(bytes: Buffer): void {
    if (!this.socket.destroyed) this.socket.write(frame('D', bytes));
  }

  /** Takes typing over from whichever session has it; that session is told and demoted. */
  takeover(): void {
    if (!this.socket.destroyed) this.socket.write(frame('T'));
  }

  close(): void {
    this.socket.destroy();
  }
}
