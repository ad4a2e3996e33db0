// The console relay a reservation's owner reaches with telnet (or nc): a TCP port that shows the
// board's console to every connection and takes keystrokes from one. The first connection that
// types becomes the writer until it disconnects; the others watch.
import net from 'node:net';
import type { BoardConsole } from './index.js';

export class ConsoleRelay {
  private readonly server = net.createServer((socket) => this.accept(socket));
  private readonly sockets = new Set<net.Socket>();
  private writer?: net.Socket;
  private untap?: () => void;

  constructor(private readonly console: BoardConsole) {}

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
      for (const socket of this.sockets) socket.write(chunk);
    });
    const address = this.server.address() as net.AddressInfo;
    return { host, port: address.port };
  }

  async close(): Promise<void> {
    this.untap?.();
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private accept(socket: net.Socket): void {
    this.sockets.add(socket);
    socket.setNoDelay(true);
    socket.on('data', (data: Buffer) => {
      this.writer ??= socket;
      if (this.writer !== socket) {
        socket.write('\r\n[paddock: read-only: another connection is typing]\r\n');
        return;
      }
      // Telnet clients send IAC negotiation (0xff …) first: keep only the typed bytes.
      const typed = stripTelnet(data);
      if (typed.length > 0) void this.console.send(typed.toString('latin1')).catch(() => undefined);
    });
    const gone = () => {
      this.sockets.delete(socket);
      if (this.writer === socket) this.writer = undefined;
    };
    socket.on('close', gone);
    socket.on('error', gone);
  }
}

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
