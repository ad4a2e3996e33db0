// A console on a TCP port, as ser2net or QEMU expose one. The connection is made again when it
// drops, since a console must outlive power cycles.
import net from 'node:net';
import { z } from 'zod';
import { tcpConnects } from '../../protocol/reach.js';
import type { ConsoleTransport } from './types.js';

/** `host:port` or `[v6]:port`. */
export const hostPortSchema = z.string().regex(/^[^:\s]+:\d{1,5}$|^\[[0-9a-fA-F:]+\]:\d{1,5}$/, 'host:port, e.g. 127.0.0.1:7001');

export const tcpSettingsSchema = z.strictObject({ tcp: hostPortSchema });

export type TcpSettings = z.output<typeof tcpSettingsSchema>;

export class TcpTransport implements ConsoleTransport {
  readonly describe: string;
  private socket?: net.Socket;
  private closed = false;
  private readonly host: string;
  private readonly port: number;

  constructor(settings: TcpSettings) {
    this.describe = `console at tcp ${settings.tcp}`;
    const at = settings.tcp.lastIndexOf(':');
    this.host = settings.tcp.slice(0, at).replace(/^\[|\]$/g, '');
    this.port = Number(settings.tcp.slice(at + 1));
  }

  async open(onData: (chunk: Buffer) => void): Promise<void> {
    this.closed = false;
    const socket = net.connect({ host: this.host, port: this.port });
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', (error) => reject(new Error(`cannot reach the ${this.describe}: ${error.message}`)));
    });
    socket.setNoDelay(true);
    socket.on('data', onData);
    socket.on('error', () => undefined);
    socket.on('close', () => {
      if (!this.closed) setTimeout(() => void this.open(onData).catch(() => undefined), 1000).unref();
    });
    this.socket = socket;
  }

  /** Connected now, or a connection is accepted (and closed at once: nothing is read or written). */
  async check(signal: AbortSignal): Promise<void> {
    if (this.socket && !this.socket.destroyed && !this.socket.connecting) return;
    await tcpConnects(this.host, this.port, signal).catch((error: unknown) => {
      throw new Error(`the ${this.describe} does not answer (${(error as Error).message})`);
    });
  }

  async write(data: string | Buffer): Promise<void> {
    const socket = this.socket;
    if (!socket || socket.destroyed) throw new Error(`${this.describe} is not connected`);
    await new Promise<void>((resolve, reject) => socket.write(data, (error) => (error ? reject(error) : resolve())));
  }

  async close(): Promise<void> {
    this.closed = true;
    this.socket?.destroy();
  }
}
