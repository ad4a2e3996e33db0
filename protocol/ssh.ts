// SSH as every process speaks it: reservation key pairs, host key lines, known_hosts and
// fingerprints, and one connect function (used by the readiness handshake, the static host
// tenant and the client library). Contract for everything here: no error
// message ever contains key material. Messages are built from what we know (user, host, port,
// fingerprints of public host keys) plus ssh2's own reason, scrubbed of anything key-shaped.
import type { Duplex } from 'node:stream';
import type { Client as SshClient, ConnectConfig } from 'ssh2';
import { fingerprint, hostKeyLine, normalizeKeyLine } from './ssh-keys.js';

export { fingerprint, generateKeyPair, hostKeyLine, knownHostsLine, normalizeKeyLine } from './ssh-keys.js';

// ssh2 is loaded when a connection is first made: the commands and the API that only quote or
// read key lines start without it (it takes some 50 ms to load).
let ssh2: Promise<typeof import('ssh2')> | undefined;
const loadSsh2 = () => (ssh2 ??= import('ssh2').then((module) => module.default));

export type { SshClient };

export interface SshConnectOptions {
  host: string;
  port: number;
  user: string;
  /** OpenSSH or PEM private key text. Never echoed in errors. */
  privateKey: string | Buffer;
  /** Pinned host key line; a different key seen on the handshake fails the connection. */
  expectedHostKey?: string;
  timeoutMs: number;
  signal?: AbortSignal;
  /** An open stream to the SSH server (a tunnel through the API) instead of a TCP connection to host:port. */
  sock?: Duplex;
}

export type SshFailure = 'connect' | 'timeout' | 'auth' | 'hostKey' | 'key' | 'aborted' | 'protocol';

/** A failed SSH connection. `reason` says which step failed, so callers can classify it. */
export class SshError extends Error {
  constructor(
    message: string,
    readonly reason: SshFailure,
  ) {
    super(message);
    this.name = 'SshError';
  }
}

/** Connects and authenticates; resolves with the client and the host key seen on the handshake. */
export async function sshConnect(options: SshConnectOptions): Promise<{ client: SshClient; hostKey: string }> {
  const { Client } = await loadSsh2();
  const where = `${options.user}@${options.host}:${options.port}`;
  const expected = options.expectedHostKey === undefined ? undefined : normalizeKeyLine(options.expectedHostKey);
  return new Promise((resolve, reject) => {
    const client = new Client();
    let seen: string | undefined;
    let settled = false;
    const finish = (error: SshError | undefined) => {
      if (settled) return;
      settled = true;
      options.signal?.removeEventListener('abort', onAbort);
      if (error) {
        client.removeAllListeners('ready');
        client.on('error', () => undefined); // late socket errors after we gave up
        client.end();
        reject(error);
      } else {
        resolve({ client, hostKey: seen as string });
      }
    };
    const onAbort = () => finish(new SshError(`ssh to ${where}: aborted`, 'aborted'));
    if (options.signal?.aborted) return onAbort();
    options.signal?.addEventListener('abort', onAbort, { once: true });

    client.on('ready', () => {
      if (seen === undefined) return finish(new SshError(`ssh to ${where}: no host key seen`, 'protocol'));
      finish(undefined);
    });
    client.on('error', (error: Error & { level?: string; code?: string }) => {
      if (seen !== undefined && expected !== undefined && seen !== expected) {
        return finish(new SshError(`ssh to ${where}: host key ${fingerprint(seen)} does not match the pinned ${fingerprint(expected)}`, 'hostKey'));
      }
      finish(new SshError(`ssh to ${where}: ${describeFailure(error)}`, classify(error)));
    });
    client.on('close', () => finish(new SshError(`ssh to ${where}: connection closed before login`, 'protocol')));

    try {
      client.connect({
        host: options.host,
        port: options.port,
        ...(options.sock ? { sock: options.sock as NonNullable<ConnectConfig['sock']> } : {}),
        username: options.user,
        privateKey: options.privateKey,
        readyTimeout: options.timeoutMs,
        // Only the key given: no agent, no password, no keyboard-interactive.
        tryKeyboard: false,
        // With a pinned key, only its algorithm is offered: a server with another key is refused
        // before authentication, so the private key is never used against an impostor.
        ...(expected === undefined
          ? {}
          : { algorithms: { serverHostKey: algorithmsFor(expected.split(' ')[0]) as NonNullable<ConnectConfig['algorithms']>['serverHostKey'] } }),
        hostVerifier: (rawKey: Buffer) => {
          try {
            seen = hostKeyLine(rawKey);
          } catch {
            return false;
          }
          return expected === undefined || seen === expected;
        },
      });
      // Commands are small messages back and forth: Nagle's delay would add tens of ms to each.
      client.setNoDelay(true);
    } catch (error) {
      // ssh2 throws synchronously when it cannot parse the private key; its message names the
      // format problem only, but we do not repeat it to be sure nothing of the key leaks.
      const unparsable = /privateKey/i.test((error as Error).message);
      finish(
        new SshError(`ssh to ${where}: ${unparsable ? 'the private key cannot be parsed' : scrub((error as Error).message)}`, unparsable ? 'key' : 'protocol'),
      );
    }
  });
}

