// A free TCP port on loopback, for servers that must be told their port up front (sshd, a
// `paddock serve` config). Another process may take it before it is used, so callers that can
// retry on EADDRINUSE should.
import net from 'node:net';

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}
