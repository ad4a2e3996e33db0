// Leadership on PostgreSQL (api/leader.ts): a leader whose database session is cut stops at once
// (it could not commit again anyway) and the follower leads with everything acknowledged; a
// follower answers what it is sent, hostile targets included, without ever falling over.
import { execFile, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import test from 'ava';
import { Paddock } from '../../client/index.js';
import { freePort } from '../helpers/ports.js';
import { postgresDatabase, postgresSocketUrl, postgresSql } from '../helpers/postgres.js';
import { killHard, startServerProcess } from '../helpers/server.js';
import { waitFor } from '../helpers/wait.js';

const lab = `agent: { enabled: false }\nagents: { heartbeatTimeout: 1d }\nmachines:\n${['m1', 'm2']
  .map(
    (name, index) => `  - { name: ${name}, kind: static, labels: { type: t }, settings: { address: 127.0.0.${index + 2}, user: ci, adminKey: /nonexistent } }`,
  )
  .join('\n')}\n`;

/** Two servers on one database, A started first (so it leads); `urls` says how each names the database. */
async function twoServers(t: import('ava').ExecutionContext, urls = (database: string) => [database, database]) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'paddock-leader-'));
  const database = postgresDatabase(dir);
  const servers: { url: string; metrics: string; child: ChildProcess; output: () => string }[] = [];
  for (const [index, name] of ['a', 'b'].entries()) {
    const port = await freePort();
    const metricsPort = await freePort();
    const file = path.join(dir, `${name}.yaml`);
    writeFileSync(
      file,
      `listen: 127.0.0.1:${port}\nmetrics: { listen: 127.0.0.1:${metricsPort} }\ndataDir: ${path.join(dir, 'data')}\ndatabase: '${urls(database)[index]}'\n${lab}`,
    );
    let output = '';
    const url = `http://127.0.0.1:${port}`;
    const child = await startServerProcess(['--config', file], url, (chunk) => (output += chunk));
    servers.push({ url, metrics: `http://127.0.0.1:${metricsPort}/metrics`, child, output: () => output });
  }
  t.teardown(async () => {
    for (const server of servers) await killHard(server.child);
    rmSync(dir, { recursive: true, force: true });
  });
  await waitFor(async () => /following the leader/.test(servers[1].output()), 60_000, 'b follows a');
  const token = readFileSync(path.join(dir, 'data', 'admin-token'), 'utf8').trim();
  return { a: servers[0], b: servers[1], token, database };
}

/** paddock_api_leader from a server's metrics. */
const leaderGauge = async (url: string) => /^paddock_api_leader (\d)$/m.exec(await (await fetch(url)).text())?.[1];

const healthOf = async (url: string) => (await (await fetch(`${url}/healthz`)).json()) as { role: string; leader?: string | null; database: string };

test('a leader whose database session is cut stops with status 1; the follower leads with what was acknowledged', async (t) => {
  t.timeout(300_000);
  const { a, b, token, database } = await twoServers(t);
  const paddock = new Paddock({ url: a.url, token });
  const kept = await paddock.reserve({ members: [{ role: 'main', spec: 't' }] }, { renew: false });
  t.is(kept.state, 'allocated');

  const exited = new Promise<number | null>((resolve) => a.child.once('exit', (code) => resolve(code)));
  // The session that holds the advisory lock is the leader's store session: cut it, as a network
  // partition or a database restart would.
  const cut = postgresSql(
    `SELECT count(pg_terminate_backend(pid)) FROM pg_locks WHERE locktype = 'advisory' AND objid = ${7300_0002} AND granted AND database = (SELECT oid FROM pg_database WHERE datname = '${new URL(database).pathname.slice(1)}')`,
  );
  t.is(cut.trim(), '1', 'one session held leadership');
  t.is(await exited, 1, 'the old leader stops rather than go on without its lock');
  t.regex(a.output(), /leadership lost/);

  await waitFor(async () => (await healthOf(b.url)).role === 'leader', 120_000, 'b leads');
  const onB = new Paddock({ url: b.url, token });
  t.is((await onB.reservation(kept.id)).state, 'allocated', 'the acknowledged reservation is there');
  t.is((await onB.machine('m1')).reservationId ?? (await onB.machine('m2')).reservationId, kept.id);
  t.is(await leaderGauge(b.metrics), '1', "b's metrics say it leads now");
});

