// Tunnels through the API to machines reached `via: paddock`: the client library's run and copies,
// `paddock tunnel` as ssh's ProxyCommand, `paddock ssh-config` with scp and ssh, and `paddock ssh`,
// all with the pinned host key; then what a hostile user, another lab host's agent or a stale
// stream would try. The machines are real sshd hosts served by the embedded agent, which opens each
// tunnel by dialling out to the API.
import { execFile, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import test from 'ava';
import WebSocket from 'ws';
import { Paddock, type Reservation } from '../../client/index.js';
import { startApi, staticMachinesYaml, testConfig, type TestApi } from '../helpers/api.js';
import { startSshd, type TestSshd } from '../helpers/sshd.js';
import { waitFor } from '../helpers/wait.js';

const bin = path.resolve('bin/paddock.js');
let api: TestApi;
let hosts: TestSshd[];
let scratch: string;
const tokens: Record<string, string> = {};

test.before(async () => {
  hosts = await Promise.all([startSshd(), startSshd()]);
  scratch = mkdtempSync(path.join(os.tmpdir(), 'paddock-tunnel-test-'));
  const machines = staticMachinesYaml(
    hosts.map((host, index) => ({
      name: `host-${index + 1}`,
      port: host.port,
      adminKeyPath: host.adminKey.path,
      authorizedKeysFile: host.authorizedKeysFile,
      labels: { type: 'static-host', arch: 'x86_64', slot: String(index + 1) },
      ...(index === 1 ? { access: 'direct' as const } : {}),
    })),
  );
  // Every machine of the embedded lab host is reached through Paddock, but host-2 says otherwise.
  api = await startApi(testConfig(`labHosts: { local: { access: paddock } }\n${machines}`));
  for (const [name, role] of [
    ['alice', 'user'],
    ['bob', 'user'],
    ['lab-b', 'agent'],
  ])
    tokens[name] = ((await api.http().post('v1/tokens', { json: { name, role } })).body as { token: string }).token;
});

test.after.always(async () => {
  await api?.close();
  await Promise.all((hosts ?? []).map((host) => host.stop()));
  rmSync(scratch, { recursive: true, force: true });
});

const as = (name: string) => new Paddock({ url: api.url, token: tokens[name] });

function paddock(args: string[], token: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [bin, ...args],
      { env: { ...process.env, PADDOCK_URL: api.url, PADDOCK_TOKEN: token }, timeout: 300_000 },
      (error, stdout, stderr) => resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

async function reserveSlot(user: string, slot: number): Promise<Reservation> {
  const reservation = await as(user).reserve({ members: [{ role: 'host', spec: `slot=${slot}` }], lease: '10m' });
  return reservation.ready({ timeout: 300 });
}

/** A raw WebSocket upgrade to the API: the status of a refusal and its body, or the open socket. */
function upgrade(pathAndQuery: string, token?: string): Promise<{ status: number; body: string; socket?: WebSocket }> {
  return new Promise((resolve) => {
    const socket = new WebSocket(`${api.url.replace('http', 'ws')}/${pathAndQuery}`, token ? { headers: { authorization: `Bearer ${token}` } } : {});
    socket.once('open', () => resolve({ status: 101, body: '', socket }));
    socket.once('unexpected-response', (_request, response) => {
      let body = '';
      response.on('data', (chunk: Buffer) => (body += chunk.toString()));
      response.on('end', () => resolve({ status: response.statusCode ?? 0, body }));
    });
    socket.once('error', () => undefined);
  });
}

const sha256 = (file: string) => createHash('sha256').update(readFileSync(file)).digest('hex');

test.serial('the owner reaches a via-paddock machine through the tunnel: run, copies, paddock tunnel, ssh-config with ssh and scp, paddock ssh', async (t) => {
  const reservation = await reserveSlot('alice', 1);
  const credentials = await reservation.credentials();
  t.deepEqual(
    credentials.machines.map((machine) => [machine.machine, machine.via]),
    [['host-1', 'paddock']],
  );

  const ran = await reservation.run('host', 'echo through-$((40+2))');
  t.is(ran.code, 0, ran.stderr);
  t.is(ran.stdout, 'through-42\n');
  const local = path.join(scratch, 'payload.bin');
  writeFileSync(local, randomBytes(3 * 1024 * 1024 + 17));
  await reservation.copyTo('host', local, 'tunnel-payload.bin');
  const back = path.join(scratch, 'back.bin');
  await reservation.copyFrom('host', 'tunnel-payload.bin', back);
  t.is(sha256(back), sha256(local), 'the file came back whole');

  // `paddock tunnel` on stdin/stdout: the machine's SSH server greets through it.
  const tunnel = spawn(process.execPath, [bin, 'tunnel', reservation.id, 'host', '22'], {
    env: { ...process.env, PADDOCK_URL: api.url, PADDOCK_TOKEN: tokens.alice },
  });
  let greeting = '';
  tunnel.stdout.on('data', (chunk: Buffer) => (greeting += chunk.toString('latin1')));
  await waitFor(async () => greeting.includes('\n'), 60_000, "the SSH server's greeting");
  t.regex(greeting, /^SSH-2\.0-OpenSSH/);
  tunnel.stdin.end();
  t.is(await new Promise((resolve) => tunnel.once('exit', resolve)), 0, 'the tunnel ends with its stdin');

  // ssh-config: real ssh and scp through ProxyCommand, checking the pinned host key.
  const configDir = path.join(scratch, 'ssh');
  const config = await paddock(['ssh-config', reservation.id, '--dir', configDir], tokens.alice);
  t.is(config.code, 0, config.stderr);
  t.regex(config.stdout, /ProxyCommand .*tunnel/);
  t.false(config.stdout.includes('PRIVATE KEY'), 'the key goes to a file, not the output');
  const configFile = path.join(scratch, 'ssh_config');
  writeFileSync(configFile, config.stdout);
  const alias = `paddock-${reservation.id}-host.0`;
  const env = { ...process.env, PADDOCK_URL: api.url, PADDOCK_TOKEN: tokens.alice };
  const ssh = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) =>
    execFile('ssh', ['-F', configFile, '-o', 'BatchMode=yes', alias, 'echo ssh-$((6*7))'], { env, timeout: 120_000 }, (error, stdout, stderr) =>
      resolve({ code: error ? 1 : 0, stdout, stderr }),
    ),
  );
  t.is(ssh.code, 0, ssh.stderr);
  t.is(ssh.stdout, 'ssh-42\n');
  const scpBack = path.join(scratch, 'scp-back.bin');
  const scp = await new Promise<number>((resolve) =>
    execFile('scp', ['-F', configFile, '-o', 'BatchMode=yes', `${alias}:tunnel-payload.bin`, scpBack], { env, timeout: 120_000 }, (error) =>
      resolve(error ? 1 : 0),
    ),
  );
  t.is(scp, 0);
  t.is(sha256(scpBack), sha256(local));
  // A host key other than the pinned one is refused through the tunnel as it is directly.
  const knownHosts = path.join(configDir, 'known_hosts');
  writeFileSync(knownHosts, readFileSync(knownHosts, 'utf8').replace(/ssh-ed25519 \S+/, `ssh-ed25519 ${hosts[1].hostKey.split(' ')[1]}`));
  const impostor = await new Promise<{ code: number; stderr: string }>((resolve) =>
    execFile('ssh', ['-F', configFile, '-o', 'BatchMode=yes', alias, 'true'], { env, timeout: 120_000 }, (error, _stdout, stderr) =>
      resolve({ code: error ? 1 : 0, stderr }),
    ),
  );
  t.is(impostor.code, 1);
  t.regex(impostor.stderr, /host key|HOST IDENTIFICATION/i);

  const viaSsh = await paddock(['ssh', reservation.id, 'host', '--', 'echo', 'paddock-ssh-ok'], tokens.alice);
  t.is(viaSsh.code, 0, viaSsh.stderr);
  t.is(viaSsh.stdout, 'paddock-ssh-ok\n');
  const scpBackViaPaddock = path.join(scratch, 'paddock-scp-back.bin');
  const viaScp = await paddock(['scp', `${reservation.id}:host:tunnel-payload.bin`, scpBackViaPaddock], tokens.alice);
  t.is(viaScp.code, 0, viaScp.stderr);
  t.is(sha256(scpBackViaPaddock), sha256(local), 'paddock scp goes through the tunnel too');

  // A tunnel open when the reservation ends is closed with it.
  const stream = await reservation.tunnel('host-1', 'ssh');
  const ended = new Promise<string>((resolve) => {
    stream.once('end', () => resolve('end'));
    stream.once('close', () => resolve('close'));
  });
  stream.resume();
  await reservation.release();
  t.regex(await ended, /end|close/, 'the stream ended with the reservation');
});

