// The client library installs on its own, as a CI engineer installs it: `npm pack` in client/, the
// tarball installed into an empty project, and the job script of client/README.md run from there
// with plain Node against a real server and a real sshd host. What it pulls in must be the library's
// three dependencies (and theirs), nothing of the server.
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import test from 'ava';
import { Paddock } from '../../client/index.js';
import { startApi, staticMachinesYaml, testConfig, type TestApi } from '../helpers/api.js';
import { startSshd, type TestSshd } from '../helpers/sshd.js';
import { waitFor } from '../helpers/wait.js';

const run = promisify(execFile);
const clientDir = path.resolve('client');

let api: TestApi;
let host: TestSshd;
let dir: string;

test.before(async () => {
  host = await startSshd();
  api = await startApi(
    testConfig(staticMachinesYaml([{ name: 'pack-host', port: host.port, adminKeyPath: host.adminKey.path, authorizedKeysFile: host.authorizedKeysFile }])),
  );
  dir = mkdtempSync(path.join(os.tmpdir(), 'paddock-package-'));
});

test.after.always(async () => {
  await api?.close();
  await host?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test('npm pack, install into an empty project, and the README job script runs there against a real server', async (t) => {
  t.timeout(900_000);
  await run('npx', ['tsc', '-p', path.join(clientDir, 'tsconfig.json')], { cwd: path.resolve('.') });
  const packed = await run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', dir], { cwd: clientDir });
  const [{ filename, files }] = JSON.parse(packed.stdout) as { filename: string; files: { path: string }[] }[];
  t.true(
    files.some((file) => file.path === 'dist/client/index.js'),
    'the compiled library is in the tarball',
  );
  t.true(
    files.some((file) => file.path === 'dist/client/index.d.ts'),
    'with its type declarations',
  );
  t.false(
    files.some((file) => file.path.endsWith('.ts') && !file.path.endsWith('.d.ts')),
    'and no TypeScript source',
  );

  const project = path.join(dir, 'job');
  await run('mkdir', ['-p', project]);
  writeFileSync(path.join(project, 'package.json'), JSON.stringify({ name: 'ci-job', version: '1.0.0', private: true, type: 'module' }));
  await run('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', '--ignore-scripts', path.join(dir, filename)], {
    cwd: project,
    timeout: 600_000,
  });
  const installed = readdirSync(path.join(project, 'node_modules'));
  for (const wanted of ['paddock', 'got', 'ssh2', 'ws']) t.true(installed.includes(wanted), `${wanted} is installed`);
  for (const server of ['koa', 'sequelize', 'sqlite3', 'serialport', 'net-snmp', 'tsx', 'zod', '@koa'])
    t.false(installed.includes(server), `${server} (the server's) is not`);
  t.false(existsSync(path.join(project, 'node_modules', 'paddock', 'api')), 'no server code');

  // The README's job script, as it is written there.
  const readme = readFileSync(path.join(clientDir, 'README.md'), 'utf8');
  const script = /```js\n([\s\S]*?)```/.exec(readme)?.[1];
  t.truthy(script, 'the README holds a job script');
  writeFileSync(path.join(project, 'job.mjs'), script!);
  const user = (await new Paddock({ url: api.url, token: api.adminToken }).createToken('ci-bot', 'user')).token;
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, HOME: process.env.HOME, PADDOCK_URL: api.url, PADDOCK_TOKEN: user, JOB_SPEC: 'static-host' };
  const job = await run(process.execPath, ['job.mjs'], { cwd: project, env, timeout: 600_000 });
  t.regex(job.stdout, /^build is pack-host, \S+@127\.0\.0\.1:\d+$/m);
  t.regex(job.stdout, /^Linux\njob-ran-on-\S+$/m, 'the command ran over SSH');
  t.regex(job.stderr, /pack-host: ready/, 'progress on stderr');
  t.false(job.stderr.includes(user) || job.stdout.includes(user), 'the token is never printed');

  // Released: the machine is free again, and nothing of the key is left on the host.
  const admin = new Paddock({ url: api.url, token: api.adminToken });
  await waitFor(
    async () => (await admin.machines()).find((machine) => machine.name === 'pack-host')?.state === 'available',
    120_000,
    'pack-host available again',
  );
  t.notRegex(readFileSync(host.authorizedKeysFile, 'utf8'), /paddock:r-/);

  // A wrong token: a clear error with its code, exit 1, the token not shown.
  const refused = await run(process.execPath, ['job.mjs'], { cwd: project, env: { ...env, PADDOCK_TOKEN: 'wrong-token' } }).catch(
    (error: { code: number; stderr: string }) => error,
  );
  t.is((refused as { code: number }).code, 1);
  t.regex((refused as { stderr: string }).stderr, /unknown or revoked token|unauthorized/);
  t.false((refused as { stderr: string }).stderr.includes('wrong-token'));
});
