// The CI pipeline examples (examples/ci/) run here as GitHub Actions and GitLab CI run them, so they
// cannot rot: each file parsed with `yaml`, each job's steps taken in order and run with bash in a
// scratch checkout, with the variables the CI system gives (GITHUB_ENV between steps, CI_JOB_ID,
// CI_JOB_STATUS in after_script, …), against a real Paddock whose machines are static hosts on real
// sshd servers. Every job runs twice: with the stand-in test (examples/ci/hardware-test.sh), whose
// output must come from the machines, and with a test that fails, where the job must fail and the
// machines still be released. After every run, every machine is available again.
//
// What this runner does not do as the real ones would, and why:
// - `uses:` steps are not run (USES below says, for each action, what stands in for it); any other
//   action makes the test fail until it says what replaces it.
// - The install line, `npm install --global "$PADDOCK_CLI"`, becomes a link to this checkout's
//   bin/paddock.js in the global npm bin directory (on PATH from the start, empty until then, as
//   on a runner): the tarball PADDOCK_CLI names is this repository packed, and installing it
//   fetches some 200 packages from the registry, minutes that would test npm rather than the pipeline.
// - GitLab's `image:` is not pulled: the scripts run here, with this test's Node on PATH (and on
//   GitHub in place of setup-node), and the system's /usr/bin and /bin for bash, ssh and the rest.
// - Steps run with `bash --noprofile --norc -eo pipefail`, as both systems run bash scripts.
// A key either runner would act on and this one does not know (working-directory, rules, extends,
// include, …) fails the test rather than being ignored.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { parse } from 'yaml';
import { endStates, type MachineView, type ReservationView } from '../../protocol/api.js';
import { startApi, staticHostOn, staticMachinesYaml, testConfig, type JsonClient, type TestApi } from '../helpers/api.js';
import { startSshd, type TestSshd } from '../helpers/sshd.js';
import { waitFor } from '../helpers/wait.js';

const examples = path.resolve('examples/ci');
const bin = path.resolve('bin/paddock.js');
const installLine = 'npm install --global "$PADDOCK_CLI"';

/** The actions the GitHub workflow uses, and what stands in for each here. */
const USES: Record<string, string> = {
  'actions/checkout': 'the test makes the checkout: a scratch directory with ci/hardware-test.sh',
  'actions/setup-node': "this test's Node is on PATH",
  'actions/upload-artifact': 'nothing to upload to: the test reads reports/ in the checkout instead',
};

/** A test that fails, after saying where it ran. */
const failingTest = 'echo "hardware test on $(uname -n) as $(id -un)"\necho "hardware test failed: the device said no" >&2\nexit 3\n';

let api: TestApi;
let hosts: TestSshd[];
let admin: JsonClient;
let token: string;
let root: string;
let runs = 0;

/** Not over yet: queued, allocated, provisioning, ready or releasing. */
const live = (view: ReservationView) => !endStates.includes(view.state);

test.before(async () => {
  root = await mkdtemp(path.join(os.tmpdir(), 'paddock-ci-examples-'));
  hosts = await Promise.all([startSshd(), startSshd()]);
  api = await startApi(testConfig(staticMachinesYaml(hosts.map((host, index) => staticHostOn(host, `lab-${index + 1}`)))));
  admin = api.http();
  const created = await admin.post('v1/tokens', { json: { name: 'ci', role: 'user' } });
  token = (created.body as { token: string }).token;
});

// A run that failed may leave its reservation: released here, so the next run finds the machines free.
test.afterEach.always(async () => {
  const left = ((await admin.get('v1/reservations', { searchParams: { all: 1 } })).body as ReservationView[]).filter(live);
  await Promise.all(left.map((view) => admin.delete(`v1/reservations/${view.id}`)));
  await waitFor(
    async () => ((await admin.get('v1/machines')).body as MachineView[]).every((machine) => machine.state === 'available'),
    60_000,
    'machines back',
  );
});

