// Prometheus's side of a process: its metrics in the text exposition format at `GET /metrics`, on
// a listener of its own beside the process's work (`metrics.listen` of `paddock serve`,
// `--metrics-listen` of `paddock agent` and `paddock runner`). It answers without a token, as
// exporters commonly do, so the address says who may read it (loopback, a management network):
// what it serves is aggregate (counts, durations, machine names from the config), never a
// reservation id, an owner or a secret. Anything but GET or HEAD /metrics is 404 or 405.
import http from 'node:http';
import type { AddressInfo } from 'node:net';

/** What serves the text: a prom-client Registry. */
export interface MetricsSource {
  contentType: string;
  metrics(): Promise<string>;
}

export interface MetricsListener {
  /** `http://host:port/metrics`. */
  url: string;
  close(): Promise<void>;
}

export async function serveMetrics(source: MetricsSource, listen: { host: string; port: number }): Promise<MetricsListener> {
  const server = http.createServer((request, response) => {
    const path = (request.url ?? '').split('?')[0];
    if (path !== '/metrics') return answer(response, 404, 'not found: metrics are at /metrics\n');
    if (request.method !== 'GET' && request.method !== 'HEAD') {
      response.setHeader('allow', 'GET, HEAD');
      return answer(response, 405, 'method not allowed\n');
    }
    source.metrics().then(
      (text) => {
        response.writeHead(200, { 'content-type': source.contentType });
        response.end(request.method === 'HEAD' ? undefined : text);
      },
      () => answer(response, 500, 'the metrics could not be collected\n'),
    );
  });
  server.keepAliveTimeout = 65_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(listen.port, listen.host, () => resolve());
  });
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return {
    url: `http://${host}:${address.port}/metrics`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

function answer(response: http.ServerResponse, status: number, text: string): void {
  response.writeHead(status, { 'content-type': 'text/plain; charset=utf-8' });
  response.end(text);
}
