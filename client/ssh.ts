// Commands and file copies on a reserved machine over SSH (ssh2), with the reservation's key and
// the host key Paddock captured at readiness pinned: only that key's algorithm is offered, and a
// server presenting any other key is refused before authentication (so the private key is never
// used against an impostor). Errors name the user@host:port, never the key.
import type { Client, ClientChannel, SFTPWrapper } from 'ssh2';
import { shellQuote, SshError, sshConnect } from '../protocol/ssh.js';
import { createReadStream, createWriteStream, type ReadStream, type WriteStream } from 'node:fs';
import type { Duplex } from 'node:stream';
import { PaddockError } from './errors.js';

export interface SshTarget {
  host: string;
  port: number;
  user: string;
  /** `ssh-ed25519 AAAA…`, as the reservation reported it. */
  hostKey: string;
  /** OpenSSH private key of the reservation. */
  privateKey: string;
  /** `paddock`: reached through the API's tunnel (host and port are then the lab host's view). */
  via?: 'direct' | 'paddock';
  /** Opens the tunnel to the machine's SSH port, where `via` is `paddock`. */
  tunnel?: () => Promise<Duplex>;
}

export interface CommandResult {
  stdout: string;
  stderr: string;
  /** Exit status; null when the command died of a signal (then `signal` names it). */
  code: number | null;
  signal?: string;
}

/** `type base64` of an OpenSSH public key line, without the comment. */
export function keyIdentity(line: string): string {
  return line.trim().split(/\s+/).slice(0, 2).join(' ');
}

const where = (target: SshTarget) => `${target.user}@${target.host}:${target.port}${target.via === 'paddock' ? ' (through Paddock)' : ''}`;

/** Opens an authenticated connection (protocol/ssh.ts: the pinned host key's algorithm only); the caller ends it. */
export async function connect(target: SshTarget): Promise<Client> {
  const pinned = keyIdentity(target.hostKey);
  if (!pinned.split(' ')[0] || !pinned.includes(' ')) {
    throw new PaddockError(`no usable host key for ${where(target)}; is the member ready?`, 'host_key_missing');
  }
  const sock = target.via === 'paddock' && target.tunnel ? await target.tunnel() : undefined;
  try {
    const { client } = await sshConnect({
      ...(sock ? { sock } : {}),
      host: target.host,
      port: target.port,
      user: target.user,
      privateKey: target.privateKey,
      expectedHostKey: pinned,
      timeoutMs: 20_000,
    });
    return client;
  } catch (error) {
    if (error instanceof SshError && error.reason === 'hostKey') {
      throw new PaddockError(`${where(target)} presented a host key other than the one Paddock pinned; refusing to connect`, 'host_key_mismatch');
    }
    throw new PaddockError(`cannot log in to ${where(target)}: ${(error as Error).message.replace(/^ssh to \S+: /, '')}`, 'ssh_failed');
  }
}

/**
 * Runs `work` on an open connection and ends it afterwards. A connection that breaks while
 * `work` runs rejects with `ssh_failed` instead of leaving the promise hanging.
 */
async function withConnection<T>(target: SshTarget, work: (client: Client) => Promise<T>): Promise<T> {
  const client = await connect(target);
  let onError!: (error: Error) => void;
  let onClose!: () => void;
  const broken = new Promise<never>((_, reject) => {
    onError = (error) => reject(new PaddockError(`the SSH connection to ${where(target)} failed: ${error.message}`, 'ssh_failed'));
    onClose = () => reject(new PaddockError(`the SSH connection to ${where(target)} closed unexpectedly`, 'ssh_failed'));
    client.on('error', onError);
    client.once('close', onClose);
  });
  broken.catch(() => undefined);
  try {
    return await Promise.race([work(client), broken]);
  } finally {
    client.off('error', onError);
    client.off('close', onClose);
    client.on('error', () => undefined); // late errors while closing are of no interest
    client.end();
  }
}