test.after.always(async () => {
  await api?.close();
  await Promise.all((hosts ?? []).map((host) => host.stop()));
  if (root) await rm(root, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------------------------
// Running bash as a CI runner does.

interface Outcome {
  code: number;
  /** stdout and stderr as they came, as a CI log shows them. */
  output: string;
}

/** A script run with bash in `cwd`, its process group killed if it outlives `timeout`. */
async function bash(script: string, file: string, cwd: string, env: NodeJS.ProcessEnv, timeout = 240_000): Promise<Outcome> {
  await writeFile(file, script);
  return new Promise((resolve, reject) => {
    const child = spawn('bash', ['--noprofile', '--norc', '-eo', 'pipefail', file], { cwd, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const timer = setTimeout(() => process.kill(-child.pid!, 'SIGKILL'), timeout);
    child.once('error', reject);
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? 128 + (os.constants.signals[signal!] ?? 0), output });
    });
  });
}

/** A fresh run: its checkout (ci/hardware-test.sh as given), home, temp and the global npm bin directory. */
async function workspace(testScript: string) {
  const dir = path.join(root, `run-${++runs}`);
  const checkout = path.join(dir, 'checkout');
  const npmBin = path.join(dir, 'npm-global', 'bin');
  for (const each of [path.join(checkout, 'ci'), npmBin, path.join(dir, 'home'), path.join(dir, 'temp'), path.join(dir, 'scripts')]) {
    await mkdir(each, { recursive: true });
  }
  await writeFile(path.join(checkout, 'ci', 'hardware-test.sh'), testScript);
  // What the install line installs, as far as the job can tell: a `paddock` command.
  const standIn = path.join(dir, 'paddock');
  await writeFile(standIn, `#!/bin/sh\nPADDOCK_FROM_SOURCE=1 exec '${process.execPath}' '${bin}' "$@"\n`);
  await chmod(standIn, 0o755);
  // Node as setup-node (or the image) gives it, alone: a `paddock` next to this Node (npm link) must not stand in for the install.
  const nodeBin = path.join(dir, 'node', 'bin');
  await mkdir(nodeBin, { recursive: true });
  await symlink(process.execPath, path.join(nodeBin, 'node'));
  const system = ['/usr/sbin', '/usr/bin', '/sbin', '/bin'];
  const stray = system.find((each) => existsSync(path.join(each, 'paddock')));
  if (stray) throw new Error(`${stray}/paddock would answer for the CLI before its install step; the test needs a PATH without it`);
  const env: NodeJS.ProcessEnv = {
    PATH: [npmBin, nodeBin, ...system].join(':'),
    HOME: path.join(dir, 'home'),
    LANG: 'C.UTF-8',
  };
  return {
    dir,
    checkout,
    env,
    id: `${Date.now()}${runs}`,
    /** The install line's stand-in: links the stand-in into the global bin directory. */
    install: `ln -s '${standIn}' '${path.join(npmBin, 'paddock')}' # the test's stand-in for: ${installLine}`,
    script: (name: string) => path.join(dir, 'scripts', name),
  };
}

type Workspace = Awaited<ReturnType<typeof workspace>>;

/** Refuses keys the emulation does not know, rather than ignoring them. */
function onlyKeys(what: string, value: object, allowed: string[]): void {
  const unknown = Object.keys(value).filter((key) => !allowed.includes(key));
  if (unknown.length > 0) throw new Error(`${what}: this test does not run ${unknown.join(', ')}; teach it before using it`);
}

// ---------------------------------------------------------------------------------------------
// GitHub Actions

interface StepRecord {
  name: string;
  /** Why it did not run: its condition, or a `uses:` step. */
  skipped?: string;
  code?: number;
  output?: string;
}

interface JobRecord {
  passed: boolean;
  steps: StepRecord[];
  log: string;
}

type ExpressionValue = string | number | boolean | null;

interface ExpressionContext {
  env: Record<string, string | undefined>;
  secrets: Record<string, string>;
  vars: Record<string, string>;
  github: Record<string, string>;
  failed: boolean;
}

/**
 * A GitHub Actions expression: contexts (env, secrets, vars, github), string, number and boolean
 * literals, `!`, `==`, `!=`, `&&`, `||`, parentheses and the status functions. Anything else, or a
 * secret or variable the test does not give, throws.
 */
function evaluate(source: string, context: ExpressionContext): ExpressionValue {
  const tokens = source.match(/\|\||&&|==|!=|!|\(|\)|'(?:[^']|'')*'|[A-Za-z_][\w.-]*|\d+(?:\.\d+)?|\S/g) ?? [];
  let at = 0;
  const peek = () => tokens[at];
  const take = (expected?: string) => {
    const token = tokens[at++];
    if (expected !== undefined && token !== expected) throw new Error(`expression "${source}": expected ${expected}, found ${token ?? 'the end'}`);
    return token;
  };
  const truthy = (value: ExpressionValue) => value !== null && value !== false && value !== '' && value !== 0;
  const primary = (): ExpressionValue => {
    const token = take();
    if (token === undefined) throw new Error(`expression "${source}" ends too soon`);
    if (token === '(') {
      const value = or();
      take(')');
      return value;
    }
    if (token.startsWith("'")) return token.slice(1, -1).replace(/''/g, "'");
    if (/^\d/.test(token)) return Number(token);
    if (token === 'true' || token === 'false') return token === 'true';
    if (token === 'null') return null;
    if (peek() === '(') {
      take('(');
      take(')');
      const status: Record<string, boolean> = { always: true, success: !context.failed, failure: context.failed, cancelled: false };
      if (!(token in status)) throw new Error(`expression "${source}": this test knows no function ${token}()`);
      return status[token];
    }
    const [name, ...keys] = token.split('.');
    if (keys.length !== 1) throw new Error(`expression "${source}": this test reads only CONTEXT.NAME, not ${token}`);
    const [key] = keys;
    if (name === 'env') return context.env[key] ?? '';
    if (name === 'secrets' || name === 'vars' || name === 'github') {
      const value = context[name][key];
      if (value === undefined) throw new Error(`expression "${source}": the test gives no ${name}.${key} (name it in examples/ci/README.md and here)`);
      return value;
    }
    throw new Error(`expression "${source}": this test knows no context ${name}`);
  };
  const comparison = (): ExpressionValue => {
    const left = primary();
    if (peek() !== '==' && peek() !== '!=') return left;
    const equal = take() === '==';
    const right = primary();
    return (String(left).toLowerCase() === String(right).toLowerCase()) === equal;
  };
  const unary = (): ExpressionValue => (peek() === '!' ? (take(), !truthy(unary())) : comparison());
  const and = (): ExpressionValue => {
    let value = unary();
    while (peek() === '&&') {
      take();
      const right = unary();
      value = truthy(value) ? right : value;
    }
    return value;
  };
  const or = (): ExpressionValue => {
    let value = and();
    while (peek() === '||') {
      take();
      const right = and();
      value = truthy(value) ? value : right;
    }
    return value;
  };
  const value = or();
  if (at !== tokens.length) throw new Error(`expression "${source}": unexpected ${tokens[at]}`);
  return value;
}

