// SSH key lines as every process writes and reads them: host key lines from key blobs, public key
// lines without their comment, known_hosts lines and fingerprints, and an ed25519 key pair written
// out in OpenSSH's formats. Plain text, bytes and a hash: nothing here loads ssh2, so the API can
// check a configured key without it.
import { createHash, generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';

/**
 * The OpenSSH line (`ssh-ed25519 AAAA…`) for a raw public key blob in SSH wire format, as ssh2's
 * hostVerifier receives it: the blob starts with the key type as a length-prefixed string.
 */
export function hostKeyLine(rawKey: Buffer): string {
  if (rawKey.length < 4) throw new Error('not an SSH public key blob: too short');
  const typeLength = rawKey.readUInt32BE(0);
  if (typeLength === 0 || typeLength > 64 || 4 + typeLength > rawKey.length) {
    throw new Error('not an SSH public key blob: bad key type length');
  }
  const type = rawKey.subarray(4, 4 + typeLength).toString('latin1');
  if (!/^[a-z0-9@._-]+$/i.test(type)) throw new Error('not an SSH public key blob: bad key type');
  return `${type} ${rawKey.toString('base64')}`;
}

/** `type base64` of a public key line, without its comment or a known_hosts host field. */
export function normalizeKeyLine(line: string): string {
  const fields = line.trim().split(/\s+/);
  const start = fields.findIndex((field, index) => looksLikeKeyType(field) && isBase64(fields[index + 1] ?? ''));
  if (start < 0) throw new Error('not an OpenSSH public key line (expected "ssh-ed25519 AAAA…")');
  return `${fields[start]} ${fields[start + 1]}`;
}

/** The known_hosts line pinning `hostKey` for host:port (`[host]:port key`, or plain host on port 22). */
export function knownHostsLine(host: string, port: number, hostKey: string): string {
  const name = port === 22 ? host : `[${host}]:${port}`;
  return `${name} ${normalizeKeyLine(hostKey)}`;
}

/** `SHA256:…` as `ssh-keygen -l` prints it: how we name a host key in messages. */
export function fingerprint(keyLine: string): string {
  const blob = Buffer.from(normalizeKeyLine(keyLine).split(' ')[1], 'base64');
  return `SHA256:${createHash('sha256').update(blob).digest('base64').replace(/=+$/, '')}`;
}

function looksLikeKeyType(field: string): boolean {
  return /^(ssh-(ed25519|rsa|dss)|ecdsa-sha2-[a-z0-9]+|sk-[a-z0-9@.-]+|ssh-ed448)(-cert-v01@openssh\.com)?$/.test(field);
}

function isBase64(field: string): boolean {
  return /^[A-Za-z0-9+/]+={0,2}$/.test(field) && field.length >= 16;
}

/**
 * An ed25519 key pair in OpenSSH's formats from its raw keys (32 bytes each): the private key file
 * as `ssh-keygen` writes it (openssh-key-v1, not encrypted; see OpenSSH's PROTOCOL.key) and the
 * authorized_keys line. The comment is in both.
 */
export function openSshEd25519(keys: { publicKey: Buffer; seed: Buffer }, comment: string): { privateKey: string; publicKey: string } {
  if (keys.publicKey.length !== 32 || keys.seed.length !== 32) throw new Error('an ed25519 key is 32 bytes');
  const type = 'ssh-ed25519';
  const blob = Buffer.concat([sshString(type), sshString(keys.publicKey)]);
  // Two equal random words let a reader check the decryption; the padding counts 1, 2, 3… up to a block of 8.
  const check = randomBytes(4);
  const secret = Buffer.concat([
    check,
    check,
    sshString(type),
    sshString(keys.publicKey),
    sshString(Buffer.concat([keys.seed, keys.publicKey])),
    sshString(comment),
  ]);
  const padding = Buffer.from(Array.from({ length: (8 - (secret.length % 8)) % 8 }, (_, index) => index + 1));
  const count = Buffer.alloc(4);
  count.writeUInt32BE(1);
  const file = Buffer.concat([
    Buffer.from('openssh-key-v1\0', 'latin1'),
    sshString('none'), // cipher
    sshString('none'), // key derivation
    sshString(''), // its options
    count,
    sshString(blob),
    sshString(Buffer.concat([secret, padding])),
  ]);
  const lines = file.toString('base64').match(/.{1,70}/g)!;
  return {
    privateKey: `-----BEGIN OPENSSH PRIVATE KEY-----\n${lines.join('\n')}\n-----END OPENSSH PRIVATE KEY-----\n`,
    publicKey: `${type} ${blob.toString('base64')} ${comment}`,
  };
}

/** A string in SSH wire format: its length (32 bits, big-endian), then its bytes. */
function sshString(value: Buffer | string): Buffer {
  const bytes = typeof value === 'string' ? Buffer.from(value, 'utf8') : value;
  const length = Buffer.alloc(4);
  length.writeUInt32BE(bytes.length);
  return Buffer.concat([length, bytes]);
}

/**
 * A fresh ed25519 key pair in OpenSSH formats; `publicKey` is one authorized_keys line. Made in
 * place: it takes less of the main thread than a job on libuv's thread pool, whose setup and
 * result still run here.
 */
export function generateKeyPair(comment: string): { privateKey: string; publicKey: string } {
  checkComment(comment);
  return inOpenSshFormats(generateKeyPairSync('ed25519').privateKey, comment);
}

function checkComment(comment: string): void {
  if (/[\r\n]/.test(comment)) throw new Error('a key comment must be a single line');
}

/**
 * Node's key written out by openSshEd25519, from its raw bytes (ssh2's generator, which goes
 * through DER, costs several times as much and now and then writes a key nothing can parse back).
 */
function inOpenSshFormats(privateKey: KeyObject, comment: string): { privateKey: string; publicKey: string } {
  const jwk = privateKey.export({ format: 'jwk' });
  return openSshEd25519({ publicKey: Buffer.from(jwk.x!, 'base64url'), seed: Buffer.from(jwk.d!, 'base64url') }, comment);
}
