// Repository rules, driven the way a hostile user would: over HTTP against a real API that runs
// real git, and through a runner host's checkout. Each refusal has its stable code; another user's
// local repository, remote helpers (ext::, fd::), option smuggling, `..` and symlinks out of a
// local root, HTTP redirects, a port that never answers, a huge ref listing and many resolutions at
// once are all refused or cut; the answers never say whether an internal host:port is open and
// never carry a password; and another user's ordinary job goes through meanwhile.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import test from 'ava';
import { parseConfig } from '../../api/config.js';
import { checkout, CheckoutError } from '../../runner-host/checkout.js';
import { checkRepository, defaultRepositoryRules, displayRepository } from '../../protocol/repository.js';
import { startApi, testConfig, type JsonResponse, type TestApi } from '../helpers/api.js';
import { freePort } from '../helpers/ports.js';

let api: TestApi;
let root: string;
const tokens: Record<string, string> = {};
const servers: { close(): void }[] = [];

const git = (dir: string, ...args: string[]) =>
  execFileSync('git', ['-C', dir, '-c', 'user.name=ci', '-c', 'user.email=ci@example.com', ...args], { encoding: 'utf8' }).trim();

/** A repository with one commit on main holding ci/ok.sh. */
function makeRepository(dir: string): string {
  mkdirSync(path.join(dir, 'ci'), { recursive: true });
  writeFileSync(path.join(dir, 'ci', 'ok.sh'), '#!/bin/sh\necho ok\n', { mode: 0o755 });
  execFileSync('git', ['init', '-q', '-b', 'main', dir]);
  git(dir, 'add', '.');
  git(dir, 'commit', '-q', '-m', 'ok');
  return git(dir, 'rev-parse', 'HEAD');
}

const addJob = (user: string, repository: string, ref = 'main', name = `job-${Math.random().toString(36).slice(2, 10)}`) =>
  api.http(tokens[user]).post('v1/jobs', { json: { name, repository, ref, script: 'ci/ok.sh' } });

const code = (response: JsonResponse) => (response.body as { code?: string }).code;
const message = (response: JsonResponse) => (response.body as { message?: string }).message ?? '';

/** git processes whose command line names `needle`. */
function gitProcesses(needle: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const command = readFileSync(`/proc/${entry}/cmdline`, 'utf8');
      if (command.startsWith('git') && command.includes(needle)) pids.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

/** A TCP server that takes connections and never says a word. */
async function blackHole(): Promise<number> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    socket.on('error', () => undefined);
    sockets.add(socket);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  servers.push({ close: () => (sockets.forEach((socket) => socket.destroy()), server.close()) });
  return (server.address() as net.AddressInfo).port;
}