/** `${{ … }}` in a value replaced by what it evaluates to, as the runner does before the shell sees it. */
const substitute = (text: string, context: ExpressionContext) =>
  text.replace(/\$\{\{(.*?)\}\}/g, (_, expression: string) => String(evaluate(expression, context) ?? ''));

/** A step's `if:` as GitHub reads it: without a status function, it is `success() && (…)`. */
function condition(text: string | undefined, context: ExpressionContext): boolean {
  const source = (text ?? 'success()').trim().replace(/^\$\{\{([\s\S]*)\}\}$/, '$1');
  const value = evaluate(/\b(success|failure|always|cancelled)\(\)/.test(source) ? source : `success() && (${source})`, context);
  return value !== null && value !== false && value !== '' && value !== 0;
}

/** Lines of a GITHUB_ENV file: NAME=value, or NAME<<DELIMITER, the value's lines and DELIMITER. */
function environmentFile(text: string): Record<string, string> {
  const values: Record<string, string> = {};
  const lines = text.split('\n');
  for (let index = 0; index < lines.length; index++) {
    const line = lines[index];
    if (line === '') continue;
    const heredoc = /^([^=<]+)<<(.+)$/.exec(line);
    if (heredoc) {
      const end = lines.indexOf(heredoc[2], index + 1);
      if (end < 0) throw new Error(`GITHUB_ENV: ${heredoc[1]}<<${heredoc[2]} never ends`);
      values[heredoc[1]] = lines.slice(index + 1, end).join('\n');
      index = end;
      continue;
    }
    const equals = line.indexOf('=');
    if (equals <= 0) throw new Error(`GITHUB_ENV: "${line}" is neither NAME=value nor NAME<<DELIMITER`);
    values[line.slice(0, equals)] = line.slice(equals + 1);
  }
  return values;
}

