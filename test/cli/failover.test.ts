// `paddock` given several API servers, in PADDOCK_URL or a profile: a dead first server is passed
// over, a follower's redirect is followed to the leader, and a bad list is refused in one line
// without echoing a password. The leader is a real API; the follower a stand-in speaking the
// protocol a follower will speak (test/helpers/follower.ts).
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import test from 'ava';
import { startApi, testConfig, type TestApi } from '../helpers/api.js';
import { closedPort, follower, startStandIn, type StandIn } from '../helpers/follower.js';

let api: TestApi;
let scratch: string;
let follows: StandIn;

const bin = path.resolve('bin/paddock.js');

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

/** `paddock ARGS` with only the given PADDOCK_* variables, and profiles under the scratch folder. */
function paddock(args: string[], env: NodeJS.ProcessEnv): Promise<Result> {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('PADDOCK_')));
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [bin, ...args],
      { env: { ...clean, XDG_CONFIG_HOME: path.join(scratch, 'config'), ...env }, timeout: 60_000 },
      (error, stdout, stderr) => {
        resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stdout, stderr });
      },
    );
  });
}

test.before(async () => {
  scratch = mkdtempSync(path.join(os.tmpdir(), 'paddock-cli-failover-'));
  api = await startApi(testConfig('agent: { enabled: false }\nmachines: []\n'));
  follows = await startStandIn(follower(api.url));
});

test.after.always(async () => {
  await follows?.close();
  await api?.close();
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

test('PADDOCK_URL with a dead first server: the command goes on to the live one', async (t) => {
  const dead = await closedPort();
  const result = await paddock(['whoami'], { PADDOCK_URL: `${dead},${api.url}`, PADDOCK_TOKEN: api.adminToken });
  t.is(result.code, 0, result.stderr);
  t.is(result.stdout, `admin (admin)\nserver ${dead}, ${api.url}\n`);
});

test("a profile listing a follower first: the follower's redirect is followed to the leader with the token", async (t) => {
  const dir = path.join(scratch, 'config', 'paddock');
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, 'admin.token'), `${api.adminToken}\n`, { mode: 0o600 });
  writeFileSync(path.join(dir, 'config.yaml'), `profiles:\n  ha: { url: "${follows.url},${api.url}", tokenFile: admin.token }\ndefault: ha\n`);
  const before = follows.seen.length;
  const listed = await paddock(['machines', 'ls'], {});
  t.is(listed.code, 0, listed.stderr);
  t.deepEqual(
    follows.seen.slice(before).map((each) => `${each.method} ${each.path.replace(/\?.*/, '')} ${each.authorization === `Bearer ${api.adminToken}`}`),
    ['GET /v1/machines true'],
    'asked once, with the token; the leader answered',
  );

  writeFileSync(path.join(dir, 'config.yaml'), `profiles:\n  ha: { url: "${api.url},ftp://b:21", tokenFile: admin.token }\ndefault: ha\n`);
  const refused = await paddock(['whoami'], {});
  t.is(refused.code, 1);
  t.regex(refused.stderr, /profile ha: url is http:\/\/HOST:PORT or https:\/\/HOST, or several of them comma-separated/);
});

test('a bad list is refused in one line, without echoing a password', async (t) => {
  const token = { PADDOCK_TOKEN: api.adminToken };
  const ftp = await paddock(['whoami'], { PADDOCK_URL: `${api.url},ftp://b:21`, ...token });
  t.is(ftp.code, 1);
  t.is(ftp.stderr, 'paddock: the Paddock URL must be http or https, not ftp: (configuration)\n');
  const secret = await paddock(['whoami'], { PADDOCK_URL: `${api.url},http://user:hunter2@[bad`, ...token });
  t.is(secret.code, 1);
  t.regex(
    secret.stderr,
    /^paddock: not a URL: \(PADDOCK_URL is like http:\/\/127\.0\.0\.1:7300, or several: http:\/\/a:7300,http:\/\/b:7300\) \(configuration\)\n$/,
  );
  t.false(secret.stderr.includes('hunter2'));
});
