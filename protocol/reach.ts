// Whether something on the network answers, cheaply and within a signal: a TCP port that accepts a
// connection (closed again at once, nothing sent), a host name that resolves. The checks lab-host
// agents run on their machines are made of these.
import { lookup } from 'node:dns/promises';
import net from 'node:net';

/** Why a connection or a lookup failed, in words (`connection refused`), for a problem report. */
export function networkFailure(error: unknown): string {
  const code = (error as NodeJS.ErrnoException).code;
  switch (code) {
    case 'ECONNREFUSED':
      return 'connection refused';
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return 'the name does not resolve';
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
      return 'no route to the host';
    case 'ECONNRESET':
      return 'connection reset';
    default:
      return code ?? (error as Error).message;
  }
}

/** Runs `work` until `signal` fires; then rejects with "no answer within the check's time". */
function untilAborted<T>(work: (settle: (error?: Error, value?: T) => void) => () => void, signal: AbortSignal): Promise<T> {
  return new Promise((resolve, reject) => {
    let cleanUp = () => undefined as void;
    let settled = false;
    const settle = (error?: Error, value?: T) => {
      if (settled) return;
      settled = true;
      signal.removeEventListener('abort', onAbort);
      cleanUp();
      if (error) reject(error);
      else resolve(value as T);
    };
    const onAbort = () => settle(new Error("no answer within the check's time limit"));
    if (signal.aborted) return onAbort();
    signal.addEventListener('abort', onAbort, { once: true });
    cleanUp = work(settle);
  });
}

/** Resolves once `host:port` accepts a TCP connection, which is closed at once; rejects saying why not. */
export function tcpConnects(host: string, port: number, signal: AbortSignal): Promise<void> {
  return untilAborted<void>((settle) => {
    const socket = net.connect({ host, port });
    socket.once('connect', () => settle());
    socket.once('error', (error) => settle(new Error(networkFailure(error))));
    return () => socket.destroy();
  }, signal);
}

/** Resolves once the host name resolves (an address resolves to itself); rejects saying why not. */
export function hostResolves(host: string, signal: AbortSignal): Promise<void> {
  return untilAborted<void>((settle) => {
    lookup(host).then(
      () => settle(),
      (error: unknown) => settle(new Error(networkFailure(error))),
    );
    return () => undefined;
  }, signal);
}
