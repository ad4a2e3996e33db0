// `--metrics-listen HOST:PORT` of `paddock serve`, `paddock agent` and `paddock runner`: where the
// process serves its Prometheus metrics (protocol/metrics.ts), without a token; off when not given.
// Light on purpose: every command line loads this file, so it loads nothing of the server.
import { InvalidArgumentError, Option } from 'commander';

const help = 'serve Prometheus metrics at http://HOST:PORT/metrics, without a token (bind it where only Prometheus reaches it); off when not given';

/** `host:port` or `[v6]:port`, as the config's listen addresses; a usage error (exit 2) otherwise. */
export function metricsAddress(value: string): { host: string; port: number } {
  const match = /^([^:[\]]+|\[[0-9a-fA-F:]+\]):(\d{1,5})$/.exec(value);
  if (!match || Number(match[2]) > 65535) throw new InvalidArgumentError('host:port, e.g. 127.0.0.1:7301');
  return { host: match[1].replace(/^\[|\]$/g, ''), port: Number(match[2]) };
}

export const metricsListenOption = (): Option => new Option('--metrics-listen <host:port>', help).argParser((value: string) => (metricsAddress(value), value));