export interface ExecResult {
  stdout: string;
  stderr: string;
  /** Exit status, or null when the command was killed by a signal or gave none. */
  code: number | null;
}

/** Runs one command; `stdin` (if any) is written and then closed, so the command sees EOF. */
export function sshExec(client: SshClient, command: string, options: { stdin?: string } = {}): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    client.exec(command, (error, stream) => {
      if (error) return reject(new Error(`ssh exec failed: ${scrub(error.message)}`));
      const stdout: Buffer[] = [];
      const stderr: Buffer[] = [];
      let code: number | null = null;
      stream.on('data', (chunk: Buffer) => stdout.push(chunk));
      stream.stderr.on('data', (chunk: Buffer) => stderr.push(chunk));
      stream.on('exit', (exitCode: number | null) => {
        if (typeof exitCode === 'number') code = exitCode;
      });
      stream.on('error', (streamError: Error) => reject(new Error(`ssh exec failed: ${scrub(streamError.message)}`)));
      // The channel's 'close' waits for stdout to end but not stderr: wait for both to be complete.
      let open = 2;
      const closed = () => {
        if (--open === 0) resolve({ stdout: Buffer.concat(stdout).toString('utf8'), stderr: Buffer.concat(stderr).toString('utf8'), code });
      };
      stream.stderr.once('close', closed);
      stream.once('close', (exitCode?: number | null) => {
        if (code === null && typeof exitCode === 'number') code = exitCode;
        closed();
      });
      stream.end(options.stdin ?? undefined);
    });
  });
}

/** Connects, captures the host key, closes: the readiness proof that a login works. */
export async function sshHandshake(options: SshConnectOptions): Promise<string> {
  const { client, hostKey } = await sshConnect(options);
  client.end();
  return hostKey;
}

function classify(error: Error & { level?: string; code?: string }): SshFailure {
  if (error.level === 'client-authentication') return 'auth';
  if (error.level === 'client-timeout') return 'timeout';
  if (error.level === 'client-socket' || typeof error.code === 'string') return 'connect';
  return 'protocol';
}

function describeFailure(error: Error & { level?: string; code?: string }): string {
  switch (classify(error)) {
    case 'auth':
      return 'authentication with the key was refused';
    case 'timeout':
      return 'timed out waiting for the SSH handshake';
    default:
      return scrub(error.message);
  }
}

/** The host key algorithms that can present a key of this type (RSA keys sign with SHA-2 too). */
function algorithmsFor(keyType: string): string[] {
  return keyType === 'ssh-rsa' ? ['rsa-sha2-512', 'rsa-sha2-256', 'ssh-rsa'] : [keyType];
}

/** `'…'` for a POSIX shell: any text as one word. */
export function shellQuote(text: string): string {
  return `'${text.replaceAll("'", "'\\''")}'`;
}

/** Removes anything that looks like key material (PEM armour, long base64 runs) from a message. */
export function scrub(message: string): string {
  return message.replace(/-----BEGIN [^-]+-----[\s\S]*?(-----END [^-]+-----|$)/g, '[key removed]').replace(/[A-Za-z0-9+/]{40,}={0,2}/g, '[removed]');
}
