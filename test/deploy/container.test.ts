// The container images (deploy/container/): built from their Containerfiles with buildah, as root
// with chroot isolation (no container engine runs here), and run. The API image runs as a user of
// its own, serves /healthz (its health check command passes), checks its config and backs its
// database up; the runner host image runs as root and passes its own isolation check (a test script
// as a run user in namespaces of its own) given SYS_ADMIN, as its header says to run it.
//
// No container registry can be reached from here: the base image is a stand-in for
// node:20-bookworm-slim built from Debian packages and this machine's Node (test/helpers/node-base-image.sh),
// kept with the build cache in ${PADDOCK_CONTAINER_CACHE:-~/.cache/paddock/container} (test/helpers/container.ts). The first
// build takes about 15 minutes (Debian packages, npm ci with sqlite3 compiled, the build); later ones
// reuse what did not change, and CI builds the images ahead (test/deploy/prebuild.ts).
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import test from 'ava';
import got from 'got';
import { freePort } from '../helpers/ports.js';
import { build, buildah, buildBase, images, storageOptions } from '../helpers/container.js';

/** The pids of `program` (run as itself, or a script run by node) whose command line has `marker`; not buildah's own processes. */
function processesWith(program: string, marker: string): number[] {
  return readdirSync('/proc')
    .filter((entry) => /^\d+$/.test(entry))
    .filter((pid) => {
      let args: string[] = [];
      try {
        args = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      } catch {
        return false;
      }
      const runs = args[0] === program || (path.basename(args[0] ?? '') === 'node' && args[1] === program);
      return runs && args.some((arg) => arg.includes(marker));
    })
    .map(Number);
}

interface ImageConfig {
  User: string;
  ExposedPorts?: Record<string, unknown>;
  Healthcheck?: { Test: string[] };
  Entrypoint: string[];
  Cmd?: string[];
  Volumes?: Record<string, unknown>;
}
const imageConfig = async (tag: string) =>
  (JSON.parse(await buildah(['inspect', '--type', 'image', tag])) as { Docker: { config: ImageConfig } }).Docker.config;

test.before('the stand-in base image', async (t) => {
  t.timeout(1_800_000);
  await buildBase();
});

test.after.always('the containers go, and the images of earlier builds', async () => {
  await buildah(['rm', '--all']).catch(() => undefined);
  // An earlier build's image, untagged by this one, and then its layers: each prune frees the next.
  for (let round = 0; round < 20; round++) if ((await buildah(['rmi', '--prune']).catch(() => '')).trim() === '') break;
});

