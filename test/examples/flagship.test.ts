// The flagship job end to end: the script committed to a git repository, defined as a job, run
// with `paddock jobs run --wait` and executed by a real runner host process, against a Paddock
// holding one QEMU VM slot and two emulated arm64 boards. The VM builds an arm64 initramfs, the
// boards boot it, and the run's result shows both boards running that very build. The failure path
// runs the script directly, as `paddock jobs reproduce` would.
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import test from 'ava';
import { Paddock } from '../../client/index.js';
import type { RunView } from '../../protocol/api.js';
import { startApi, testConfig, type TestApi } from '../helpers/api.js';
import { testImages } from '../helpers/images.js';
import { startLab, type Lab } from '../helpers/lab/index.js';
import { stopGracefully } from '../helpers/server.js';
import { waitFor } from '../helpers/wait.js';

const tftpRoot = '/tmp/paddock-test-tftp';
let lab: Lab | undefined;
let api: TestApi | undefined;
let scratch: string;
let runner: ChildProcess | undefined;
const bin = path.resolve(import.meta.dirname, '../../bin/paddock.js');

/** What the script writes to PADDOCK_RESULT. */
interface FlagshipResult {
  runId: string;
  image?: { ref: string; sha256: string; size: number; expiresAt?: string };
  build?: { machine: string; host: string; uname: string; builtAt: string; stamp: string; initrd: { size: number; sha256: string; files: number } };
  boards?: { machine: string; role: string; output: string }[];
  durations: Record<string, number>;
  error?: string;
}

test.before(async () => {
  scratch = mkdtempSync(path.join(os.tmpdir(), 'paddock-flagship-test-'));
  chmodSync(scratch, 0o711); // the runner host's run users pass through to their work folders
  const [images, started] = await Promise.all([testImages(), startLab(2)]);
  lab = started;
  api = await startApi(
    testConfig(
      [
        // The job repository is a local one in the scratch folder: the only local root.
        `repositories: { localRoots: [${JSON.stringify(scratch)}] }`,
        'machines:',
        '  - name: vm',
        '    kind: qemu',
        '    count: 1',
        '    labels: { arch: x86_64 }',
        '    capacities: { cpus: 1, ram: 256MiB }',
        ...lab.boards.map((board) => lab!.boardYaml(board, { tftpRoot })),
      ].join('\n'),
    ),
  );
  const paddock = new Paddock({ url: api.url, token: api.adminToken });
  await Promise.all([
    paddock.images.upload(images.initramfs, { name: 'x86', format: 'bundle', arch: 'x86_64' }),
    paddock.images.upload(images.arm64, { name: 'arm', format: 'bundle', arch: 'arm64' }),
  ]);
});

test.after.always(async () => {
  await stopGracefully(runner);
  await api?.close();
  await lab?.stop();
  rmSync(scratch, { recursive: true, force: true });
});

/** The environment a runner host gives the script: the server, a token, and the run's variables. */
function jobEnv(variables: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const name of Object.keys(env)) if (name.startsWith('PADDOCK_')) delete env[name]; // none of this process's own
  return { ...env, PADDOCK_URL: api!.url, PADDOCK_TOKEN: api!.adminToken, ...variables };
}