test('a follower redirects to the leader, says who leads, and answers hostile targets without falling over', async (t) => {
  t.timeout(300_000);
  const { a, b, token } = await twoServers(t);
  t.like(await healthOf(b.url), { role: 'follower', leader: a.url });
  t.like(await healthOf(a.url), { role: 'leader' });
  const redirected = await fetch(`${b.url}/v1/reservations?all=1`, { redirect: 'manual', headers: { authorization: `Bearer ${token}` } });
  t.is(redirected.status, 307);
  t.is(redirected.headers.get('location'), `${a.url}/v1/reservations?all=1`);
  t.is(((await redirected.json()) as { code: string }).code, 'not_leader');
  t.is((await fetch(`${b.url}/healthz/leader`)).status, 503);
  t.is((await fetch(`${a.url}/healthz/leader`)).status, 200);
  // Prometheus scrapes both: the follower's metrics say it follows.
  t.is(await leaderGauge(b.metrics), '0');
  t.is(await leaderGauge(a.metrics), '1');

  // Raw requests a client library would never send: bytes no header can carry, an absolute-form
  // target, a WebSocket upgrade. Each gets an answer; the follower keeps serving.
  const raw = (request: string) =>
    new Promise<string>((resolve, reject) => {
      const socket = net.connect(Number(new URL(b.url).port), '127.0.0.1', () => socket.end(request));
      let answer = '';
      socket.on('data', (chunk) => (answer += chunk.toString('latin1')));
      socket.on('end', () => resolve(answer));
      socket.on('error', reject);
    });
  t.regex(await raw('GET /v1/\xe9t\xe9 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'), /^HTTP\/1\.1 400/);
  t.regex(await raw('GET http://evil.example/v1/machines HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'), /^HTTP\/1\.1 400/);
  const upgrade = await raw('GET /v1/reservations/r-1/console/stream HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n');
  t.regex(upgrade, /^HTTP\/1\.1 307[^]*Location: http:\/\/127\.0\.0\.1:\d+\/v1\/reservations\/r-1\/console\/stream/);
  t.is((await healthOf(b.url).catch(() => ({ role: b.output().slice(-3000) }))).role, 'follower', 'still up');
});

test('paddock servers shows each server of the list on its own, and exits 1 when the list does not have one leader', async (t) => {
  t.timeout(300_000);
  const { a, b } = await twoServers(t);
  const dead = `http://127.0.0.1:${await freePort()}`;
  // Something else on a port of the list: it claims to lead, with terminal escapes in its words.
  let claim: Record<string, unknown> = { ok: true, role: 'follower', leader: 'javascript:alert(1)', version: '\u001b]0;owned\u0007' };
  let status = 200;
  const other = http.createServer((_request, response) => response.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(claim)));
  await new Promise<void>((resolve) => other.listen(0, '127.0.0.1', resolve));
  t.teardown(() => other.close());
  const impostor = `http://127.0.0.1:${(other.address() as net.AddressInfo).port}`;
  const run = (list: string[], json = false) => {
    const env: NodeJS.ProcessEnv = { ...process.env, PADDOCK_URL: list.join(',') };
    delete env.PADDOCK_TOKEN; // /healthz needs none
    return new Promise<{ code: number; stdout: string }>((resolve) =>
      execFile(process.execPath, [path.resolve('bin/paddock.js'), 'servers', ...(json ? ['--json'] : [])], { env, timeout: 120_000 }, (error, stdout) =>
        resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stdout }),
      ),
    );
  };

  const shown = await run([b.url, dead, a.url, impostor]);
  t.is(shown.code, 0, shown.stdout);
  const line = (url: string) => shown.stdout.split('\n').find((each) => each.startsWith(`${url} `)) ?? '';
  t.regex(line(b.url), new RegExp(`follower\\s+postgres\\s+\\S+\\s+leader ${a.url}`));
  t.regex(line(dead), /unreachable\s+-\s+-\s+ECONNREFUSED/);
  t.regex(line(a.url), /leader\s+postgres/);
  t.regex(line(impostor), /follower .*names a leader that is not a URL: javascript:alert\(1\)/);
  t.false(/\p{Cc}/u.test(shown.stdout.replace(/\n/g, '')), 'no control character reaches the terminal');
  t.regex(shown.stdout, new RegExp(`^${a.url} leads$`, 'm'));

  claim = { ok: true, role: 'follower', leader: 'http://paddock-elsewhere:7300/' };
  const elsewhere = await run([a.url, impostor]);
  t.is(elsewhere.code, 0, 'one leads');
  t.regex(elsewhere.stdout, /leads; a follower names http:\/\/paddock-elsewhere:7300 \(another address of it, or another Paddock\)/);

  claim = { ok: true, role: 'leader', database: 'sqlite' };
  const two = await run([a.url, impostor], true);
  t.is(two.code, 1, 'two leaders: not one Paddock');
  const verdict = JSON.parse(two.stdout) as { ok: boolean; message: string; servers: { role: string }[] };
  t.false(verdict.ok);
  t.deepEqual(
    verdict.servers.map((server) => server.role),
    ['leader', 'leader'],
  );
  t.regex(verdict.message, /2 servers lead .*never do/);

  claim = { ok: true, version: '0.0.9', database: 'sqlite' }; // a Paddock from before roles: the only server, so it leads
  const older = await run([impostor], true);
  t.is(older.code, 0, older.stdout);
  t.like((JSON.parse(older.stdout) as { servers: unknown[] }).servers[0], { role: 'leader', version: '0.0.9' });

  status = 503;
  claim = { code: 'store_failing', message: 'the database refuses writes; changes are refused until a commit succeeds' };
  const failing = await run([impostor], true);
  t.is(failing.code, 1);
  t.like((JSON.parse(failing.stdout) as { servers: unknown[] }).servers[0], {
    role: 'failing',
    reason: 'the database refuses writes; changes are refused until a commit succeeds (store_failing)',
  });

  const none = await run([b.url.replace(/:\d+$/, `:${new URL(dead).port}`)]);
  t.is(none.code, 1);
  t.regex(none.stdout, /^no server leads$/m);
});

