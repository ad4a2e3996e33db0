// A TCP proxy in front of a real server: the network between a lab host and the API, slow, stuck
// or broken. It records the head of every request it passes and counts the answer bytes it hands
// back. Requests are expected without bodies past their head (GETs), as an image cache sends them.
import net from 'node:net';

const KiB = 1024;

export interface ProxyOptions {
  /** Answers go back at most 16 KiB per `pauseMs` (as they come when absent). */
  pauseMs?: number;
  /** Each connection hands back this many answer bytes, then nothing (the connection stays open). */
  stallAfter?: number;
  /** The first connection that asks for an image's content is cut after this many answer bytes to it. */
  cutAfter?: number;
  /** Requests go on without their Range header: a server that does not do ranges. */
  dropRange?: boolean;
}

export interface TestProxy {
  url: string;
  /** The head of each request as the client sent it: request line and headers. */
  requests: string[];
  /** Answer bytes handed back to clients so far, every connection together. */
  passed(): number;
  close(): Promise<void>;
}

export async function startProxy(target: string, options: ProxyOptions = {}): Promise<TestProxy> {
  const { hostname, port } = new URL(target);
  const sockets = new Set<net.Socket>();
  const requests: string[] = [];
  let passed = 0;
  let cutUsed = false;
  const server = net.createServer((client) => {
    const upstream = net.connect(Number(port), hostname);
    sockets.add(client).add(upstream);
    let heads = '';
    let pending = Buffer.alloc(0);
    let sent = 0;
    let cutAt: number | undefined;
    let upstreamClosed = false;
    const end = () => {
      clearInterval(timer);
      client.destroy();
      upstream.destroy();
    };
    client.on('data', (chunk: Buffer) => {
      heads += chunk.toString('latin1');
      for (let index = heads.indexOf('\r\n\r\n'); index >= 0; index = heads.indexOf('\r\n\r\n')) {
        const head = heads.slice(0, index + 4);
        heads = heads.slice(index + 4);
        requests.push(head);
        if (options.cutAfter !== undefined && !cutUsed && /^GET \S+\/content[ ?]/.test(head)) {
          cutUsed = true;
          cutAt = sent + options.cutAfter;
        }
        upstream.write(options.dropRange ? head.replace(/\r\nrange:[^\r]*/i, '') : head, 'latin1');
      }
    });
    const pump = () => {
      let allowed = pending.length;
      if (options.pauseMs !== undefined) allowed = Math.min(allowed, 16 * KiB);
      if (options.stallAfter !== undefined) allowed = Math.min(allowed, options.stallAfter - sent);
      if (cutAt !== undefined) allowed = Math.min(allowed, cutAt - sent);
      if (allowed > 0) {
        client.write(pending.subarray(0, allowed));
        pending = pending.subarray(allowed);
        sent += allowed;
        passed += allowed;
      }
      if ((cutAt !== undefined && sent >= cutAt) || (upstreamClosed && pending.length === 0)) end();
    };
    const timer = options.pauseMs === undefined ? undefined : setInterval(pump, options.pauseMs);
    upstream.on('data', (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      if (timer === undefined) pump();
    });
    client.on('close', end).on('error', end);
    upstream
      .on('close', () => {
        upstreamClosed = true;
        pump();
      })
      .on('error', end);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    requests,
    passed: () => passed,
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}
