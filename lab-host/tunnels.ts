// The lab host's end of tunnels (api/tunnels.ts): it long-polls the API for the tunnels owners asked
// of it, connects to the port on its own network, then opens the WebSocket /v1/agent/tunnels/ID and
// pipes the two together. Nothing connects in to a lab host. A tunnel goes only to an address this
// agent itself reported at readiness for that machine and reservation (its provisioning record), so
// not even the API can point it elsewhere on the lab host's network.
import net from 'node:net';
import type { Duplex } from 'node:stream';
import type { TunnelTask } from '../protocol/agent.js';
import { describeFailure, PullWorker } from '../protocol/worker.js';
import type { ProvisioningJournal } from './journal.js';
import type { Log } from '../protocol/log.js';

interface TunnelEndOptions {
  url: string;
  token: string;
  name: string;
  journal: ProvisioningJournal;
  log: Log;
}

export class TunnelEnd {
  private readonly worker: PullWorker<TunnelTask>;
  private readonly open = new Set<Duplex>();

  constructor(private readonly options: TunnelEndOptions) {
    this.worker = new PullWorker<TunnelTask>({
      url: options.url,
      token: options.token,
      claimPath: 'v1/agent/tunnels/claim',
      claimBody: () => ({ agent: options.name, wait: 20 }),
      tasksOf: (answer) => (answer as { tunnels: TunnelTask[] }).tunnels,
      onTask: (task) =>
        void this.connect(task).catch((error: unknown) =>
          options.log.warn({ tunnel: task.id, machine: task.machine, error: (error as Error).message }, 'tunnel failed'),
        ),
      log: options.log,
    });
  }

  start(): void {
    this.worker.start();
  }

  async stop(): Promise<void> {
    await this.worker.stop();
    for (const stream of this.open) stream.destroy();
  }

  private async connect(task: TunnelTask): Promise<void> {
    const refused = await this.check(task);
    if (refused) return this.fail(task, refused);
    let socket: net.Socket;
    try {
      socket = await dial(task.host, task.port);
    } catch (error) {
      return this.fail(task, (error as Error).message);
    }
    let far: Duplex;
    try {
      far = await this.dialApi(task.id);
    } catch (error) {
      socket.destroy();
      throw error;
    }
    const close = () => {
      socket.destroy();
      far.destroy();
      this.open.delete(far);
    };
    this.open.add(far);
    for (const stream of [socket, far]) {
      stream.once('error', close);
      stream.once('close', close);
    }
    socket.pipe(far);
    far.pipe(socket);
  }

  /** Why the tunnel may not go where it is asked, or undefined when it may. */
  private async check(task: TunnelTask): Promise<string | undefined> {
    const entry = await this.options.journal.read(task.machine, task.reservationId);
    const record = entry && 'record' in entry ? entry.record : undefined;
    if (!record?.ready || !record.readiness) return `${task.machine} is not ready for ${task.reservationId} on this lab host`;
    const readiness = record.readiness as { host?: string; port?: number; console?: { host: string; port: number } };
    const reported = task.service === 'ssh' ? readiness.host !== undefined && { host: readiness.host, port: readiness.port } : readiness.console;
    if (!reported || reported.host !== task.host || reported.port !== task.port) {
      return `${task.machine} has no ${task.service} port at ${task.host}:${task.port} for ${task.reservationId}`;
    }
    return undefined;
  }

  private async fail(task: TunnelTask, reason: string): Promise<void> {
    this.options.log.warn({ tunnel: task.id, machine: task.machine, service: task.service, reason }, 'tunnel refused');
    await this.worker.post(`v1/agent/tunnels/${task.id}/fail`, { json: { agent: this.options.name, reason }, attempts: 2, gone: [404] });
  }

  /** The WebSocket to the API for tunnel `id`, as a stream. */
  private async dialApi(id: string): Promise<Duplex> {
    const { default: WebSocket, createWebSocketStream } = await import('ws');
    // The server the claims go to: the leader as last known (an upgrade is not redirected).
    const url = new URL(`${this.worker.base}/v1/agent/tunnels/${id}`);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    const ws = new WebSocket(url, { headers: { authorization: `Bearer ${this.options.token}` }, handshakeTimeout: 15_000, maxPayload: 1024 * 1024 });
    // The stream listens from the start: the owner's first bytes may come right after the opening.
    const stream = createWebSocketStream(ws, { highWaterMark: 1 << 20 });
    stream.on('error', () => undefined);
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('unexpected-response', (_request, response) => {
        ws.terminate();
        reject(new Error(`the API refused the tunnel's end (${response.statusCode})`));
      });
      ws.once('error', (error) => reject(new Error(`cannot reach the API for a tunnel: ${describeFailure(error)}`)));
    }).catch((error: unknown) => {
      stream.destroy();
      throw error;
    });
    return stream;
  }
}

/** A TCP connection on the lab host's network, given up after 10 s. */
function dial(host: string, port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host, port });
    socket.setNoDelay(true);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`${host}:${port} did not answer in 10s`));
    }, 10_000);
    socket.once('connect', () => {
      clearTimeout(timer);
      resolve(socket);
    });
    socket.once('error', (error: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(new Error(`${host}:${port}: ${error.code ?? error.message}`));
    });
  });
}
