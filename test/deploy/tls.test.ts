// TLS in front of the API, as the README shows it: deploy/tls/nginx.conf and deploy/tls/Caddyfile
// (their text is in the README as it is in the files), each run in front of a real API with a
// certificate of its own, and the `paddock` command line through it over https: a large image
// uploaded and downloaded again (bodies of any size, streamed), and a command run on a machine
// reached through the API's tunnel (a long poll until ready, then a WebSocket: wss through the
// proxy). Only the names, ports and certificate paths of the files are changed for the test.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import test, { type ExecutionContext } from 'ava';
import { startApi, staticHostOn, staticMachinesYaml, testConfig } from '../helpers/api.js';
import { freePort } from '../helpers/ports.js';
import { startSshd } from '../helpers/sshd.js';
import { waitFor } from '../helpers/wait.js';

const exec = promisify(execFile);
const repository = path.resolve(import.meta.dirname, '../..');
const bin = path.join(repository, 'bin/paddock.js');
const readme = readFileSync(path.join(repository, 'README.md'), 'utf8');
/** A file of deploy/tls/ without its leading comment lines: the README shows it so. */
const example = (name: string) =>
  readFileSync(path.join(repository, 'deploy/tls', name), 'utf8')
    .split('\n')
    .filter((line) => !line.startsWith('#'))
    .join('\n')
    .trim();

test('the README shows the files of deploy/tls as they are', (t) => {
  for (const name of ['nginx.conf', 'Caddyfile']) t.true(readme.includes(example(name)), name);
});

/** A proxy in front of the API at `upstream`, answering https://localhost:PORT with `cert`; stops with the test. */
type Proxy = (t: ExecutionContext, dir: string, upstream: number, port: number, cert: { cert: string; key: string }) => Promise<void>;

const nginx: Proxy = async (t, dir, upstream, port, cert) => {
  const site = example('nginx.conf')
    .replace('listen 443 ssl;', `listen 127.0.0.1:${port} ssl;`)
    .replace('server_name paddock.lab.example;', 'server_name localhost;')
    .replace('/etc/ssl/paddock/fullchain.pem', cert.cert)
    .replace('/etc/ssl/paddock/privkey.pem', cert.key)
    .replace('http://127.0.0.1:7300', `http://127.0.0.1:${upstream}`);
  writeFileSync(path.join(dir, 'paddock.conf'), site);
  // What /etc/nginx/nginx.conf gives a site, in the test's folder.
  const temp = (name: string) => `${name} ${path.join(dir, name)};`;
  writeFileSync(
    path.join(dir, 'nginx.conf'),
    [
      'daemon off;',
      'master_process off;',
      'user root;',
      `pid ${path.join(dir, 'nginx.pid')};`,
      'error_log stderr warn;',
      'events {}',
      'http {',
      '  access_log off;',
      `  ${temp('client_body_temp_path')} ${temp('proxy_temp_path')} ${temp('fastcgi_temp_path')} ${temp('uwsgi_temp_path')} ${temp('scgi_temp_path')}`,
      `  include ${path.join(dir, 'paddock.conf')};`,
      '}',
    ].join('\n'),
  );
  await exec('nginx', ['-t', '-p', dir, '-c', path.join(dir, 'nginx.conf')]);
  await running(t, spawn('nginx', ['-p', dir, '-c', path.join(dir, 'nginx.conf')], { stdio: ['ignore', 'ignore', 'pipe'] }), port);
};

const caddy: Proxy = async (t, dir, upstream, port, cert) => {
  const site = example('Caddyfile')
    .replace('paddock.lab.example {', `https://localhost:${port} {\n\ttls ${cert.cert} ${cert.key}`)
    .replace('127.0.0.1:7300', `127.0.0.1:${upstream}`);
  // No admin endpoint and no redirect listener on port 80: several tests may run at once.
  writeFileSync(path.join(dir, 'Caddyfile'), `{\n\tadmin off\n\tauto_https disable_redirects\n}\n${site}\n`);
  const env = { ...process.env, HOME: dir, XDG_DATA_HOME: path.join(dir, 'data'), XDG_CONFIG_HOME: path.join(dir, 'config') };
  await exec('caddy', ['validate', '--config', path.join(dir, 'Caddyfile'), '--adapter', 'caddyfile'], { env });
  await running(
    t,
    spawn('caddy', ['run', '--config', path.join(dir, 'Caddyfile'), '--adapter', 'caddyfile'], { env, stdio: ['ignore', 'ignore', 'pipe'] }),
    port,
  );
};