/** One job of a workflow, its steps in order, as a GitHub-hosted runner runs them. */
async function runGitHubJob(t: ExecutionContext, workflow: Record<string, unknown>, jobId: string, space: Workspace): Promise<JobRecord> {
  onlyKeys('workflow', workflow, ['name', 'on', 'env', 'defaults', 'jobs', 'permissions', 'concurrency']);
  const job = (workflow.jobs as Record<string, Record<string, unknown>>)[jobId];
  onlyKeys(`job ${jobId}`, job, ['name', 'runs-on', 'timeout-minutes', 'env', 'defaults', 'steps', 'needs', 'permissions']);
  const shell = (defaults: unknown) => (defaults as { run?: { shell?: string } } | undefined)?.run?.shell;
  for (const defaults of [workflow.defaults, job.defaults]) {
    if (defaults !== undefined) onlyKeys('defaults', defaults as object, ['run']);
    if ((defaults as { run?: object } | undefined)?.run) onlyKeys('defaults.run', (defaults as { run: object }).run, ['shell']);
  }
  const context: ExpressionContext = {
    env: {},
    secrets: { PADDOCK_URL: api.url, PADDOCK_TOKEN: token },
    vars: { PADDOCK_CLI: 'https://paddock.lab.example/cli/paddock-0.1.0.tgz' },
    github: { run_id: space.id, run_attempt: '1', job: jobId, repository: 'lab/firmware', sha: 'c0ffee' },
    failed: false,
  };
  const evaluated = (values: unknown) =>
    Object.fromEntries(Object.entries((values ?? {}) as Record<string, unknown>).map(([key, value]) => [key, substitute(String(value), context)]));
  const runner: NodeJS.ProcessEnv = {
    ...space.env,
    CI: 'true',
    GITHUB_ACTIONS: 'true',
    GITHUB_WORKFLOW: String(workflow.name ?? 'workflow'),
    GITHUB_JOB: jobId,
    GITHUB_RUN_ID: space.id,
    GITHUB_RUN_NUMBER: String(runs),
    GITHUB_RUN_ATTEMPT: '1',
    GITHUB_REPOSITORY: 'lab/firmware',
    GITHUB_SHA: 'c0ffee',
    GITHUB_REF: 'refs/heads/main',
    GITHUB_WORKSPACE: space.checkout,
    RUNNER_OS: 'Linux',
    RUNNER_TEMP: path.join(space.dir, 'temp'),
  };
  // What steps see: the runner's, the workflow's and the job's env, and what earlier steps wrote to GITHUB_ENV.
  let env: Record<string, string | undefined> = { ...runner, ...evaluated(workflow.env), ...evaluated(job.env) };
  const steps: StepRecord[] = [];
  const log: string[] = [];
  for (const [index, step] of (job.steps as Record<string, unknown>[]).entries()) {
    onlyKeys(`step ${index + 1} of ${jobId}`, step, ['name', 'id', 'if', 'run', 'uses', 'with', 'env', 'shell', 'timeout-minutes']);
    const name = String(step.name ?? step.uses ?? step.run);
    context.env = env;
    if (!condition(step.if as string | undefined, context)) {
      steps.push({ name, skipped: `if: ${String(step.if ?? 'success()')}` });
      log.push(`## ${name}: skipped (${String(step.if ?? 'success()')})`);
      continue;
    }
    if (step.uses !== undefined) {
      const action = String(step.uses).split('@')[0];
      if (!(action in USES)) throw new Error(`${jobId}: uses ${String(step.uses)}: the test does not know what stands in for it; add it to USES`);
      steps.push({ name, skipped: `uses: ${USES[action]}` });
      log.push(`## ${name}: not run (${USES[action]})`);
      continue;
    }
    const stepShell = step.shell ?? shell(job.defaults) ?? shell(workflow.defaults);
    if (stepShell !== 'bash') throw new Error(`${jobId}: step "${name}" runs in ${String(stepShell ?? 'the default shell')}; the examples say shell: bash`);
    const files = Object.fromEntries(
      ['GITHUB_ENV', 'GITHUB_PATH', 'GITHUB_OUTPUT', 'GITHUB_STEP_SUMMARY'].map((file) => [file, space.script(`${index}-${file}`)]),
    );
    for (const file of Object.values(files)) await writeFile(file, '');
    const run = substitute(String(step.run), context);
    const script = run.trim() === installLine ? space.install : run;
    const outcome = await bash(script, space.script(`${jobId}-${index}.sh`), space.checkout, { ...env, ...evaluated(step.env), ...files });
    steps.push({ name, code: outcome.code, output: outcome.output });
    log.push(`## ${name} (exit ${outcome.code})\n${outcome.output}`);
    if (outcome.code !== 0) context.failed = true;
    env = { ...env, ...environmentFile(await readFile(files.GITHUB_ENV, 'utf8')) };
    const added = (await readFile(files.GITHUB_PATH, 'utf8')).split('\n').filter(Boolean);
    if (added.length > 0) env.PATH = [...added.reverse(), env.PATH].join(':');
  }
  const record = { passed: !context.failed, steps, log: log.join('\n') };
  t.log(
    `GitHub job ${jobId}: ${record.passed ? 'passed' : 'failed'}; ${steps.map((step) => `${step.name}: ${step.skipped ?? `exit ${step.code}`}`).join('; ')}`,
  );
  return record;
}