test.serial('the API image: a user of its own, port 7300, a health check on /healthz, paddock as entrypoint; it serves, checks and backs up', async (t) => {
  t.timeout(3_600_000);
  await build('Containerfile.api', images.api);
  const config = await imageConfig(images.api);
  t.not(config.User, 'root');
  t.not(config.User, '');
  t.deepEqual(Object.keys(config.ExposedPorts ?? {}), ['7300/tcp']);
  t.deepEqual(Object.keys(config.Volumes ?? {}), ['/var/lib/paddock']);
  t.regex(config.Healthcheck?.Test.join(' ') ?? '', /http:\/\/127\.0\.0\.1:7300\/healthz/);
  t.deepEqual(config.Entrypoint, ['/usr/bin/tini', '--', '/usr/local/bin/paddock']);
  t.deepEqual(config.Cmd, ['serve', '--config', '/etc/paddock/paddock.yaml']);

  const container = (await buildah(['from', '--pull=never', images.api])).trim();
  const inside = (command: string[]) => buildah(['run', '--isolation', 'chroot', container, '--', ...command], 300_000);
  t.regex(await inside(['id']), new RegExp(`^uid=\\d+\\(${config.User}\\)`));
  t.not((await inside(['id', '-u'])).trim(), '0');
  t.regex(await inside(['paddock', 'config', 'check', '/etc/paddock/paddock.yaml']), /valid \(0 machines\)/);

  // The entrypoint's command line with its default config, on a free port (chroot isolation shares this host's network).
  const port = await freePort();
  const server = spawn(
    'buildah',
    [...storageOptions, 'run', '--isolation', 'chroot', container, '--', ...config.Entrypoint, ...config.Cmd!, '--listen', `127.0.0.1:${port}`],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let log = '';
  server.stderr.on('data', (chunk: Buffer) => (log += chunk.toString()));
  // buildah passes no signal on to what it runs (it ends it with SIGKILL): the container's
  // processes are signalled themselves, found by their command line (chroot isolation: no PID namespace).
  const signal = (program: string, name: NodeJS.Signals) => {
    for (const pid of processesWith(program, `127.0.0.1:${port}`)) process.kill(pid, name);
  };
  t.teardown(() => {
    signal('/usr/bin/tini', 'SIGKILL');
    signal('/usr/local/bin/paddock', 'SIGKILL');
  });
  const deadline = Date.now() + 120_000;
  let health: { ok?: boolean } | undefined;
  while (Date.now() < deadline && !health) {
    health = await got(`http://127.0.0.1:${port}/healthz`, { retry: { limit: 0 }, timeout: { request: 2000 } })
      .json<{ ok: boolean }>()
      .catch(() => undefined);
    if (!health) await new Promise((resolve) => setTimeout(resolve, 500));
  }
  t.true(health?.ok, `the API in the image did not answer: ${log}`);
  t.regex(log, /"msg":"paddock listening"/);
  // The image's own health check command, pointed at that port.
  const check = config.Healthcheck!.Test.slice(1).map((word) => word.replace(':7300/', `:${port}/`));
  await t.notThrowsAsync(inside(check), 'the health check passes');
  t.regex(
    await inside(['paddock', 'backup', '/var/lib/paddock/backup.sqlite', '--data', '/var/lib/paddock']),
    /backup\.sqlite: \d+ bytes, schema .*, integrity ok/,
  );
  t.regex(await inside(['stat', '-c', '%a %U', '/var/lib/paddock/backup.sqlite']), new RegExp(`^600 ${config.User}`));
  signal('/usr/bin/tini', 'SIGTERM');
  await new Promise((resolve) => server.once('exit', resolve));
  t.regex(log, /"signal":"SIGTERM","msg":"stopping"/, 'tini hands SIGTERM to Paddock');
  t.deepEqual(processesWith('/usr/local/bin/paddock', `127.0.0.1:${port}`), [], 'which stops');
});

test.serial('the runner host image: root, paddock runner as entrypoint, and runs can be isolated in it', async (t) => {
  t.timeout(3_600_000);
  await build('Containerfile.runner', images.runner);
  const config = await imageConfig(images.runner);
  t.is(config.User, 'root');
  t.deepEqual(config.Entrypoint.slice(0, 4), ['/usr/bin/tini', '--', '/usr/local/bin/paddock', 'runner']);
  t.regex(config.Healthcheck?.Test.join(' ') ?? '', /http:\/\/127\.0\.0\.1:7303\/metrics/);

  const container = (await buildah(['from', '--pull=never', images.runner])).trim();
  // Its isolation check runs a script as a run user in namespaces of its own before it asks the API (not there).
  const started = await buildah(
    [
      'run',
      '--isolation',
      'chroot',
      '--cap-add',
      'CAP_SYS_ADMIN',
      container,
      '--',
      'sh',
      '-c',
      'umask 077 && mkdir -p /run/secrets && echo pdk_not-a-token > /run/secrets/runner.token && PADDOCK_URL=http://127.0.0.1:1 "$@" 2>&1; true',
      'sh',
      ...config.Entrypoint,
      '--slots',
      '1',
    ],
    300_000,
  );
  t.regex(started, /cannot reach Paddock at http:\/\/127\.0\.0\.1:1/, `isolation checked, then the API asked: ${started}`);
});