/** A TCP server that answers anything with a line of text and hangs up (not a git server). */
async function chatterbox(): Promise<number> {
  const server = net.createServer((socket) => {
    socket.on('error', () => undefined);
    socket.end('SSH-2.0-not-really\r\nhello\r\n');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  servers.push(server);
  return (server.address() as net.AddressInfo).port;
}

test.before(async () => {
  root = mkdtempSync(path.join(os.tmpdir(), 'paddock-repositories-'));
  for (const user of ['alice', 'bob']) mkdirSync(path.join(root, 'users', user), { recursive: true });
  mkdirSync(path.join(root, 'shared'));
  api = await startApi(
    testConfig(
      [
        'repositories:',
        '  transports: [https, ssh, http]',
        // Each user's own folder, and one shared folder.
        `  localRoots: [${JSON.stringify(path.join(root, 'users', '{user}'))}, ${JSON.stringify(path.join(root, 'shared'))}]`,
        '  timeout: 10s', // long enough for git to list 60,000 refs on a busy machine
        '  maxListing: 64KiB',
        '  concurrency: 8',
        '  perUser: 2',
        '  queuePerUser: 1',
      ].join('\n'),
    ),
  );
  for (const user of ['alice', 'bob', 'carol', 'dave', 'erin', 'frank']) {
    tokens[user] = ((await api.http().post('v1/tokens', { json: { name: user, role: 'user' } })).body as { token: string }).token;
  }
  makeRepository(path.join(root, 'users', 'alice', 'private.git'));
  makeRepository(path.join(root, 'users', 'bob', 'mine.git'));
});

test.after.always(async () => {
  for (const server of servers) server.close();
  await api?.close();
  if (root) rmSync(root, { recursive: true, force: true });
});

test.serial('the defaults allow https and ssh only, and no local path', (t) => {
  const config = parseConfig('');
  t.deepEqual(config.repositories.transports, ['https', 'ssh']);
  t.deepEqual(config.repositories.localRoots, []);
  t.deepEqual(defaultRepositoryRules, { transports: ['https', 'ssh'], localRoots: [] });
  t.throws(() => parseConfig('repositories: { localRoots: [relative/path] }'), { message: /localRoots\[0\]: a local root is an absolute path/ });
  t.throws(() => parseConfig('repositories: { transports: [ext] }'), { message: /repositories\.transports\[0\]/ });
});

test.serial("a user cannot name another user's local repository, by path, file://, .., a symlink, a .git file or alternates", async (t) => {
  const alicePath = path.join(root, 'users', 'alice', 'private.git');
  t.is((await addJob('alice', alicePath)).statusCode, 201, 'the owner may');
  t.is((await addJob('alice', `file://${alicePath}`)).statusCode, 201, 'the owner may, as a file:// URL too');
  const bobDir = path.join(root, 'users', 'bob');
  symlinkSync(alicePath, path.join(bobDir, 'link.git'));
  // A repository of bob's own that points git at alice's objects or at her repository.
  mkdirSync(path.join(bobDir, 'gitfile'));
  writeFileSync(path.join(bobDir, 'gitfile', '.git'), `gitdir: ${path.join(alicePath, '.git')}\n`);
  makeRepository(path.join(bobDir, 'borrow.git'));
  writeFileSync(path.join(bobDir, 'borrow.git', '.git', 'objects', 'info', 'alternates'), `${path.join(alicePath, '.git', 'objects')}\n`);
  const attempts = [
    alicePath,
    `file://${alicePath}`,
    `file://localhost${alicePath}`,
    path.join(bobDir, '..', 'alice', 'private.git'),
    `${bobDir}/../alice/private.git`,
    path.join(bobDir, 'link.git'),
    path.join(bobDir, 'gitfile'),
    path.join(bobDir, 'borrow.git'),
    '/etc',
    'users/alice/private.git',
  ];
  for (const repository of attempts) {
    const answer = await addJob('bob', repository);
    t.is(answer.statusCode, 422, repository);
    t.is(code(answer), 'repository_refused', `${repository}: ${message(answer)}`);
  }
  const jobs = (await api.http(tokens.bob).get('v1/jobs')).body as unknown[];
  t.deepEqual(jobs, [], 'bob has no job');
  t.is((await addJob('bob', path.join(bobDir, 'mine.git'))).statusCode, 201, "bob's own repository still works");
});

test.serial('remote helpers, option smuggling, odd characters and transports not allowed are refused before git runs', async (t) => {
  const planted = path.join(root, 'planted');
  const refused: [string, string][] = [
    [`ext::sh -c touch% ${planted}`, 'repository_refused'],
    ['fd::0', 'repository_refused'],
    ['fd::3,4', 'repository_refused'],
    [`ssh://-oProxyCommand=touch%20${planted}/x`, 'repository_refused'],
    [`ssh://-oProxyCommand=touch%20${planted}@host/x`, 'repository_refused'],
    [`-oProxyCommand=touch ${planted}:x`, 'invalid_request'],
    [`--upload-pack=touch ${planted}`, 'invalid_request'],
    ['git://127.0.0.1/x.git', 'repository_refused'],
    ['ftp://127.0.0.1/x.git', 'repository_refused'],
    ['https://exa mple.com/x.git', 'repository_refused'],
    ['https://example.com:99999/x.git', 'repository_refused'],
    ['alice:secret@example.com:x.git', 'repository_refused'],
    ['https://example.com/x.git\u0085', 'invalid_request'],
    ['https://example.com/x.git\nhttps://other/y', 'invalid_request'],
  ];
  for (const [repository, expected] of refused) {
    const answer = await addJob('carol', repository);
    t.true(answer.statusCode === 400 || answer.statusCode === 422, `${repository}: ${answer.statusCode}`);
    t.is(code(answer), expected, `${JSON.stringify(repository)}: ${message(answer)}`);
  }
  const badRef = await addJob('carol', path.join(root, 'shared', 'none.git'), `--upload-pack=touch ${planted}`);
  t.is(badRef.statusCode, 400);
  t.false(existsSync(planted), 'no command ran');
  t.false(JSON.stringify((await addJob('carol', 'alice:secret@example.com:x.git')).body).includes('secret'));
});

test.serial('a closed port, a host that never answers and a server that is not git get the same code and message', async (t) => {
  const closed = await freePort();
  const silent = await blackHole();
  const talker = await chatterbox();
  const answers = await Promise.all(
    [closed, silent, talker].map(async (port, index) => {
      const url = `https://127.0.0.1:${port}/group/project.git`;
      const answer = await addJob(['carol', 'dave', 'erin'][index], url);
      return { status: answer.statusCode, code: code(answer), message: message(answer).replace(url, 'URL') };
    }),
  );
  t.is(answers[0].status, 422);
  t.is(answers[0].code, 'repository_not_found');
  t.deepEqual(answers[1], answers[0], 'a port that never answers looks like a closed one');
  t.deepEqual(answers[2], answers[0], 'a port with some other server looks like a closed one');
  t.false(/connection|timed out|tls|ssl|port [0-9]/i.test(answers[0].message), answers[0].message);
  t.deepEqual(gitProcesses(`127.0.0.1:${silent}`), [], 'git was stopped at the time cap');
  // git's own words went to the operator's log.
  t.true(
    api.logs.some((line) => line.includes(`127.0.0.1:${silent}`) && line.includes('stopped')),
    api.logs.join('\n'),
  );
});

test.serial('an HTTP redirect is not followed, whatever it points at', async (t) => {
  let targetHits = 0;
  const target = http.createServer((request, response) => {
    targetHits += 1;
    response.end();
  });
  await new Promise<void>((resolve) => target.listen(0, '127.0.0.1', resolve));
  servers.push(target);
  const targetPort = (target.address() as net.AddressInfo).port;
  for (const location of [`http://127.0.0.1:${targetPort}/internal.git`, `file://${path.join(root, 'users', 'alice', 'private.git')}`]) {
    const redirector = http.createServer((request, response) => {
      response.writeHead(302, { location: `${location}${request.url?.replace(/^\/[^?]*?(\/info\/refs)/, '$1') ?? ''}` });
      response.end();
    });
    await new Promise<void>((resolve) => redirector.listen(0, '127.0.0.1', resolve));
    servers.push(redirector);
    const answer = await addJob('erin', `http://127.0.0.1:${(redirector.address() as net.AddressInfo).port}/project.git`);
    t.is(code(answer), 'repository_not_found', location);
  }
  t.is(targetHits, 0, 'the redirect target was never asked');
});

test.serial("a huge ref listing is cut at the cap with git stopped; five at once leave the API's memory as it was", async (t) => {
  const big = path.join(root, 'shared', 'big.git');
  const commit = makeRepository(big);
  // 60,000 tags whose names end in /main: `ls-remote big main` lists them all (4 MB of output).
  const lines = Array.from({ length: 60_000 }, (_, index) => `${commit} refs/tags/t${String(index).padStart(6, '0')}/main`);
  writeFileSync(path.join(big, '.git', 'packed-refs'), `# pack-refs with: peeled fully-peeled sorted \n${lines.join('\n')}\n`);
  t.is((await addJob('frank', big, 'refs/heads/main')).statusCode, 201, 'a full ref name is read at once');
  const rssBefore = process.memoryUsage().rss;
  const answers = await Promise.all(['alice', 'bob', 'carol', 'dave', 'erin'].map((user) => addJob(user, big, 'main')));
  const rssAfter = process.memoryUsage().rss;
  t.log(`five huge listings at once: RSS of the test process (API inside) ${Math.round(rssBefore / 2 ** 20)} MiB → ${Math.round(rssAfter / 2 ** 20)} MiB`);
  for (const answer of answers) {
    t.is(answer.statusCode, 422);
    t.is(code(answer), 'repository_listing_too_large', message(answer));
  }
  t.deepEqual(gitProcesses(big), [], 'no git left running');
});

test.serial("one user's slow resolutions wait their turn, then get 429, while another user's job goes through", async (t) => {
  const silent = await blackHole();
  const slowUrl = (n: number) => `https://127.0.0.1:${silent}/slow-${n}.git`;
  const first = [1, 2].map((n) => addJob('frank', slowUrl(n)));
  // Both of frank's turns are taken once git runs for both.
  for (let attempt = 0; gitProcesses(`/slow-`).length < 2 && attempt < 300; attempt++) await new Promise((resolve) => setTimeout(resolve, 100));
  // One more waits for a turn (queuePerUser: 1); the next is refused at once.
  const later = [3, 4].map((n) => addJob('frank', slowUrl(n)));
  const other = await addJob('bob', path.join(root, 'users', 'bob', 'mine.git'));
  t.is(other.statusCode, 201, 'another user is not held up');
  const answers = await Promise.all([...first, ...later]);
  t.deepEqual(answers.slice(0, 2).map(code), ['repository_not_found', 'repository_not_found']);
  const refused = answers.slice(2).filter((answer) => answer.statusCode === 429);
  const waited = answers.slice(2).filter((answer) => answer.statusCode !== 429);
  t.is(refused.length, 1);
  t.is(code(refused[0]), 'resolutions_busy');
  t.deepEqual((refused[0].body as { details?: unknown }).details, { limit: 1, scope: 'user' });
  t.is(code(waited[0]), 'repository_not_found', 'the one that waited ran when a turn came');
  t.is((await addJob('frank', path.join(root, 'shared', 'big.git'), 'refs/heads/main')).statusCode, 201, 'the turns are given back');
});

test.serial('no password in any answer or log: user:p@ss@host is masked whole', async (t) => {
  const port = await freePort();
  const secret = 'p@ss-w0rd@x';
  const answer = await addJob('erin', `https://ci:${secret}@127.0.0.1:${port}/group/project.git`);
  t.is(code(answer), 'repository_not_found');
  const text = JSON.stringify(answer.body);
  t.false(text.includes('w0rd') || text.includes('ss-') || text.includes('ci:'), text);
  t.is((answer.body as { details: { repository: string } }).details.repository, `https://***@127.0.0.1:${port}/group/project.git`);
  t.false(api.logs.join('\n').includes('w0rd'));
  t.is(displayRepository(`cannot read ssh://git:p@ss@host:22/x and https://a:b@c/d`), 'cannot read ssh://***@host:22/x and https://***@c/d');
});

test.serial('a runner host refuses to clone what the rules refuse, and follows no symlink out of a local root', async (t) => {
  const rules = { transports: ['https' as const], localRoots: [path.join(root, 'users', 'bob')] };
  const alicePath = path.join(root, 'users', 'alice', 'private.git');
  const commit = git(alicePath, 'rev-parse', 'HEAD');
  for (const repository of [alicePath, `file://${alicePath}`, path.join(root, 'users', 'bob', 'link.git'), 'ext::sh -c id', 'http://127.0.0.1:9/x.git']) {
    const dir = path.join(root, `checkout-${Math.random().toString(36).slice(2)}`);
    const error = await t.throwsAsync(checkout({ repository, repositoryRules: rules, commit, script: 'ci/ok.sh' }, dir), { instanceOf: CheckoutError });
    t.is(error?.code, 'repository_refused', repository);
    t.false(existsSync(dir), 'nothing was cloned');
  }
  await t.throwsAsync(checkRepository('https://host/x.git', { transports: ['ssh'], localRoots: [] }), { message: /the https transport is not allowed/ });
});
