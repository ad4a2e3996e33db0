// The Python client (clients/python) as a user installs it: pip into a fresh virtual environment that
// sees the system's packages (Debian's requests, paramiko, pytest), with no index. Its own pytest
// suite then runs against a real API on two static hosts (real sshd servers), the example job script
// examples/two-hosts.py runs end to end, and mypy --strict checks the package's types.
import { execFile } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import test from 'ava';
import type { MachineView } from '../../protocol/api.js';
import { startApi, staticMachinesYaml, testConfig, type TestApi } from '../helpers/api.js';
import { startSshd, type TestSshd } from '../helpers/sshd.js';
import { waitFor } from '../helpers/wait.js';

/** Debian's Python, whose site packages hold the dependencies (a pyenv or other python3 on PATH may not). */
const python = process.env.PADDOCK_PYTHON ?? (existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3');
const source = path.resolve('clients/python');

interface Outcome {
  code: number;
  stdout: string;
  stderr: string;
}

function run(file: string, args: string[], options: { env?: NodeJS.ProcessEnv; cwd?: string; timeout?: number } = {}): Promise<Outcome> {
  return new Promise((resolve) => {
    execFile(
      file,
      args,
      { cwd: options.cwd ?? path.resolve('.'), env: options.env ?? process.env, timeout: options.timeout ?? 300_000, maxBuffer: 16 << 20 },
      (error, stdout, stderr) => resolve({ code: error ? (typeof error.code === 'number' ? error.code : 1) : 0, stdout, stderr }),
    );
  });
}

const shown = (outcome: Outcome) => `exit ${outcome.code}\n${outcome.stdout}\n${outcome.stderr}`;

let api: TestApi;
let hosts: TestSshd[];
let dir: string;

test.before(async () => {
  hosts = await Promise.all([startSshd(), startSshd()]);
  api = await startApi(
    testConfig(
      `lease: { default: 60, max: 600 }\nreaper: { interval: 0.2 }\n${staticMachinesYaml(
        hosts.map((host, index) => ({
          name: `py-${index + 1}`,
          port: host.port,
          adminKeyPath: host.adminKey.path,
          authorizedKeysFile: host.authorizedKeysFile,
        })),
      )}`,
    ),
  );
  dir = mkdtempSync(path.join(os.tmpdir(), 'paddock-python-'));
});

test.after.always(async () => {
  await api?.close();
  await Promise.all((hosts ?? []).map((host) => host.stop()));
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test('pip installs the Python client offline; its pytest suite and the example job script pass against real machines', async (t) => {
  t.timeout(600_000);
  const admin = api.http();
  const token = async (name: string) => ((await admin.post('v1/tokens', { json: { name, role: 'user' } })).body as { token: string }).token;
  const [user, other] = await Promise.all([token('py-user'), token('py-other')]);

  // A fresh virtual environment that sees Debian's packages; the package installed from a copy of
  // its folder (pip builds in the tree it is given), with no index and no build isolation.
  const venv = path.join(dir, 'venv');
  const made = await run(python, ['-m', 'venv', '--system-site-packages', venv]);
  t.is(made.code, 0, shown(made));
  const copy = path.join(dir, 'clients-python');
  cpSync(source, copy, { recursive: true, filter: (file) => !/(__pycache__|\.egg-info|\/build)$/.test(file) });
  const venvPython = path.join(venv, 'bin', 'python');
  const quiet = { ...process.env, PIP_DISABLE_PIP_VERSION_CHECK: '1', PYTHONDONTWRITEBYTECODE: '1' };
  const installed = await run(venvPython, ['-m', 'pip', 'install', '--no-index', '--no-build-isolation', '--no-cache-dir', copy], { env: quiet });
  t.is(installed.code, 0, shown(installed));
  t.regex(installed.stdout, /Successfully installed paddock-client-0\.1\.0/);
  const where = await run(venvPython, ['-c', 'import paddock, requests, paramiko; print(paddock.__file__); print(paddock.__version__)'], { env: quiet });
  t.is(where.code, 0, shown(where));
  t.true(where.stdout.startsWith(path.join(venv, 'lib')), `imported from the virtual environment: ${where.stdout}`);

  // Typed: the package, its tests and the example pass mypy --strict (the config is the package's pyproject).
  const typed = await run(
    venvPython,
    [
      '-m',
      'mypy',
      '--config-file',
      path.join(source, 'pyproject.toml'),
      '--cache-dir',
      path.join(dir, 'mypy-cache'),
      'clients/python/src',
      'clients/python/tests',
      'examples/two-hosts.py',
    ],
    { env: quiet },
  );
  t.is(typed.code, 0, shown(typed));
  t.regex(typed.stdout, /Success: no issues found in \d+ source files/);

  // The package's own tests, against this server: they hold the real assertions.
  const env = { ...quiet, PADDOCK_URL: api.url, PADDOCK_TOKEN: user, PADDOCK_OTHER_TOKEN: other, PADDOCK_TEST_SPEC: 'static-host' };
  const tests = await run(venvPython, ['-m', 'pytest', '-p', 'no:cacheprovider', '-q', '-rfEs', 'clients/python/tests'], { env, timeout: 400_000 });
  t.is(tests.code, 0, shown(tests));
  const summary = /^=*\s*(\d+) passed(?:, [^=]+)? in [\d.]+s/m.exec(tests.stdout);
  t.truthy(summary, shown(tests));
  t.is(summary![0].includes('skipped') || summary![0].includes('failed') || summary![0].includes('error'), false, summary![0]);
  t.is(Number(summary![1]), 19, shown(tests));

  // The example job script, end to end, as a CI job runs it.
  const example = await run(venvPython, ['examples/two-hosts.py'], {
    env: { ...quiet, PADDOCK_URL: api.url, PADDOCK_TOKEN: user, PADDOCK_EXAMPLE_SPEC: 'static-host' },
  });
  t.is(example.code, 0, shown(example));
  t.regex(example.stdout, /^reserved r-\S+ \((queued|allocated|provisioning)\)$/m);
  t.regex(example.stdout, /^ {2}py-\d: sshReady$/m, "progress: each machine's stages");
  t.regex(example.stdout, /^ {2}r-\S+: ready$/m, 'progress: the reservation became ready');
  t.regex(example.stdout, /^build: py-\d at \S+@127\.0\.0\.1:\d+$/m);
  t.regex(example.stdout, /^build says: Linux .* \(hostname \S+\)$/m);
  t.regex(example.stdout, /^test says: Linux .* \(hostname \S+\)$/m);
  t.regex(example.stdout, /^copied build:\/tmp\/paddock-example-r-\S+\.txt to test intact: built by \S+ on \S+$/m);
  t.regex(example.stdout, /^summary: build=\S+, test=\S+; file checksum [0-9a-f]{12}…; releasing r-\S+$/m);
  await waitFor(
    async () => ((await admin.get('v1/machines')).body as MachineView[]).every((machine) => machine.state === 'available'),
    60_000,
    'both machines available again after the example',
  );
  for (const host of hosts) t.notRegex(readFileSync(host.authorizedKeysFile, 'utf8'), /paddock:r-/, 'the reservation key is gone from the hosts');

  // A wrong token: a clear message with the API's code, exit 1, the token not shown.
  const refused = await run(venvPython, ['examples/two-hosts.py'], {
    env: { ...quiet, PADDOCK_URL: api.url, PADDOCK_TOKEN: 'pdk_not-a-real-token-at-all', PADDOCK_EXAMPLE_SPEC: 'static-host' },
  });
  t.is(refused.code, 1, shown(refused));
  t.regex(refused.stderr, /^job failed: .*\(unauthorized\)$/m);
  t.false((refused.stdout + refused.stderr).includes('not-a-real-token'));
});