test('a database named by its Unix socket directory, in the host or as ?host=: one server leads on it, the other follows', async (t) => {
  const { a, b, token, database } = await twoServers(t, (database) => [postgresSocketUrl(database, 'encoded'), postgresSocketUrl(database, 'query')]);
  t.is((await healthOf(a.url)).role, 'leader');
  t.is((await healthOf(b.url)).role, 'follower');
  const made = await new Paddock({ url: b.url, token }).reserve({ members: [{ role: 'main', spec: 't' }] }, { renew: false });
  t.is(made.state, 'allocated', 'the follower sent it to the leader, which stored it');
  t.is((await new Paddock({ url: a.url, token }).reservation(made.id)).state, 'allocated');
  const name = new URL(database).pathname.slice(1);
  const [socket, tcp, named] = postgresSql(
    `SELECT count(*) FILTER (WHERE client_addr IS NULL), count(*) FILTER (WHERE client_addr IS NOT NULL), count(*) FILTER (WHERE application_name = 'paddock-b') FROM pg_stat_activity WHERE datname = '${name}'`,
  )
    .trim()
    .split('|')
    .map(Number);
  t.true(socket >= 2, `both servers' sessions came through the socket (${socket})`);
  t.is(tcp, 0, 'none through TCP');
  t.true(named >= 1, "the URL's other parameters are the client's too (application_name)");
});

test('a database that cannot be reached stops the start with a message that names it without its password', async (t) => {
  const port = await freePort();
  const result = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
    const child = execFile(
      process.execPath,
      [
        path.resolve('bin/paddock.js'),
        'serve',
        '--listen',
        `127.0.0.1:${port}`,
        '--data',
        mkdtempSync(path.join(os.tmpdir(), 'paddock-nodb-')),
        '--database',
        `postgres://paddock:hunter2-secret@127.0.0.1:${port}/paddock`,
      ],
      { timeout: 120_000 },
      (error, _stdout, stderr) => resolve({ code: error ? ((error as { code?: number }).code ?? null) : 0, stderr }),
    );
    child.stdin?.end();
  });
  t.is(result.code, 1);
  t.regex(result.stderr, new RegExp(`cannot open the database postgres://paddock@127\\.0\\.0\\.1:${port}/paddock: .*ECONNREFUSED`));
  t.false(result.stderr.includes('hunter2'), 'the password is never printed');
});