test.serial('paddock run reaches a via-paddock machine through the tunnel, and --local gets an ssh_config that does', async (t) => {
  const run = await paddock(['run', 'slot=1', '--', 'sh', '-c', 'echo "run-$((6*7))"'], tokens.alice);
  t.is(run.code, 0, run.stderr);
  t.is(run.stdout, 'run-42\n');
  const local = await paddock(
    ['run', '--local', 'slot=1', '--', 'ssh -F "$PADDOCK_SSH_CONFIG" "paddock-$PADDOCK_RESERVATION-main.0" echo local-$((6*7))'],
    tokens.alice,
  );
  t.is(local.code, 0, local.stderr);
  t.is(local.stdout, 'local-42\n');
});

test.serial('tunnels refuse other users, admins, ports a machine does not offer, other machines, ended reservations, and other lab hosts', async (t) => {
  const reservation = await reserveSlot('alice', 1);
  const direct = await reserveSlot('alice', 2);
  t.is((await direct.credentials()).machines[0].via, 'direct', "host-2's own access wins over its lab host's");
  const at = (query: string) => `v1/reservations/${reservation.id}/tunnel${query}`;
  const refusals: [string, string | undefined, number, string][] = [
    [at('?machine=host-1'), tokens.bob, 403, 'forbidden'],
    [at('?machine=host-1'), api.adminToken, 403, 'forbidden'],
    [at('?machine=host-1'), undefined, 401, 'unauthorized'],
    [at('?machine=host-1&port=25'), tokens.alice, 400, 'port_not_allowed'],
    [at('?machine=host-1&port=console'), tokens.alice, 400, 'port_not_allowed'],
    [at('?machine=host-2'), tokens.alice, 404, 'not_found'],
    [at('?machine=..%2Fhost-1'), tokens.alice, 400, 'invalid_parameter'],
    [at('?machine=host-1&token=x'), tokens.alice, 400, 'invalid_parameter'],
    [at('?machine=host-1&host=10.0.0.1'), tokens.alice, 400, 'invalid_parameter'],
    ['v1/reservations/r-000000000000/tunnel', tokens.alice, 404, 'not_found'],
    [`v1/agent/tunnels/t-${'0'.repeat(32)}`, tokens['lab-b'], 404, 'not_found'],
    [`v1/agent/tunnels/t-${'0'.repeat(32)}`, tokens.alice, 403, 'forbidden'],
  ];
  for (const [where, token, status, code] of refusals) {
    const answer = await upgrade(where, token);
    answer.socket?.close();
    t.is(answer.status, status, `${where}: ${answer.body}`);
    t.regex(answer.body, new RegExp(`"code":"${code}"`), where);
    for (const secret of Object.values(tokens)) t.false(answer.body.includes(secret), 'no token in the answer');
  }
  // Another lab host's agent takes nothing of the embedded one's tunnels, and cannot claim in its name.
  const labB = api.http(tokens['lab-b']);
  const opening = upgrade(at('?machine=host-1'), tokens.alice);
  t.deepEqual((await labB.post('v1/agent/tunnels/claim', { json: { agent: 'lab-b', wait: 1 } })).body, { tunnels: [] });
  t.is((await labB.post('v1/agent/tunnels/claim', { json: { agent: 'local', wait: 0 } })).statusCode, 403);
  const opened = await opening;
  t.is(opened.status, 101, 'the owner still gets her tunnel');
  opened.socket?.close();

  await reservation.release();
  await waitFor(async () => (await reservation.refresh()).state === 'released', 120_000, 'the release');
  const ended = await upgrade(at('?machine=host-1'), tokens.alice);
  t.is(ended.status, 409);
  t.regex(ended.body, /"code":"lease_expired"/);
  // A machine whose SSH server stopped answering: the lab host says so, and the owner is told why.
  const gone = hosts[1];
  await gone.stop();
  hosts[1] = { ...gone, stop: async () => undefined };
  const failed = await upgrade(`v1/reservations/${direct.id}/tunnel?machine=host-2`, tokens.alice);
  t.is(failed.status, 502, failed.body);
  t.regex(failed.body, /"code":"tunnel_failed"/);
  t.regex(failed.body, /lab host local cannot reach host-2's ssh port: 127\.0\.0\.1:\d+: ECONNREFUSED/);
  await direct.release();
});
