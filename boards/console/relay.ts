// The console relay of one reservation's board: a TCP port on the lab host through which the
// reservation's owner watches and types, directly with telnet (when the lab allows it) or through
// the API's authenticated console stream. Nothing of the console is shown, and nothing typed is
// taken, before the connection has answered the reservation's console secret (protocol/console-relay.ts).
//
// One session types at a time. A session asks to `read`, to `write` (it types if nobody else does,
// or as soon as the one who did leaves) or to `takeover` (it types now; the session that typed is
// told and becomes read-only).
import { createHash, timingSafeEqual } from 'node:crypto';
import net from 'node:net';
import type { BoardConsole } from './index.js';
import { FrameReader, frame, greeting, type RelayMode, type RelayRequest } from '../../protocol/console-relay.js';

interface Session {
  socket: net.Socket;
  /** A program speaking frames, or a person on telnet reading plain text. */
  framed: boolean;
  /** It may type (asked for write or takeover). */
  wantsWrite: boolean;
}

/** How long a connection may take to answer the secret, and how long that answer may be. */
const helloTimeoutMs = 30_000;
const helloMaxBytes = 512;

export class ConsoleRelay {
  private readonly server = net.createServer((socket) => this.accept(socket));
  private readonly sessions = new Set<Session>();
  private readonly secretDigest: Buffer;
  private writer?: Session;
  private untap?: () => void;

  constructor(
    /** What it relays: a board's console, or a VM's serial console (provisioners/qemu/console-relay.ts). */
    private readonly console: Pick<BoardConsole, 'tap' | 'send'>,
    secret: string,
  ) {
    this.secretDigest = digest(secret);
  }

  /** Listens on `host`, on `port` if given and free (to keep the address across restarts), else any. */
  async listen(host: string, port = 0): Promise<{ host: string; port: number }> {
    const attempt = (wanted: number) =>
      new Promise<void>((resolve, reject) => {
        this.server.once('error', reject);
        this.server.listen(wanted, host, () => {
          this.server.off('error', reject);
          resolve();
        });
      });
    try {
      await attempt(port);
    } catch (error) {
      if (port === 0) throw error;
      await attempt(0);
    }
    this.untap = this.console.tap((chunk) => {
      for (const session of this.sessions) session.socket.write(session.framed ? frame('D', chunk) : chunk);
    });
    const address = this.server.address() as net.AddressInfo;
    return { host, port: address.port };
  }

  async close(): Promise<void> {
    this.untap?.();
    for (const session of this.sessions) session.socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  /** Waits for the secret line; until it is right the connection sees and types nothing. */
  private accept(socket: net.Socket): void {
    socket.setNoDelay(true);
    socket.on('error', () => undefined);
    socket.write(greeting);
    let hello = '';
    const timer = setTimeout(() => socket.destroy(), helloTimeoutMs);
    const onHello = (data: Buffer) => {
      hello += stripTelnet(data).toString('latin1');
      const end = hello.search(/[\r\n]/);
      if (end < 0) {
        if (hello.length > helloMaxBytes) socket.destroy();
        return;
      }
      clearTimeout(timer);
      socket.off('data', onHello);
      const [secret = '', ...words] = hello.slice(0, end).trim().split(/\s+/);
      const request = (words.find((word) => ['read', 'write', 'takeover'].includes(word)) ?? 'write') as RelayRequest;
      const framed = words.includes('framed');
      if (!timingSafeEqual(digest(secret), this.secretDigest)) {
        socket.end(framed ? '' : '[paddock: wrong console secret]\r\n');
        return;
      }
      // What came after the line in the same packet (telnet's \n or \0 after \r) is not typed.
      this.join({ socket, framed, wantsWrite: request !== 'read' }, request);
    };
    socket.on('data', onHello);
  }

  private join(session: Session, request: RelayRequest): void {
    this.sessions.add(session);
    const { socket } = session;
    if (request === 'read') this.tell(session, 'read', 'watching');
    else this.claim(session, request === 'takeover');
    if (session.framed) {
      const reader = new FrameReader();
      socket.on('data', (data: Buffer) => {
        try {
          for (const { type, payload } of reader.push(data)) {
            if (type === 'D') this.typed(session, payload);
            else if (type === 'T') {
              session.wantsWrite = true;
              this.claim(session, true);
            }
          }
        } catch {
          socket.destroy();
        }
      });
    } else {
      socket.on('data', (data: Buffer) => this.typed(session, stripTelnet(data)));
    }
    socket.on('close', () => {
      this.sessions.delete(session);
      if (this.writer === session) this.writer = undefined;
    });
  }

  /** Makes `session` the one that types, if nobody does or when it takes over. */
  private claim(session: Session, takeover: boolean): boolean {
    if (this.writer === session) return true;
    const previous = this.writer;
    if (previous && !takeover) {
      this.tell(session, 'read', 'another session is typing: read-only until it leaves, or take over');
      return false;
    }
    this.writer = session;
    if (previous) this.tell(previous, 'read', 'another session took over typing: read-only now');
    this.tell(session, 'write', previous ? 'took over typing' : 'typing');
    return true;
  }

  private typed(session: Session, bytes: Buffer): void {
    if (bytes.length === 0) return;
    if (this.writer !== session && !(session.wantsWrite && !this.writer && this.claim(session, false))) {
      if (!session.framed) this.tell(session, 'read', session.wantsWrite ? 'another session is typing' : 'this session only watches');
      return;
    }
    void this.console.send(bytes).catch(() => undefined);
  }

  private tell(session: Session, mode: RelayMode, reason: string): void {
    if (session.framed) session.socket.write(frame('M', JSON.stringify({ mode, reason })));
    else session.socket.write(`\r\n[paddock: ${mode === 'write' ? 'you type' : 'read-only'}: ${reason}]\r\n`);
  }
}

const digest = (text: string) => createHash('sha256').update(text).digest();

/** Removes telnet IAC sequences (commands and option negotiation) from client input. */
function stripTelnet(data: Buffer): Buffer {
  if (!data.includes(0xff)) return data;
  const out: number[] = [];
  for (let index = 0; index < data.length; index++) {
    const byte = data[index];
    if (byte !== 0xff) {
      out.push(byte);
      continue;
    }
    const command = data[index + 1];
    if (command === 0xff) {
      out.push(0xff);
      index += 1;
    } else if (command === 0xfa) {
      const end = data.indexOf(0xf0, index);
      index = end < 0 ? data.length : end;
    } else if (command !== undefined && command >= 0xfb && command <= 0xfe) {
      index += 2;
    } else {
      index += 1;
    }
  }
  return Buffer.from(out);
}
