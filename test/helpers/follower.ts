// Stand-ins for the API servers that are not the leader, until `paddock serve` runs as a follower:
// a loopback HTTP server that speaks exactly the protocol a follower and a server in an election
// will speak (protocol/failover.ts), or that breaks a connection the way a dying server does. It
// records what it was sent (method, path, whether a token came) so tests can show who got what.
// And a relay that stands for a second server that answers like the leader, until it is killed.
import http from 'node:http';
import net, { type AddressInfo, type Socket } from 'node:net';

export interface Seen {
  method: string;
  path: string;
  /** The Authorization header as sent (tests compare it; never printed). */
  authorization?: string;
  body: string;
}

/** What the stand-in does with one request. */
export type Reply = { status: number; headers?: Record<string, string>; body?: unknown } | 'reset';

export interface StandIn {
  url: string;
  seen: Seen[];
  /** Stops answering for good: the listening socket closes and open connections are cut (a killed server). */
  close(): Promise<void>;
}

export async function startStandIn(reply: (request: Seen, index: number) => Reply): Promise<StandIn> {
  const seen: Seen[] = [];
  const sockets = new Set<Socket>();
  const server = http.createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const entry: Seen = {
        method: request.method ?? '',
        path: request.url ?? '',
        ...(request.headers.authorization ? { authorization: request.headers.authorization } : {}),
        body: Buffer.concat(chunks).toString('utf8'),
      };
      seen.push(entry);
      const answer = reply(entry, seen.length - 1);
      if (answer === 'reset') return request.socket.resetAndDestroy(); // the request was taken, then the server died
      response.writeHead(answer.status, { 'content-type': 'application/json', ...answer.headers });
      response.end(answer.body === undefined ? '' : JSON.stringify(answer.body));
    });
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url,
    seen,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

/** A follower of `leader`: /healthz says so, everything else is redirected there (`Paddock-Leader` may be overridden, hostile). */
export function follower(leader: string, named = leader): (request: Seen) => Reply {
  return (request) => {
    if (request.path === '/healthz') return { status: 200, body: { status: 'ok', role: 'follower' } };
    if (request.path === '/healthz/leader') return { status: 503, body: { code: 'not_leader', message: 'this server follows' } };
    return {
      status: 307,
      headers: { location: `${leader}${request.path}`, 'paddock-leader': named },
      body: { code: 'not_leader', message: `this server follows; the leader is ${named}`, details: { leader: named } },
    };
  };
}

/** A server while no leader is elected: 503 `no_leader` with Retry-After. */
export const electing: Reply = {
  status: 503,
  headers: { 'retry-after': '1' },
  body: { code: 'no_leader', message: 'no leader elected yet; try again shortly' },
};

/** A loopback port that was free a moment ago: connecting to it is refused, for real (a dead server). */
export async function closedPort(): Promise<string> {
  const server = http.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return `http://127.0.0.1:${port}`;
}

/**
 * A TCP relay to `target` on a loopback port: another API server in front of the same database, as
 * far as a client can tell; `kill` closes it and cuts what it carries, as a killed server.
 */
export async function startRelay(target: string): Promise<{ url: string; connections: () => number; kill(): Promise<void> }> {
  const { hostname, port } = new URL(target);
  const sockets = new Set<net.Socket>();
  let connections = 0;
  const server = net.createServer((client) => {
    connections += 1;
    const upstream = net.connect(Number(port), hostname);
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
      socket.on('error', () => undefined);
    }
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    connections: () => connections,
    kill: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.resetAndDestroy();
        server.close(() => resolve());
      }),
  };
}