// ---------------------------------------------------------------------------------------------
// GitLab CI

interface GitLabRecord {
  passed: boolean;
  /** before_script and script: one shell. */
  main: Outcome;
  /** after_script: a shell of its own, run whatever happened. */
  after?: Outcome;
  log: string;
}

const lines = (value: unknown): string[] => (value === undefined ? [] : (value as unknown[]).flat(10).map(String));

/** One job of a pipeline as a GitLab runner runs it: before_script and script in one shell, then after_script in another. */
async function runGitLabJob(t: ExecutionContext, pipeline: Record<string, unknown>, jobName: string, space: Workspace): Promise<GitLabRecord> {
  for (const key of ['include', 'workflow', 'before_script', 'after_script', 'image', 'services'])
    if (key in pipeline) throw new Error(`the pipeline's top-level ${key}: this test does not run it; teach it before using it`);
  const defaults = (pipeline.default ?? {}) as Record<string, unknown>;
  onlyKeys('default', defaults, ['image', 'before_script', 'after_script', 'timeout', 'artifacts', 'tags', 'interruptible']);
  const job = { ...defaults, ...(pipeline[jobName] as Record<string, unknown>) };
  onlyKeys(`job ${jobName}`, job, ['stage', 'image', 'variables', 'before_script', 'script', 'after_script', 'artifacts', 'timeout', 'tags', 'interruptible']);
  const yamlVariables = { ...(pipeline.variables as object), ...(job.variables as object) } as Record<string, unknown>;
  for (const [name, value] of Object.entries(yamlVariables))
    if (typeof value !== 'string' || value.includes('$')) throw new Error(`variable ${name}: this test passes plain strings only (no expansion, no options)`);
  const env: NodeJS.ProcessEnv = {
    ...space.env,
    CI: 'true',
    GITLAB_CI: 'true',
    CI_JOB_ID: space.id,
    CI_JOB_NAME: jobName,
    CI_JOB_STAGE: String(job.stage ?? 'test'),
    CI_PIPELINE_ID: String(runs),
    CI_PROJECT_DIR: space.checkout,
    CI_PROJECT_PATH: 'lab/firmware',
    CI_COMMIT_SHA: 'c0ffee',
    CI_COMMIT_REF_NAME: 'main',
    ...(yamlVariables as Record<string, string>),
    // Project CI/CD variables (Settings → CI/CD → Variables) come over the file's.
    PADDOCK_URL: api.url,
    PADDOCK_TOKEN: token,
    PADDOCK_CLI: 'https://paddock.lab.example/cli/paddock-0.1.0.tgz',
  };
  const replaced = (entries: string[]) => entries.map((line) => (line.trim() === installLine ? space.install : line));
  const mainScript = replaced([...lines(job.before_script), ...lines(job.script)]);
  if (mainScript.length === 0) throw new Error(`${jobName} has no script`);
  const main = await bash(mainScript.join('\n'), space.script(`${jobName}.sh`), space.checkout, env);
  const status = main.code === 0 ? 'success' : 'failed';
  const afterScript = replaced(lines(job.after_script));
  const after = afterScript.length
    ? await bash(afterScript.join('\n'), space.script(`${jobName}-after.sh`), space.checkout, { ...env, CI_JOB_STATUS: status })
    : undefined;
  const log = [`## script (exit ${main.code})\n${main.output}`, ...(after ? [`## after_script (exit ${after.code})\n${after.output}`] : [])].join('\n');
  t.log(`GitLab job ${jobName}: ${status}; script exit ${main.code}${after ? `, after_script exit ${after.code}` : ''}`);
  return { passed: main.code === 0, main, ...(after ? { after } : {}), log };
}

