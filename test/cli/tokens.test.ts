// `paddock token ls | create | revoke | rotate` and token expiry, driven through the real command
// against a real API, as admins and as hostile users would: a user cannot list, revoke or rotate
// another's token; an expired token is refused at once with its own code; revoking or rotating a
// token cuts what is open with it (a followed console log, a console WebSocket) at once.
import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import test from 'ava';
import WebSocket from 'ws';
import { parse as parseYaml } from 'yaml';
import type { TokenView } from '../../protocol/api.js';
import { startApi, staticHostOn, staticMachinesYaml, testConfig, type TestApi } from '../helpers/api.js';
import { startSshd, type TestSshd } from '../helpers/sshd.js';
import { waitFor } from '../helpers/wait.js';

let api: TestApi;
let host: TestSshd;
let scratch: string;

const bin = path.resolve('bin/paddock.js');

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

function paddock(args: string[], token: string | null = api.adminToken, extra: NodeJS.ProcessEnv = {}): Promise<Result> {
  return new Promise((resolve) => {
    const env: NodeJS.ProcessEnv = { ...process.env, PADDOCK_URL: api.url, XDG_CONFIG_HOME: path.join(scratch, 'no-config'), ...extra };
    delete env.PADDOCK_PROFILE;
    if (token === null) delete env.PADDOCK_TOKEN;
    else env.PADDOCK_TOKEN = token;
    execFile(process.execPath, [bin, ...args], { env, timeout: 120_000 }, (error, stdout, stderr) => {
      resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

async function createToken(name: string, ...args: string[]): Promise<string> {
  const created = await paddock(['token', 'create', name, ...args]);
  if (created.code !== 0) throw new Error(`token create ${name}: ${created.stderr}`);
  return created.stdout.trim();
}

test.before(async () => {
  scratch = mkdtempSync(path.join(os.tmpdir(), 'paddock-tokens-'));
  host = await startSshd();
  api = await startApi(testConfig(staticMachinesYaml([staticHostOn(host, 'host-1', { type: 'static-host' })])));
});

test.after.always(async () => {
  await api?.close();
  await host?.stop();
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

test('create with --expires, and the listing shows the expiry in every output format', async (t) => {
  const created = await paddock(['token', 'create', 'erin', '--expires', '30d', '--json']);
  t.is(created.code, 0, created.stderr);
  const record = JSON.parse(created.stdout) as TokenView & { token: string };
  t.regex(record.token, /^pdk_/);
  t.is(Date.parse(record.expiresAt!) - Date.parse(record.createdAt), 30 * 86400 * 1000);

  const table = await paddock(['token', 'ls']);
  t.regex(table.stdout, /^NAME\s+ROLE\s+CREATED\s+EXPIRES$/m);
  t.regex(table.stdout, /^erin\s+user\s+\S+\s+\S+Z \(in 29d 23h\)$/m);
  t.regex(table.stdout, /^admin\s+admin\s+\S+\s+never$/m);
  t.false(table.stdout.includes(record.token), 'never the token itself');

  const json = JSON.parse((await paddock(['token', 'ls', '--json'])).stdout) as TokenView[];
  t.is(json.find((token) => token.name === 'erin')?.expiresAt, record.expiresAt, '--json still works');
  // (Other tests of this file add tokens meanwhile: erin's entry is compared.)
  const erin = (list: TokenView[]) => list.find((token) => token.name === 'erin');
  t.deepEqual(erin(JSON.parse((await paddock(['token', 'ls', '-o', 'json'])).stdout) as TokenView[]), erin(json), '--output json is --json');
  const yaml = parseYaml((await paddock(['token', 'ls', '--output', 'yaml'])).stdout) as TokenView[];
  t.deepEqual(erin(yaml), erin(json));
  const names = (await paddock(['token', 'ls', '-o', 'name'])).stdout.trim().split('\n');
  t.true(names.includes('erin') && names.includes('admin'), names.join(','));

  const bad = await paddock(['token', 'create', 'frank', '--expires', '30 days']);
  t.is(bad.code, 2);
  t.is(bad.stderr, 'paddock: --expires: "30 days": unknown unit "days" (the units are ms, s, m, h and d) (usage)\n');
  const tooLong = await paddock(['token', 'create', 'frank', '--expires', '6000d']);
  t.is(tooLong.code, 1);
  t.regex(tooLong.stderr, /"6000d".*\(invalid_request\)/, 'the bound quotes the duration as written');
});

test('an expired token is refused at once with token_expired; rotating it gives a working one', async (t) => {
  const token = await createToken('brief', '--expires', '1s');
  await new Promise((resolve) => setTimeout(resolve, 1500));
  const refused = await paddock(['ls'], token);
  t.is(refused.code, 1);
  t.regex(refused.stderr, /^paddock: token brief expired at \S+: an admin can rotate it \(paddock token rotate brief\) \(token_expired\)\n$/);
  t.false(refused.stderr.includes(token.slice(4)), 'the token is not echoed');
  const direct = await api.http(token).get('v1/whoami');
  t.is(direct.statusCode, 401);
  t.is((direct.body as { code: string }).code, 'token_expired');
  t.regex((await paddock(['token', 'ls'])).stdout, /^brief\s+user\s+\S+\s+expired \S+$/m);

  const rotated = await paddock(['token', 'rotate', 'brief', '--expires', '1h']);
  t.is(rotated.code, 0, rotated.stderr);
  t.regex(rotated.stderr, /brief: rotated; expires \S+ \(in (59m|1h)/);
  const fresh = rotated.stdout.trim();
  const me = await paddock(['whoami'], fresh);
  t.is(me.code, 0, me.stderr);
  t.regex(me.stdout, /^brief \(user\)\nserver http:\S+\ntoken expires \S+ \(in (59m|1h)/);
});

test('a user cannot list, create, revoke or rotate tokens but her own', async (t) => {
  const grace = await createToken('grace');
  const heidi = await createToken('heidi');
  for (const args of [
    ['token', 'ls'],
    ['token', 'create', 'mallory', '--role', 'admin'],
    ['token', 'revoke', 'heidi'],
    ['token', 'rotate', 'heidi'],
    ['token', 'rotate', 'admin'],
  ]) {
    const answer = await paddock(args, grace);
    t.is(answer.code, 1, args.join(' '));
    t.regex(answer.stderr, /\(forbidden\)\n$/, args.join(' '));
  }
  t.regex((await paddock(['token', 'revoke', 'heidi'], grace)).stderr, /only an admin may revoke another's token; your token is grace/);
  t.is((await paddock(['whoami'], heidi)).code, 0, "heidi's token is untouched");
  const agent = await createToken('lab-x', '--role', 'agent');
  t.regex((await paddock(['token', 'revoke', 'heidi'], agent)).stderr, /\(forbidden\)/, 'nor can an agent');

  // Her own: rotated into the file a profile reads, in place (`> FILE` would empty it first).
  const file = path.join(scratch, 'grace.token');
  const rotated = await paddock(['token', 'rotate', 'grace', '--write', file], grace);
  t.is(rotated.code, 0, rotated.stderr);
  t.regex(rotated.stdout, /^grace: rotated; the token is in \S+grace.token \(mode 0600\), expires never\n$/);
  t.is(statSync(file).mode & 0o777, 0o600);
  const next = readFileSync(file, 'utf8').trim();
  t.regex((await paddock(['ls'], grace)).stderr, /unknown or revoked token \(unauthorized\)/, 'the old secret stops at once');
  t.is((await paddock(['whoami'], next)).stdout.split('\n')[0], 'grace (user)', 'same name and role');
  const revoked = await paddock(['token', 'revoke', 'grace'], next);
  t.is(revoked.code, 0, revoked.stderr);
  t.is(revoked.stdout, 'grace: revoked\n');
  t.regex((await paddock(['ls'], next)).stderr, /\(unauthorized\)/);
  t.regex((await paddock(['token', 'revoke', 'grace'])).stderr, /token grace not found \(not_found\)/);
});

test.serial('revoking a token cuts its open streams at once: a followed console log and a console WebSocket', async (t) => {
  const ivan = await createToken('ivan');
  const reserved = await paddock(['reserve', 'type=static-host', '--wait', '--timeout', '3m', '-o', 'name'], ivan);
  t.is(reserved.code, 0, reserved.stderr);
  const id = reserved.stdout.trim();
  t.regex(id, /^r-[0-9a-f]{12}$/, '-o name prints the id alone');

  const env: NodeJS.ProcessEnv = { ...process.env, PADDOCK_URL: api.url, PADDOCK_TOKEN: ivan, XDG_CONFIG_HOME: path.join(scratch, 'no-config') };
  const follower = spawn(process.execPath, [bin, 'console', id, '-f'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let followerErr = '';
  follower.stderr.on('data', (chunk: Buffer) => (followerErr += chunk.toString()));
  const followerExit = new Promise<number | null>((resolve) => follower.once('exit', resolve));

  const socket = new WebSocket(`${api.url.replace('http', 'ws')}/v1/reservations/${id}/console/stream`, { headers: { authorization: `Bearer ${ivan}` } });
  await new Promise<void>((resolve, reject) => {
    socket.once('open', () => resolve());
    socket.once('unexpected-response', (_request, response) => reject(new Error(`console stream refused: ${response.statusCode}`)));
  });
  const socketClosed = new Promise<number>((resolve) => socket.once('close', (code) => resolve(code)));
  // Both have been open a while, with nothing to say, when the token goes.
  await new Promise((resolve) => setTimeout(resolve, 1500));
  t.is(follower.exitCode, null, 'the follower is still following');
  t.is(socket.readyState, WebSocket.OPEN);

  const revoked = await paddock(['token', 'revoke', 'ivan']);
  t.is(revoked.code, 0, revoked.stderr);
  t.not(await socketClosed, 1000, 'the WebSocket is cut, not closed as done');
  t.is(await followerExit, 1);
  t.regex(followerErr, /unknown or revoked token \(unauthorized\)/);
  // Cut by the revocation, not by the reservation's end: the reservation is still ready.
  t.is(JSON.parse((await paddock(['show', id, '--json'])).stdout).state, 'ready', 'the streams ended while the reservation lives');

  await paddock(['release', id]);
  await waitFor(async () => JSON.parse((await paddock(['show', id, '--json'])).stdout).state === 'released', 60_000, 'released');
});
