// The shared SSH pieces against a real OpenSSH server and the real OpenSSH client.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import test from 'ava';
import type { ExecutionContext } from 'ava';
import ssh2 from 'ssh2';
import {
  fingerprint,
  generateKeyPair,
  hostKeyLine,
  knownHostsLine,
  normalizeKeyLine,
  sshConnect,
  sshExec,
  sshHandshake,
  SshError,
} from '../../protocol/ssh.js';
import { runSsh, startSshd, type TestSshd } from '../helpers/sshd.js';
import { assertNoKeyMaterial } from '../helpers/secrets.js';

async function withSshd(t: ExecutionContext, options: { authorizedKeys?: string[] }, body: (sshd: TestSshd) => Promise<void>) {
  const sshd = await startSshd(options);
  t.teardown(() => sshd.stop());
  await body(sshd);
}

test('generateKeyPair gives an authorized_keys line and a key the OpenSSH client logs in with', async (t) => {
  const pair = generateKeyPair('paddock:r-123');
  t.regex(pair.publicKey, /^ssh-ed25519 AAAA[A-Za-z0-9+/]+=* paddock:r-123$/);
  t.regex(pair.privateKey, /^-----BEGIN OPENSSH PRIVATE KEY-----\n[\s\S]+\n-----END OPENSSH PRIVATE KEY-----\n$/);
  t.not(generateKeyPair('x').publicKey.split(' ')[1], pair.publicKey.split(' ')[1], 'every pair is fresh');

  await withSshd(t, { authorizedKeys: [pair.publicKey] }, async (sshd) => {
    const knownHosts = knownHostsLine(sshd.host, sshd.port, sshd.hostKey);
    const login = await runSsh(sshd, { privateKey: pair.privateKey, knownHosts, command: 'echo hi' });
    t.is(login.code, 0, login.stderr);
    t.is(login.stdout, 'hi\n');

    // The same client refuses a key that is not authorized, so the login above proves something.
    const stranger = generateKeyPair('stranger');
    const refused = await runSsh(sshd, { privateKey: stranger.privateKey, knownHosts, command: 'echo hi' });
    t.not(refused.code, 0);
    t.regex(refused.stderr, /Permission denied/);
  });
});