// ---------------------------------------------------------------------------------------------
// What every run must leave behind

/** The reservations the job made (from its log) were released by it, and every machine is available again. */
async function machinesGivenBack(t: ExecutionContext, log: string): Promise<string[]> {
  const ids = [...new Set(log.match(/\br-[0-9a-f]{12}\b/g) ?? [])];
  t.true(ids.length > 0, `the job's log names its reservation:\n${log}`);
  const reservation = async (id: string) => (await admin.get(`v1/reservations/${id}`)).body as ReservationView;
  await waitFor(async () => (await Promise.all(ids.map(reservation))).every((view) => !live(view)), 60_000, `${ids.join(', ')} ended`);
  for (const id of ids) t.is((await reservation(id)).state, 'released', `${id} was released by the job, not left to its lease`);
  const machines = async () => (await admin.get('v1/machines')).body as MachineView[];
  await waitFor(async () => (await machines()).every((machine) => machine.state === 'available'), 60_000, 'every machine available').catch(() => undefined);
  t.deepEqual(
    (await machines()).map((machine) => `${machine.name}: ${machine.state}`),
    hosts.map((_, index) => `lab-${index + 1}: available`),
    'every machine is available again',
  );
  const left = ((await admin.get('v1/reservations', { searchParams: { all: 1 } })).body as ReservationView[]).filter(live);
  t.deepEqual(
    left.map((view) => view.id),
    [],
    'no reservation is left',
  );
  t.false(log.includes(token), 'the token is never printed');
  return ids;
}

const tenants = () => hosts.map((host) => host.tenant);
/** The tenants (the machines' logins) the stand-in test said it ran as. */
const ranAs = (output: string) => [...output.matchAll(/^hardware test on \S+ as (\S+)/gm)].map((match) => match[1].replace(/:$/, ''));

const readExample = async (file: string) => parse(await readFile(path.join(examples, file), 'utf8')) as Record<string, unknown>;
const standInTest = () => readFile(path.join(examples, 'hardware-test.sh'), 'utf8');

// ---------------------------------------------------------------------------------------------
// The tests

test('the tests below run every job of both examples', async (t) => {
  const workflow = await readExample('github-actions.yml');
  t.deepEqual(Object.keys(workflow.jobs as object).sort(), ['one-step', 'steps']);
  const pipeline = await readExample('gitlab-ci.yml');
  const jobs = Object.keys(pipeline).filter((key) => !['default', 'variables', 'stages'].includes(key) && !key.startsWith('.'));
  t.deepEqual(jobs.sort(), ['hardware-test', 'hardware-test-one-step']);
  for (const file of ['github-actions.yml', 'gitlab-ci.yml']) {
    const text = await readFile(path.join(examples, file), 'utf8');
    for (const name of ['PADDOCK_URL', 'PADDOCK_TOKEN', 'PADDOCK_CLI']) t.regex(text, new RegExp(`^# .*${name}`, 'm'), `${file} names ${name} in its header`);
  }
});

