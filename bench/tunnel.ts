// The tunnel through the API against a direct connection, in the same run: a 256 MiB file copied
// with scp directly and through `paddock tunnel` as ssh's ProxyCommand (rounds interleaved), and the
// round trip of one command on an open SSH connection, directly and through the tunnel. The API
// runs as deployed (`paddock serve`, compiled, its embedded agent opening the tunnels); the machine
// is a real sshd. Aims: tunnel throughput at least 0.7 of direct; at most 2 ms added per command.
// A third way shows what any relay in the path costs on this machine: scp through two bare Node TCP
// relays (a ProxyCommand piping stdin and stdout to a socket, and a relay process standing for the
// API and the lab host), no Paddock code at all. On a machine with few cores the relays, ssh and
// sshd compete for them, so this ceiling is printed next to the tunnel's figure.
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { once } from 'node:events';
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
  const relay = await startRelay(machine.host, machine.port);
  const relayProxy = `ProxyCommand=${process.execPath} -e ${JSON.stringify(stdioRelay(relay.port))}`;
  const proxy = `ProxyCommand=${process.execPath} ${path.resolve('bin/paddock.js')} tunnel ${reservation.id} host 22`;
  const scp = (way: Way) => {
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
    if (way !== 'direct') args.push('-o', way === 'tunnel' ? proxy : relayProxy);
    const started = process.hrtime.bigint();
    execFileSync('scp', [...args, file, `${machine.user}@${machine.host}:bench-payload.bin`], { env, stdio: 'inherit' });
    return Number(process.hrtime.bigint() - started) / 1e9;
  };
  const times: Record<Way, number[]> = { direct: [], tunnel: [], relay: [] };
  for (let round = 0; round < rounds; round++) {
    const order: Way[] = round % 2 === 0 ? ['direct', 'tunnel', 'relay'] : ['relay', 'tunnel', 'direct'];
    for (const way of order) times[way].push(scp(way));
  }
  relay.child.kill();
  const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
  const rate = (seconds: number) => sizeMiB / seconds;
  const direct = rate(median(times.direct));
  const tunnelled = rate(median(times.tunnel));
  const relayed = rate(median(times.relay));
  console.log(
    `scp of ${sizeMiB} MiB, median of ${rounds}: direct ${direct.toFixed(0)} MiB/s, through the tunnel ${tunnelled.toFixed(0)} MiB/s; ratio ${(tunnelled / direct).toFixed(2)} (aim: at least 0.70)`,
  );
  console.log(
    `the same through two bare Node TCP relays (no Paddock): ${relayed.toFixed(0)} MiB/s, ratio ${(relayed / direct).toFixed(2)} to direct; the tunnel reaches ${(tunnelled / relayed).toFixed(2)} of it (${os.availableParallelism()} cores)`,
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

type Way = 'direct' | 'tunnel' | 'relay';

/** A ProxyCommand's program: stdin and stdout piped to a TCP port on loopback. */
function stdioRelay(port: number): string {
  return `const s=require('net').connect(${port},'127.0.0.1');process.stdin.pipe(s);s.pipe(process.stdout);s.on('close',()=>process.exit(0))`;
}

/** A process relaying each connection on a loopback port to host:port. */
async function startRelay(host: string, port: number): Promise<{ port: number; child: ReturnType<typeof spawn> }> {
  const code = `const net=require('net');const server=net.createServer((a)=>{const b=net.connect(${port},${JSON.stringify(host)});a.pipe(b);b.pipe(a);a.on('error',()=>b.destroy());b.on('error',()=>a.destroy())});server.listen(0,'127.0.0.1',()=>console.log(server.address().port))`;
  const child = spawn(process.execPath, ['-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
  const [line] = (await once(child.stdout!, 'data')) as [Buffer];
  return { port: Number(line.toString().trim()), child };
}