test('knownHostsLine pins the host: the OpenSSH client accepts the right key and refuses another', async (t) => {
  t.is(knownHostsLine('10.0.0.5', 22, 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA3b comment'), '10.0.0.5 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA3b');
  t.is(knownHostsLine('127.0.0.1', 2222, 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA3b'), '[127.0.0.1]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA3b');

  await withSshd(t, {}, async (sshd) => {
    const other = await startSshd();
    t.teardown(() => other.stop());
    const wrongPin = knownHostsLine(sshd.host, sshd.port, other.hostKey);
    const refused = await runSsh(sshd, { privateKey: sshd.adminKey.privateKey, knownHosts: wrongPin, command: 'echo hi' });
    t.not(refused.code, 0);
    t.regex(refused.stderr, /HOST IDENTIFICATION HAS CHANGED|Host key verification failed/);
  });
});

test('sshHandshake captures the server host key, the same line as the server key file', async (t) => {
  await withSshd(t, {}, async (sshd) => {
    const hostKey = await sshHandshake({ host: sshd.host, port: sshd.port, user: sshd.user, privateKey: sshd.adminKey.privateKey, timeoutMs: 5000 });
    t.is(hostKey, sshd.hostKey);
    t.regex(hostKey, /^ssh-ed25519 AAAA\S+$/);
    // Pinning the right key works too.
    const pinned = await sshHandshake({
      host: sshd.host,
      port: sshd.port,
      user: sshd.user,
      privateKey: sshd.adminKey.privateKey,
      expectedHostKey: `${sshd.hostKey} some comment`,
      timeoutMs: 5000,
    });
    t.is(pinned, sshd.hostKey);
  });
});

test('hostKeyLine reads ed25519, ECDSA and RSA key blobs', (t) => {
  for (const [type, options] of [
    ['ed25519', {}],
    ['ecdsa', { bits: 256 }],
    ['rsa', { bits: 2048 }],
  ] as const) {
    const line = ssh2.utils.generateKeyPairSync(type as 'ecdsa', options as { bits: 256 }).public.trim();
    const [keyType, blob] = line.split(' ');
    t.is(hostKeyLine(Buffer.from(blob, 'base64')), `${keyType} ${blob}`);
  }
  t.throws(() => hostKeyLine(Buffer.from([0, 0, 0])));
  t.throws(() => hostKeyLine(Buffer.from([0xff, 0, 0, 1, 65])));
  t.throws(() => normalizeKeyLine('not a key'));
});

test('a host key other than the pinned one is refused, naming fingerprints only', async (t) => {
  await withSshd(t, {}, async (sshd) => {
    const impostor = generateKeyPair('impostor').publicKey;
    const error = await t.throwsAsync(
      sshConnect({ host: sshd.host, port: sshd.port, user: sshd.user, privateKey: sshd.adminKey.privateKey, expectedHostKey: impostor, timeoutMs: 5000 }),
      { instanceOf: SshError },
    );
    t.is(error?.reason, 'hostKey');
    t.true(error?.message.includes(fingerprint(sshd.hostKey)));
    t.true(error?.message.includes(fingerprint(impostor)));
    assertNoKeyMaterial(t, error?.message ?? '', sshd.adminKey.privateKey);
  });
});

test('authentication failures and closed ports fail without key material in the message', async (t) => {
  await withSshd(t, {}, async (sshd) => {
    const stranger = generateKeyPair('stranger');
    const refused = await t.throwsAsync(sshConnect({ host: sshd.host, port: sshd.port, user: sshd.user, privateKey: stranger.privateKey, timeoutMs: 5000 }), {
      instanceOf: SshError,
    });
    t.is(refused?.reason, 'auth');
    t.regex(refused?.message ?? '', new RegExp(`@127\\.0\\.0\\.1:${sshd.port}`));
    assertNoKeyMaterial(t, refused?.message ?? '', stranger.privateKey);

    const garbage = `-----BEGIN OPENSSH PRIVATE KEY-----\n${'QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo'.repeat(3)}\n-----END OPENSSH PRIVATE KEY-----\n`;
    const unparsable = await t.throwsAsync(sshConnect({ host: sshd.host, port: sshd.port, user: sshd.user, privateKey: garbage, timeoutMs: 5000 }), {
      instanceOf: SshError,
    });
    t.is(unparsable?.reason, 'key');
    assertNoKeyMaterial(t, unparsable?.message ?? '', garbage);
  });

  const closed = await startSshd();
  await closed.stop();
  const error = await t.throwsAsync(
    sshConnect({ host: closed.host, port: closed.port, user: closed.user, privateKey: closed.adminKey.privateKey, timeoutMs: 5000 }),
    { instanceOf: SshError },
  );
  t.is(error?.reason, 'connect');
  t.regex(error?.message ?? '', /ECONNREFUSED/);
  assertNoKeyMaterial(t, error?.message ?? '', closed.adminKey.privateKey);
});

test('an aborted signal stops the connection attempt', async (t) => {
  await withSshd(t, {}, async (sshd) => {
    const controller = new AbortController();
    controller.abort();
    const error = await t.throwsAsync(
      sshConnect({ host: sshd.host, port: sshd.port, user: sshd.user, privateKey: sshd.adminKey.privateKey, timeoutMs: 5000, signal: controller.signal }),
      { instanceOf: SshError },
    );
    t.is(error?.reason, 'aborted');
  });
});

test('sshExec returns stdout, stderr and exit code, and feeds stdin then EOF', async (t) => {
  await withSshd(t, {}, async (sshd) => {
    const { client, hostKey } = await sshConnect({ host: sshd.host, port: sshd.port, user: sshd.user, privateKey: sshd.adminKey.privateKey, timeoutMs: 5000 });
    t.teardown(() => client.end());
    t.is(hostKey, sshd.hostKey);
    t.deepEqual(await sshExec(client, 'echo out; echo err >&2; exit 3'), { stdout: 'out\n', stderr: 'err\n', code: 3 });
    const echoed = await sshExec(client, 'wc -l; cat >/dev/null', { stdin: 'one\ntwo\n' });
    t.is(echoed.stdout.trim(), '2');
    t.is(echoed.code, 0);
    const whoami = await sshExec(client, 'id -un');
    t.is(whoami.stdout.trim(), sshd.user);
  });
});

test('every generated key pair parses back: ssh2 reads each private key with its comment and the public key of its line; ssh-keygen too', (t) => {
  const pairs = Array.from({ length: 1000 }, (_, index) => generateKeyPair(`paddock:r-${index}`));
  const wrong = pairs.filter((pair, index) => {
    const parsed = ssh2.utils.parseKey(pair.privateKey);
    if (parsed instanceof Error) return true;
    const key = Array.isArray(parsed) ? parsed[0] : parsed;
    return key.comment !== `paddock:r-${index}` || `${key.type} ${key.getPublicSSH().toString('base64')} ${key.comment}` !== pair.publicKey;
  });
  t.is(wrong.length, 0);
  t.is(new Set(pairs.map((pair) => pair.publicKey)).size, 1000, 'every pair is fresh');

  const dir = mkdtempSync(path.join(os.tmpdir(), 'paddock-keys-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  for (const [index, pair] of pairs.slice(0, 20).entries()) {
    const file = path.join(dir, `key-${index}`);
    writeFileSync(file, pair.privateKey, { mode: 0o600 });
    const derived = execFileSync('ssh-keygen', ['-y', '-f', file], { encoding: 'utf8' });
    t.is(normalizeKeyLine(derived), normalizeKeyLine(pair.publicKey));
  }
});