test.serial('GitHub Actions, steps: reserve two machines, test on each, release in the last step', async (t) => {
  t.timeout(300_000);
  const space = await workspace(await standInTest());
  const job = await runGitHubJob(t, await readExample('github-actions.yml'), 'steps', space);
  t.true(job.passed, job.log);
  t.deepEqual(
    job.steps.map((step) => [step.name, step.skipped ? 'skipped' : step.code]),
    [
      ['actions/checkout@v4', 'skipped'],
      ['actions/setup-node@v4', 'skipped'],
      ['Install the Paddock CLI', 0],
      ['Reserve two machines', 0],
      ['Test on each machine', 0],
      ['Show the reservation after a failure', 'skipped'],
      ['Release the machines', 0],
      ['actions/upload-artifact@v4', 'skipped'],
    ],
  );
  const tested = job.steps.find((step) => step.name === 'Test on each machine')!;
  t.deepEqual(ranAs(tested.output!).sort(), tenants().sort(), `the test ran on both machines, as their logins:\n${tested.output}`);
  for (const member of ['main.0', 'main.1']) {
    const report = await readFile(path.join(space.checkout, 'reports', `${member}.log`), 'utf8');
    t.regex(report, /hardware test passed/, `reports/${member}.log`);
  }
  const [id] = await machinesGivenBack(t, job.log);
  t.is(JSON.parse(await readFile(path.join(space.checkout, 'reservation.json'), 'utf8')).id, id);
});

test.serial('GitHub Actions, steps, the test fails: the job fails, the failure step shows the reservation, the release step still releases', async (t) => {
  t.timeout(300_000);
  const job = await runGitHubJob(t, await readExample('github-actions.yml'), 'steps', await workspace(failingTest));
  t.false(job.passed, job.log);
  const step = (name: string) => job.steps.find((each) => each.name === name)!;
  t.is(step('Test on each machine').code, 3, job.log);
  t.is(ranAs(step('Test on each machine').output!).length, 1, 'the loop stopped at the first failure');
  t.true(tenants().includes(ranAs(step('Test on each machine').output!)[0]), 'the failing test ran on a machine');
  t.is(step('Show the reservation after a failure').code, 0, job.log);
  t.regex(step('Show the reservation after a failure').output!, /r-[0-9a-f]{12}\s+ready/);
  t.is(step('Release the machines').code, 0, job.log);
  t.regex(step('Release the machines').output!, /r-[0-9a-f]{12}: (releasing|released)/);
  t.regex(step('actions/upload-artifact@v4').skipped!, /^uses:/, 'the upload is if: always() as well');
  await machinesGivenBack(t, job.log);
});

test.serial('GitHub Actions, one-step: paddock run reserves, tests and releases', async (t) => {
  t.timeout(300_000);
  const job = await runGitHubJob(t, await readExample('github-actions.yml'), 'one-step', await workspace(await standInTest()));
  t.true(job.passed, job.log);
  const tested = job.steps.at(-1)!;
  t.is(tested.name, 'Test on a machine');
  t.is(ranAs(tested.output!).length, 1, tested.output);
  t.true(tenants().includes(ranAs(tested.output!)[0]), `the test ran on a machine, as its login:\n${tested.output}`);
  t.regex(tested.output!, /hardware test passed/);
  await machinesGivenBack(t, job.log);
});

test.serial('GitHub Actions, one-step, the test fails: the job fails with its status and paddock run still releases', async (t) => {
  t.timeout(300_000);
  const job = await runGitHubJob(t, await readExample('github-actions.yml'), 'one-step', await workspace(failingTest));
  t.false(job.passed, job.log);
  const tested = job.steps.at(-1)!;
  t.is(tested.code, 3, job.log);
  t.true(tenants().includes(ranAs(tested.output!)[0]), job.log);
  t.regex(tested.output!, /r-[0-9a-f]{12}: (releasing|released)/);
  await machinesGivenBack(t, job.log);
});