/** Waits until the proxy takes connections on `port`; it is stopped at the test's end. */
async function running(t: ExecutionContext, child: ChildProcess, port: number): Promise<void> {
  let output = '';
  child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  t.teardown(() => {
    child.kill('SIGTERM');
  });
  const deadline = Date.now() + 30_000;
  for (;;) {
    const open = await exec('bash', ['-c', `exec 3<>/dev/tcp/127.0.0.1/${port}`]).then(
      () => true,
      () => false,
    );
    if (open) return;
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`the proxy did not start: ${output}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

for (const [name, proxy] of [
  ['nginx', nginx],
  ['Caddy', caddy],
] as const) {
  test(`${name} in front of the API: large uploads and downloads, long polls and WebSocket tunnels over TLS`, async (t) => {
    t.timeout(600_000);
    const dir = mkdtempSync(path.join(os.tmpdir(), `paddock-tls-${name.toLowerCase()}-`));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    const sshd = await startSshd();
    t.teardown(() => sshd.stop());
    const config = testConfig(staticMachinesYaml([{ ...staticHostOn(sshd, 'm1', { type: 'static-host' }), access: 'paddock' }]));
    const api = await startApi(config);
    t.teardown(() => api.close());

    const cert = { cert: path.join(dir, 'cert.pem'), key: path.join(dir, 'key.pem') };
    await exec('openssl', [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-days',
      '1',
      '-subj',
      '/CN=localhost',
      '-addext',
      'subjectAltName=DNS:localhost',
      '-keyout',
      cert.key,
      '-out',
      cert.cert,
    ]);
    const port = await freePort();
    await proxy(t, dir, Number(new URL(api.url).port), port, cert);

    const env: NodeJS.ProcessEnv = { ...process.env, PADDOCK_URL: `https://localhost:${port}`, PADDOCK_TOKEN: api.adminToken, NODE_EXTRA_CA_CERTS: cert.cert };
    const paddock = (args: string[]) =>
      exec(process.execPath, [bin, ...args], { env, cwd: dir, timeout: 300_000, maxBuffer: 16 * 1024 * 1024 }).catch(
        (error: { stdout?: string; stderr?: string; message: string }) => {
          throw new Error(`paddock ${args.join(' ')}: ${error.stderr ?? ''}${error.stdout ?? ''}${error.message}`);
        },
      );
    t.regex((await paddock(['whoami'])).stdout, /^admin \(admin\)/);

    const image = path.join(dir, 'disk.raw');
    const bytes = randomBytes(48 * 1024 * 1024);
    writeFileSync(image, bytes);
    await paddock(['images', 'upload', image, '--name', 'big', '--tag', 'tls', '--format', 'raw']);
    await paddock(['images', 'download', 'big:tls', path.join(dir, 'copy.raw')]);
    const digest = (buffer: Buffer) => createHash('sha256').update(buffer).digest('hex');
    t.is(digest(readFileSync(path.join(dir, 'copy.raw'))), digest(bytes), 'the same 48 MiB back');

    const ran = await paddock(['run', 'type=static-host', '--', 'echo', 'through-the-tunnel']);
    t.regex(ran.stdout, /^through-the-tunnel$/m);
    // The owner's end of a tunnel is this route, which only PADDOCK_URL (the proxy) leads to; it is logged once closed.
    const tunnelled = () => api.logs.some((line) => /"route":"\/v1\/reservations\/[^"]*tunnel","status":101/.test(line));
    await waitFor(async () => tunnelled(), 30_000, 'the tunnel through the proxy');
    t.true(tunnelled(), 'the API logged the tunnel opened through the proxy');
  });
}
