// `npm run demo`: Paddock on its embedded defaults, and a real job against it. Two real OpenSSH
// servers on loopback ports stand in for the lab's static hosts; `paddock serve` runs the API, the
// SQLite file and a local agent in one process; examples/two-hosts.ts is the job script.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort } from '../test/helpers/ports.js';
import { startSshd } from '../test/helpers/sshd.js';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const dir = mkdtempSync(path.join(os.tmpdir(), 'paddock-demo-'));
const port = await freePort();
const hosts = await Promise.all([startSshd(), startSshd()]);
const user = os.userInfo().username;
writeFileSync(
  path.join(dir, 'paddock.yaml'),
  [
    `listen: 127.0.0.1:${port}`,
    'dataDir: data',
    'machines:',
    ...hosts.map((host, index) =>
      [
        `  - name: lab-host-${index + 1}`,
        '    kind: static',
        '    labels: { type: static-host, arch: x86_64 }',
        '    capacities: { cpus: 2, ram: 2GiB }',
        `    settings: { address: 127.0.0.1, port: ${host.port}, user: ${user}, adminKey: ${host.adminKey.path}, authorizedKeys: ${host.authorizedKeysFile} }`,
      ].join('\n'),
    ),
  ].join('\n') + '\n',
);
console.error(`demo: two static hosts on ports ${hosts.map((host) => host.port).join(' and ')}; config in ${dir}/paddock.yaml`);

const server = spawn(process.execPath, [path.join(root, 'bin/paddock.js'), 'serve', '--config', path.join(dir, 'paddock.yaml')], { stdio: 'inherit' });
let code = 1;
try {
  const url = `http://127.0.0.1:${port}`;
  for (let attempt = 0; ; attempt++) {
    try {
      if ((await fetch(`${url}/healthz`)).ok) break;
    } catch {
      if (attempt > 300 || server.exitCode !== null) throw new Error('paddock serve did not start');
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  const token = readFileSync(path.join(dir, 'data', 'admin-token'), 'utf8').trim();
  const job = spawn(process.execPath, ['--import', 'tsx', path.join(root, 'examples/two-hosts.ts')], {
    stdio: 'inherit',
    env: { ...process.env, PADDOCK_URL: url, PADDOCK_TOKEN: token },
  });
  code = await new Promise<number>((resolve) => job.once('exit', (status) => resolve(status ?? 1)));
  console.error(code === 0 ? 'demo: the job passed' : `demo: the job failed with exit code ${code}`);
} finally {
  server.kill('SIGTERM');
  await new Promise((resolve) => server.once('exit', resolve));
  await Promise.all(hosts.map((host) => host.stop()));
  rmSync(dir, { recursive: true, force: true });
}
process.exit(code);