/** Runs a shell command on the member; resolves with its output and exit status. */
export function runCommand(target: SshTarget, command: string): Promise<CommandResult> {
  return withConnection(
    target,
    (client) =>
      new Promise<CommandResult>((resolve, reject) => {
        client.exec(command, (error: Error | undefined, channel: ClientChannel) => {
          if (error) return reject(new PaddockError(`cannot run a command on ${where(target)}: ${error.message}`, 'ssh_failed'));
          const stdout: Buffer[] = [];
          const stderr: Buffer[] = [];
          let code: number | null = null;
          let signal: string | undefined;
          channel.on('data', (chunk: Buffer) => stdout.push(chunk));
          channel.stderr.on('data', (chunk: Buffer) => stderr.push(chunk));
          channel.on('exit', (status: number | null, signalName?: string) => {
            code = typeof status === 'number' ? status : null;
            if (typeof signalName === 'string') signal = signalName;
          });
          channel.on('close', () => {
            const result: CommandResult = { stdout: Buffer.concat(stdout).toString('utf8'), stderr: Buffer.concat(stderr).toString('utf8'), code };
            if (signal !== undefined) result.signal = signal;
            resolve(result);
          });
        });
      }),
  );
}

function openSftp(client: Client, target: SshTarget): Promise<SFTPWrapper> {
  return new Promise((resolve, reject) =>
    client.sftp((error, sftp) => (error ? reject(new PaddockError(`no SFTP on ${where(target)}: ${error.message}`, 'ssh_failed')) : resolve(sftp))),
  );
}

/** Copies a local file to the member: SFTP, or `cat` over an exec channel where there is no SFTP server. */
export function uploadFile(target: SshTarget, localPath: string, remotePath: string): Promise<void> {
  return withConnection(target, async (client) => {
    const sftp = await openSftp(client, target).catch(() => undefined);
    if (!sftp) return catCopy(client, target, `cat > ${shellQuote(remotePath)}`, { from: localPath }, `copy of ${localPath} to ${where(target)}:${remotePath}`);
    await new Promise<void>((resolve, reject) =>
      sftp.fastPut(localPath, remotePath, (error) =>
        error ? reject(new PaddockError(`copy of ${localPath} to ${where(target)}:${remotePath} failed: ${error.message}`, 'copy_failed')) : resolve(),
      ),
    );
  });
}

/** Copies a file from the member to a local path: SFTP, or `cat` where there is no SFTP server. */
export function downloadFile(target: SshTarget, remotePath: string, localPath: string): Promise<void> {
  return withConnection(target, async (client) => {
    const sftp = await openSftp(client, target).catch(() => undefined);
    if (!sftp) return catCopy(client, target, `cat ${shellQuote(remotePath)}`, { to: localPath }, `copy of ${where(target)}:${remotePath} to ${localPath}`);
    await new Promise<void>((resolve, reject) =>
      sftp.fastGet(remotePath, localPath, (error) =>
        error ? reject(new PaddockError(`copy of ${where(target)}:${remotePath} to ${localPath} failed: ${error.message}`, 'copy_failed')) : resolve(),
      ),
    );
  });
}

/**
 * A copy through a shell command (small guests such as dropbear images have no SFTP server):
 * the local file streams into the command's stdin, or its stdout into the local file.
 */
function catCopy(client: Client, target: SshTarget, command: string, file: { from?: string; to?: string }, what: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const failed = (reason: string) => reject(new PaddockError(`${what} failed: ${reason}`, 'copy_failed'));
    client.exec(command, (error: Error | undefined, channel: ClientChannel) => {
      if (error) return failed(error.message);
      let code: number | null = null;
      const stderr: Buffer[] = [];
      channel.stderr.on('data', (chunk: Buffer) => stderr.push(chunk));
      channel.on('exit', (status: number | null) => {
        code = typeof status === 'number' ? status : null;
      });
      const local: NodeJS.EventEmitter = file.from ? createReadStream(file.from) : createWriteStream(file.to!);
      local.on('error', (localError: Error) => {
        channel.close();
        failed(localError.message);
      });
      const written = file.to ? new Promise<void>((done) => local.once('close', () => done())) : Promise.resolve();
      channel.on('close', () => {
        void written.then(() => {
          if (code === 0) resolve();
          else failed(Buffer.concat(stderr).toString('utf8').trim() || `exit status ${code}`);
        });
      });
      if (file.from) {
        channel.resume(); // the command's (empty) output must be read for the channel to close
        (local as ReadStream).pipe(channel);
      } else channel.pipe(local as WriteStream);
    });
  });
}
