// Commands and file copies on a reserved machine over SSH (ssh2), with the reservation's key and
// the host key Paddock captured at readiness pinned: a server presenting another key is refused.
import { Client, type ConnectConfig, type SFTPWrapper } from 'ssh2';
import { PaddockError } from './errors.js';

export interface SshTarget {
  host: string;
  port: number;
  user: string;
  /** `ssh-ed25519 AAAA…`, as the reservation reported it. */
  hostKey: string;
  privateKey: string;
}

export interface CommandResult {
  stdout: string;
  stderr: string;
  /** Exit status; null when the command died of a signal. */
  code: number | null;
}

/** The `type base64` line of a raw SSH public key blob. */
function keyLine(raw: Buffer): string {
  const length = raw.readUInt32BE(0);
  return `${raw.subarray(4, 4 + length).toString('latin1')} ${raw.toString('base64')}`;
}

const sameKey = (a: string, b: string) => a.trim().split(/\s+/).slice(0, 2).join(' ') === b.trim().split(/\s+/).slice(0, 2).join(' ');

async function connect(target: SshTarget): Promise<Client> {
  const client = new Client();
  let mismatch = false;
  const config: ConnectConfig = {
    host: target.host,
    port: target.port,
    username: target.user,
    privateKey: target.privateKey,
    readyTimeout: 20_000,
    hostVerifier: (key: Buffer) => {
      mismatch = !sameKey(keyLine(key), target.hostKey);
      return !mismatch;
    },
  };
  return new Promise((resolve, reject) => {
    client.once('ready', () => resolve(client));
    client.once('error', (error) => {
      const where = `${target.user}@${target.host}:${target.port}`;
      reject(
        mismatch
          ? new PaddockError(`${where} presented a host key other than the one Paddock pinned; refusing to connect`, 'host_key_mismatch')
          : new PaddockError(`cannot log in to ${where}: ${error.message}`, 'ssh_failed'),
      );
    });
    client.connect(config);
  });
}

export async function runCommand(target: SshTarget, command: string): Promise<CommandResult> {
  const client = await connect(target);
  try {
    return await new Promise<CommandResult>((resolve, reject) => {
      client.exec(command, (error, channel) => {
        if (error) return reject(new PaddockError(`cannot run a command on ${target.host}: ${error.message}`, 'ssh_failed'));
        const stdout: Buffer[] = [];
        const stderr: Buffer[] = [];
        let code: number | null = null;
        channel.on('data', (chunk: Buffer) => stdout.push(chunk));
        channel.stderr.on('data', (chunk: Buffer) => stderr.push(chunk));
        channel.on('exit', (status: number | null) => (code = status));
        channel.on('close', () => resolve({ stdout: Buffer.concat(stdout).toString(), stderr: Buffer.concat(stderr).toString(), code }));
      });
    });
  } finally {
    client.end();
  }
}

async function withSftp<T>(target: SshTarget, work: (sftp: SFTPWrapper) => Promise<T>): Promise<T> {
  const client = await connect(target);
  try {
    const sftp = await new Promise<SFTPWrapper>((resolve, reject) =>
      client.sftp((error, session) => (error ? reject(new PaddockError(`no SFTP on ${target.host}: ${error.message}`, 'ssh_failed')) : resolve(session))),
    );
    return await work(sftp);
  } finally {
    client.end();
  }
}

export function uploadFile(target: SshTarget, localPath: string, remotePath: string): Promise<void> {
  return withSftp(target, (sftp) =>
    new Promise((resolve, reject) =>
      sftp.fastPut(localPath, remotePath, (error) => (error ? reject(new PaddockError(`copy to ${target.host}:${remotePath} failed: ${error.message}`, 'copy_failed')) : resolve())),
    ),
  );
}

export function downloadFile(target: SshTarget, remotePath: string, localPath: string): Promise<void> {
  return withSftp(target, (sftp) =>
    new Promise((resolve, reject) =>
      sftp.fastGet(remotePath, localPath, (error) => (error ? reject(new PaddockError(`copy from ${target.host}:${remotePath} failed: ${error.message}`, 'copy_failed')) : resolve())),
    ),
  );
}