test.serial('GitLab CI, hardware-test: reserve in before_script, test in script, release in after_script', async (t) => {
  t.timeout(300_000);
  const space = await workspace(await standInTest());
  const job = await runGitLabJob(t, await readExample('gitlab-ci.yml'), 'hardware-test', space);
  t.true(job.passed, job.log);
  t.deepEqual(ranAs(job.main.output).sort(), tenants().sort(), `the test ran on both machines, as their logins:\n${job.main.output}`);
  for (const member of ['main.0', 'main.1']) t.regex(await readFile(path.join(space.checkout, 'reports', `${member}.log`), 'utf8'), /hardware test passed/);
  t.is(job.after?.code, 0, job.log);
  t.regex(job.after!.output, /r-[0-9a-f]{12}: (releasing|released)/, 'after_script released');
  t.notRegex(job.after!.output, /\bready\b/, 'and showed nothing: the job passed');
  await machinesGivenBack(t, job.log);
});

test.serial('GitLab CI, hardware-test, the test fails: the job fails, after_script shows the reservation and releases it', async (t) => {
  t.timeout(300_000);
  const job = await runGitLabJob(t, await readExample('gitlab-ci.yml'), 'hardware-test', await workspace(failingTest));
  t.false(job.passed, job.log);
  t.is(job.main.code, 3, job.log);
  t.true(tenants().includes(ranAs(job.main.output)[0]), job.log);
  t.is(job.after?.code, 0, job.log);
  t.regex(job.after!.output, /r-[0-9a-f]{12}\s+ready/, 'after_script showed the reservation (CI_JOB_STATUS=failed)');
  t.regex(job.after!.output, /r-[0-9a-f]{12}: (releasing|released)/, 'and released it');
  await machinesGivenBack(t, job.log);
});

test.serial('GitLab CI, hardware-test-one-step: paddock run reserves, tests and releases', async (t) => {
  t.timeout(300_000);
  const job = await runGitLabJob(t, await readExample('gitlab-ci.yml'), 'hardware-test-one-step', await workspace(await standInTest()));
  t.true(job.passed, job.log);
  t.is(ranAs(job.main.output).length, 1, job.log);
  t.true(tenants().includes(ranAs(job.main.output)[0]), `the test ran on a machine, as its login:\n${job.main.output}`);
  t.regex(job.main.output, /hardware test passed/);
  t.is(job.after, undefined);
  await machinesGivenBack(t, job.log);
});

test.serial('GitLab CI, hardware-test-one-step, the test fails: the job fails with its status and paddock run still releases', async (t) => {
  t.timeout(300_000);
  const job = await runGitLabJob(t, await readExample('gitlab-ci.yml'), 'hardware-test-one-step', await workspace(failingTest));
  t.false(job.passed, job.log);
  t.is(job.main.code, 3, job.log);
  t.true(tenants().includes(ranAs(job.main.output)[0]), job.log);
  t.regex(job.main.output, /r-[0-9a-f]{12}: (releasing|released)/);
  await machinesGivenBack(t, job.log);
});

test('the install line is the one the test replaces, in every job, before any paddock command', async (t) => {
  const workflow = await readExample('github-actions.yml');
  for (const [id, job] of Object.entries(workflow.jobs as Record<string, { steps: { run?: string }[] }>)) {
    const runs = job.steps.filter((step) => step.run !== undefined).map((step) => step.run!.trim());
    t.is(runs[0], installLine, `${id}: the first run step installs the CLI`);
    t.false(runs.slice(1).includes(installLine));
  }
  const pipeline = await readExample('gitlab-ci.yml');
  for (const name of ['hardware-test', 'hardware-test-one-step']) {
    const job = pipeline[name] as Record<string, unknown>;
    t.is([...lines(job.before_script), ...lines(job.script)][0].trim(), installLine, `${name}: the first line installs the CLI`);
  }
});
