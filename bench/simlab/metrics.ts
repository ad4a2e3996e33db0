// The servers' own counters, read from their metrics endpoint (`metrics.listen`) before and after
// the measurement: how many store commits and how many requests of each route a cycle costs, and
// how long a commit takes. They say where a cycle's time goes without a profiler.
import http from 'node:http';

export interface Counters {
  commits: number;
  commitSeconds: number;
  /** Requests by `METHOD route`. */
  requests: Map<string, number>;
}

function get(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path: '/metrics' }, (response) => {
        const chunks: Buffer[] = [];
        response.on('data', (chunk: Buffer) => chunks.push(chunk));
        response.on('end', () => resolve(Buffer.concat(chunks).toString()));
      })
      .on('error', reject);
  });
}

/** The counters of the servers whose metrics listen on `ports`, summed. */
export async function readCounters(ports: number[]): Promise<Counters> {
  const counters: Counters = { commits: 0, commitSeconds: 0, requests: new Map() };
  for (const text of await Promise.all(ports.map(get))) {
    for (const line of text.split('\n')) {
      const commit = /^paddock_store_commit_duration_seconds_(count|sum)\{outcome="committed"\} (\S+)$/.exec(line);
      if (commit) {
        if (commit[1] === 'count') counters.commits += Number(commit[2]);
        else counters.commitSeconds += Number(commit[2]);
        continue;
      }
      const request = /^paddock_http_request_duration_seconds_count\{(.*)\} (\S+)$/.exec(line);
      if (!request) continue;
      const labels = Object.fromEntries([...request[1].matchAll(/(\w+)="([^"]*)"/g)].map((match) => [match[1], match[2]]));
      const key = `${labels.method} ${labels.route}`;
      counters.requests.set(key, (counters.requests.get(key) ?? 0) + Number(request[2]));
    }
  }
  return counters;
}

/** What happened between two readings. */
export function counterDelta(before: Counters, after: Counters): Counters {
  const requests = new Map<string, number>();
  for (const [key, count] of after.requests) {
    const delta = count - (before.requests.get(key) ?? 0);
    if (delta > 0) requests.set(key, delta);
  }
  return { commits: after.commits - before.commits, commitSeconds: after.commitSeconds - before.commitSeconds, requests };
}
