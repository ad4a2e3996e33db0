// The tunnel through the API against a direct connection, in the same run: a 256 MiB file copied
// with scp directly and through `paddock tunnel` as ssh's ProxyCommand (rounds interleaved), and the
// round trip of one command on an open SSH connection, directly and through the tunnel. The API
// runs as deployed (`paddock serve`, compiled, its embedded agent opening the tunnels); the machine
// is a real sshd. Aims: tunnel throughput at least 0.7 of direct; at most 2 ms added per command.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Paddock } from '../client/index.js';
import { sshConnect, sshExec } from '../protocol/ssh.js';
import { knownHostsLine } from '../protocol/ssh-keys.js';
import { staticMachinesYaml } from '../test/helpers/api.js';
import { startSshd } from '../test/helpers/sshd.js';
import { build, startServer, stopServer } from './server.js';

const quick = process.env.QUICK === '1';
const sizeMiB = quick ? 32 : 256;
const rounds = quick ? 1 : 3;
const commands = quick ? 50 : 300;
build();

const sshd = await startSshd();
const machines = staticMachinesYaml([
  { name: 'host-1', port: sshd.port, adminKeyPath: sshd.adminKey.path, authorizedKeysFile: sshd.authorizedKeysFile, access: 'paddock' },
]);
const server = await startServer((port) => `listen: 127.0.0.1:${port}\ndataDir: data\n${machines}\n`);
const url = `http://127.0.0.1:${server.port}`;
const scratch = mkdtempSync(path.join(os.tmpdir(), 'paddock-bench-tunnel-'));
const paddock = new Paddock({ url, token: server.token });
const reservation = await paddock.reserve({ members: [{ role: 'host', spec: 'type=static-host' }], lease: '1h' });
try {
  await reservation.ready({ timeout: 300 });
  const credentials = await reservation.credentials();
  const machine = credentials.machines[0];
  const key = path.join(scratch, 'key');
  const knownHosts = path.join(scratch, 'known_hosts');
  writeFileSync(key, credentials.privateKey, { mode: 0o600 });
  writeFileSync(knownHosts, `${knownHostsLine(machine.host, machine.port, machine.hostKey)}\n`);
  const file = path.join(scratch, 'payload.bin');
  execFileSync('sh', ['-c', `head -c ${sizeMiB * 1024 * 1024} /dev/urandom > ${file}`]);
  const env = { ...process.env, PADDOCK_URL: url, PADDOCK_TOKEN: server.token };
  const proxy = `ProxyCommand=${process.execPath} ${path.resolve('bin/paddock.js')} tunnel ${reservation.id} host 22`;
  const scp = (through: boolean) => {
    const args = [
      '-q',
      '-i',
      key,
      '-o',
      'IdentitiesOnly=yes',
      '-o',
      `UserKnownHostsFile=${knownHosts}`,
      '-o',
      'StrictHostKeyChecking=yes',
      '-P',
      String(machine.port),
    ];
    if (through) args.push('-o', proxy);
    const started = process.hrtime.bigint();
    execFileSync('scp', [...args, file, `${machine.user}@${machine.host}:bench-payload.bin`], { env, stdio: 'inherit' });
    return Number(process.hrtime.bigint() - started) / 1e9;
  };
  const times = { direct: [] as number[], tunnel: [] as number[] };
  for (let round = 0; round < rounds; round++) {
    const order: ('direct' | 'tunnel')[] = round % 2 === 0 ? ['direct', 'tunnel'] : ['tunnel', 'direct'];
    for (const way of order) times[way].push(scp(way === 'tunnel'));
  }
  const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
  const rate = (seconds: number) => sizeMiB / seconds;
  const direct = rate(median(times.direct));
  const tunnelled = rate(median(times.tunnel));
  console.log(
    `scp of ${sizeMiB} MiB, median of ${rounds}: direct ${direct.toFixed(0)} MiB/s, through the tunnel ${tunnelled.toFixed(0)} MiB/s; ratio ${(tunnelled / direct).toFixed(2)} (aim: at least 0.70)`,
  );

  // One connection each way, then `true` many times on it: the added time is the tunnel's.
  const roundTrip = async (through: boolean) => {
    const { client } = await sshConnect({
      host: machine.host,
      port: machine.port,
      user: machine.user,
      privateKey: credentials.privateKey,
      expectedHostKey: machine.hostKey,
      timeoutMs: 30_000,
      ...(through ? { sock: await reservation.tunnel(machine.machine, 'ssh') } : {}),
    });
    try {
      const each: number[] = [];
      for (let index = 0; index < commands; index++) {
        const started = process.hrtime.bigint();
        await sshExec(client, 'true');
        each.push(Number(process.hrtime.bigint() - started) / 1e6);
      }
      return median(each);
    } finally {
      client.end();
    }
  };
  const directMs = await roundTrip(false);
  const tunnelMs = await roundTrip(true);
  const directAgain = await roundTrip(false);
  const baseline = Math.min(directMs, directAgain);
  console.log(
    `one command on an open SSH connection, median of ${commands}: direct ${baseline.toFixed(2)} ms, through the tunnel ${tunnelMs.toFixed(2)} ms; added ${(tunnelMs - baseline).toFixed(2)} ms (aim: at most 2 ms)`,
  );
} finally {
  await reservation.release().catch(() => undefined);
  await stopServer(server);
  await sshd.stop();
  rmSync(scratch, { recursive: true, force: true });
}