/** Runs the job script as a child process, as a runner host would. */
function runJob(env: NodeJS.ProcessEnv): Promise<{ code: number | string; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', 'examples/flagship.ts'], { env, timeout: 240_000 }, (error, stdout, stderr) =>
      resolve({ code: error ? ((error as { code?: number | string }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

const allAvailable = async (paddock: Paddock) => (await paddock.machines()).every((machine) => machine.state === 'available');

// Serial: both tests want the one VM slot, and each ends by checking that every machine is free.
test.serial(
  'the flagship job, from a git repository through a runner host, builds an arm64 initramfs on a VM, boots it on two boards as one gang, and proves they run it',
  async (t) => {
    const paddock = new Paddock({ url: api!.url, token: api!.adminToken });
    // The job repository: the example script as it is, in an ESM TypeScript repository.
    const repo = path.join(scratch, 'flagship.git');
    mkdirSync(path.join(repo, 'ci'), { recursive: true });
    copyFileSync(path.resolve(import.meta.dirname, '../../examples/flagship.ts'), path.join(repo, 'ci', 'flagship.ts'));
    writeFileSync(path.join(repo, 'package.json'), '{ "type": "module", "private": true }\n');
    execFileSync('git', ['init', '-q', '-b', 'main', repo]);
    execFileSync('git', ['-C', repo, 'add', '.']);
    execFileSync('git', ['-C', repo, '-c', 'user.name=ci', '-c', 'user.email=ci@example.com', 'commit', '-q', '-m', 'the flagship job']);

    const runnerToken = (await paddock.createToken('flagship-runner', 'runner')).token;
    let runnerLog = '';
    runner = spawn(process.execPath, [bin, 'runner', '--name', 'flagship-runner', '--work', path.join(scratch, 'work'), '--heartbeat', '1'], {
      env: { ...process.env, PADDOCK_URL: api!.url, PADDOCK_TOKEN: runnerToken },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    runner.stderr!.on('data', (chunk: Buffer) => (runnerLog += chunk.toString()));

    const cli = (...args: string[]) =>
      new Promise<{ code: number | string; stdout: string; stderr: string }>((resolve) => {
        execFile(process.execPath, [bin, ...args], { env: jobEnv({}), timeout: 240_000 }, (error, stdout, stderr) =>
          resolve({ code: error ? ((error as { code?: number | string }).code ?? 1) : 0, stdout, stderr }),
        );
      });
    const added = await cli(
      'jobs',
      'add',
      'flagship',
      '--repo',
      repo,
      '--script',
      'ci/flagship.ts',
      '--param',
      'BUILD_IMAGE=x86',
      '--param',
      'BOARD_IMAGE=arm',
      '--time-limit',
      '10m',
    );
    t.is(added.code, 0, added.stderr);
    const since = Date.now();
    const { code, stdout, stderr } = await cli('jobs', 'run', 'flagship', '--wait');
    t.log(`the run took ${((Date.now() - since) / 1000).toFixed(1)} s`);
    t.is(code, 0, `${stdout}\n${stderr}\n${runnerLog}`);
    const run: RunView = (await paddock.jobs.runs({ job: 'flagship' }))[0];
    t.is(run.state, 'passed');
    t.is(run.runner, 'flagship-runner');
    const runId = run.id;

    const result = run.result as FlagshipResult;
    t.is(result.error, undefined);
    t.is(result.runId, runId);
    t.log(`durations: ${JSON.stringify(result.durations)}`);

    // Built on the x86 VM, stamped with this run.
    const build = result.build!;
    t.is(build.machine, 'vm-1');
    t.regex(build.uname, /x86_64/);
    t.true(build.stamp.startsWith(`${runId}/`), build.stamp);
    t.true(build.initrd.files > 100, 'the whole initramfs was unpacked and packed again');

    // Both boards booted that build: each prints the stamp and runs on aarch64.
    const boards = result.boards!;
    t.is(boards.length, 2);
    t.deepEqual(boards.map((board) => board.machine).sort(), ['board-1', 'board-2']);
    for (const board of boards) {
      t.true(board.output.split('\n').includes(`stamp=${build.stamp}`), `${board.machine}: ${board.output}`);
      t.regex(board.output, /^machine=aarch64$/m, board.machine);
      t.regex(board.output, new RegExp(`^run=${runId}$`, 'm'), board.machine);
      t.regex(board.output, /^builder=Linux .*x86_64/m, `${board.machine} shows where it was built`);
    }

    // The temporary image is stored, with an expiry about two hours away.
    const image = await paddock.images.show(result.image!.ref);
    t.is(image.ref, `flagship-${runId}:latest`);
    t.is(image.format, 'bundle');
    t.is(image.arch, 'arm64');
    t.is(image.sha256, result.image!.sha256);
    t.truthy(image.expiresAt);
    const expiresIn = Date.parse(image.expiresAt!) - Date.now();
    t.true(expiresIn > 100 * 60_000 && expiresIn <= 120 * 60_000, `expires at ${image.expiresAt}`);

    // Progress was shown, and every machine is back once the releases have run their course.
    t.regex(stdout, /vm-1: sshReady/);
    t.regex(stdout, /board-1: sshReady/);
    t.regex(stdout, /board-2: sshReady/);
    t.regex(stdout, /summary: built flagship-/);
    await waitFor(() => allAvailable(paddock), 180_000, 'every machine available again');
    t.deepEqual((await paddock.machines()).map((machine) => `${machine.name} ${machine.state}`).sort(), [
      'board-1 available',
      'board-2 available',
      'vm-1 available',
    ]);
  },
);

test.serial('a failing flagship job says why, exits non-zero, records the error and releases the VM it holds', async (t) => {
  const paddock = new Paddock({ url: api!.url, token: api!.adminToken });
  const resultFile = path.join(scratch, 'failed.json');
  // The board image does not exist: the download fails while the build VM is being reserved.
  const { code, stdout, stderr } = await runJob(
    jobEnv({ PADDOCK_RUN_ID: 'test-missing', PADDOCK_RESULT: resultFile, PADDOCK_PARAM_BUILD_IMAGE: 'x86', PADDOCK_PARAM_BOARD_IMAGE: 'no-such-image' }),
  );
  t.is(code, 1, `${stdout}\n${stderr}`);
  t.regex(stderr, /^job failed: image no-such-image:latest not found \[not_found\]$/m);
  const result = JSON.parse(readFileSync(resultFile, 'utf8')) as FlagshipResult;
  t.regex(result.error ?? '', /no-such-image/);
  t.is(result.boards, undefined);
  await waitFor(() => allAvailable(paddock), 120_000, 'the build VM released');
  t.false(
    (await paddock.images.list({ origin: 'paddock' })).some((image) => image.ref.startsWith('flagship-test-missing')),
    'nothing was uploaded',
  );

  // A required parameter missing: refused before anything is reserved.
  const missing = await runJob(jobEnv({ PADDOCK_PARAM_BOARD_IMAGE: 'arm' }));
  t.is(missing.code, 1);
  t.regex(missing.stderr, /parameter BUILD_IMAGE is required \(set PADDOCK_PARAM_BUILD_IMAGE\)/);
  t.deepEqual(await paddock.list({ all: true }), [], 'no live reservation');
});
