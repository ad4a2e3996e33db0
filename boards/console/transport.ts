// How Paddock reaches a board's serial console: a serial device (a USB-serial adapter, or a pty)
// opened with serialport, or a TCP port such as ser2net or QEMU expose. Both reconnect when the
// line drops, since a console must outlive power cycles.
import net from 'node:net';
import { SerialPort } from 'serialport';

export type ConsoleSettings = { device: string; baud: number } | { tcp: string };

export interface ConsoleTransport {
  readonly describe: string;
  /** Opens the line; `onData` gets every byte until close(). Rejects if it cannot be opened. */
  open(onData: (chunk: Buffer) => void): Promise<void>;
  write(data: string | Buffer): Promise<void>;
  close(): Promise<void>;
}

export function createTransport(settings: ConsoleSettings): ConsoleTransport {
  return 'device' in settings ? new SerialTransport(settings.device, settings.baud) : new TcpTransport(settings.tcp);
}

class SerialTransport implements ConsoleTransport {
  readonly describe: string;
  private port?: SerialPort;
  private closed = false;

  constructor(
    private readonly path: string,
    private readonly baud: number,
  ) {
    this.describe = `serial ${path} at ${baud} baud`;
  }

  async open(onData: (chunk: Buffer) => void): Promise<void> {
    this.closed = false;
    const port = new SerialPort({ path: this.path, baudRate: this.baud, autoOpen: false });
    await new Promise<void>((resolve, reject) => port.open((error) => (error ? reject(new Error(`cannot open ${this.describe}: ${error.message}`)) : resolve())));
    port.on('data', onData);
    port.on('error', () => undefined);
    port.on('close', () => {
      // A USB adapter unplugged, or a pty whose other side went away: try again.
      if (!this.closed) setTimeout(() => void this.open(onData).catch(() => undefined), 1000).unref();
    });
    this.port = port;
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

class TcpTransport implements ConsoleTransport {
  readonly describe: string;
  private socket?: net.Socket;
  private closed = false;
  private readonly host: string;
  private readonly port: number;

  constructor(address: string) {
    this.describe = `console at tcp ${address}`;
    const at = address.lastIndexOf(':');
    this.host = address.slice(0, at).replace(/^\[|\]$/g, '');
    this.port = Number(address.slice(at + 1));
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
