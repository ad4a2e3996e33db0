// `paddock jobs …` (add, ls, run, runs, show, logs [-f], cancel, rm, reproduce, runners) and `paddock runner`
// (a runner host).
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Command } from 'commander';
import type { JobView, RunView } from '../protocol/api.js';
import { Paddock } from '../client/index.js';
import { PaddockError } from '../client/errors.js';
import { logFormatOption, logLevelOption, processLog } from './log-options.js';
import { metricsAddress, metricsListenOption } from './metrics.js';
import { duration, durationText } from './duration.js';

const ended = (run: RunView) => ['passed', 'failed', 'timed_out', 'cancelled'].includes(run.state);

/** `name=value` pairs from repeated --param options. */
function collectParam(value: string, previous: Record<string, string>): Record<string, string> {
  const at = value.indexOf('=');
  if (at <= 0) throw new PaddockError(`--param takes NAME=VALUE, not ${JSON.stringify(value)}`, 'invalid_request');
  return { ...previous, [value.slice(0, at)]: value.slice(at + 1) };
}

function describeRun(run: RunView): string {
  const lines = [
    `${run.id}: ${run.state}${run.exitCode !== undefined ? ` (exit code ${run.exitCode})` : ''}${run.signal ? ` (signal ${run.signal})` : ''}`,
    `  job ${run.job}: ${run.repository} ${run.ref} at ${run.commit}, script ${run.script}`,
  ];
  if (Object.keys(run.parameters).length > 0)
    lines.push(
      `  parameters: ${Object.entries(run.parameters)
        .map(([name, value]) => `${name}=${value}`)
        .join(' ')}`,
    );
  if (run.runner) lines.push(`  runner host ${run.runner}`);
  lines.push(`  created ${run.createdAt}${run.startedAt ? `, started ${run.startedAt}` : ''}${run.endedAt ? `, ended ${run.endedAt}` : ''}`);
  if (run.reason) lines.push(`  ${run.fault === 'infrastructure' ? 'infrastructure: ' : ''}${run.reason}`);
  if (run.result !== undefined) lines.push(`  result: ${JSON.stringify(run.result)}`);
  return lines.join('\n');
}

/** PADDOCK_URL and PADDOCK_TOKEN, which the client library has already checked. */
function serverFromEnvironment(): { url: string; token: string } {
  return { url: process.env.PADDOCK_URL!, token: process.env.PADDOCK_TOKEN! };
}

const exitCodeOf = (run: RunView) => (run.state === 'passed' ? 0 : run.state === 'timed_out' ? 124 : run.state === 'cancelled' ? 130 : 1);

export function addJobCommands(cli: Command, client: () => Paddock, print: (value: unknown) => void, table: (rows: string[][]) => string): void {
  const jobs = cli.command('jobs').description('job scripts in git repositories, run on runner hosts');

  jobs
    .command('add')
    .description('define a job: a script in a git repository')
    .argument('<name>')
    .requiredOption('--repo <url>', 'the git repository (a URL or a path the runner hosts can read)')
    .requiredOption('--script <path>', "the script's path in the repository")
    .option('--ref <ref>', 'branch, tag or commit', 'main')
    .option('--param <name=value>', 'a parameter (repeat for more)', collectParam, {})
    .option('--time-limit <duration>', 'stop a run after this long, e.g. 30m (at most 24h)', durationText, '1h')
    .option('--json', 'JSON')
    .action(async (name: string, options) => {
      const job = await client().jobs.add({
        name,
        repository: options.repo,
        ref: options.ref,
        script: options.script,
        parameters: options.param,
        timeLimit: options.timeLimit,
      });
      print(options.json ? job : `${job.name} (${job.id}): ${job.repository} ${job.ref}, script ${job.script}`);
    });

  jobs
    .command('ls')
    .description('your jobs')
    .option('--all', "every user's (admins)")
    .option('--json', 'JSON')
    .action(async (options) => {
      const list = await client().jobs.list({ all: options.all });
      if (options.json) return print(list);
      if (list.length === 0) return print('no jobs');
      print(
        table([
          ['JOB', 'OWNER', 'REPOSITORY', 'REF', 'SCRIPT', 'LIMIT'],
          ...list.map((job: JobView) => [job.name, job.owner, job.repository, job.ref, job.script, `${job.timeLimitSeconds}s`]),
        ]),
      );
    });

  jobs
    .command('run')
    .description('run a job at the commit its ref points at now; --wait follows its output until it ends')
    .argument('<job>', 'name or id')
    .option('--param <name=value>', 'override a parameter (repeat for more)', collectParam, {})
    .option('--wait', "follow the output and exit with the run's outcome (0 passed, 1 failed, 124 timed out, 130 cancelled)")
    .option('--json', 'JSON')
    .action(async (job: string, options) => {
      const paddock = client();
      const run = await paddock.jobs.run(job, options.param);
      if (!options.wait) return print(options.json ? run : `${run.id}: queued (${run.job} at ${run.commit.slice(0, 12)})`);
      if (!options.json) {
        console.error(`${run.id}: queued (${run.job} at ${run.commit.slice(0, 12)}); following its output`);
        await paddock.jobs.log(run.id, process.stdout, { follow: true });
      }
      const final = await paddock.jobs.wait(run.id);
      print(options.json ? final : describeRun(final));
      process.exitCode = exitCodeOf(final);
    });

  jobs
    .command('runs')
    .description('runs, newest first')
    .argument('[job]', 'only the runs of this job')
    .option('--all', "every user's (admins)")
    .option('--json', 'JSON')
    .action(async (job: string | undefined, options) => {
      const list = await client().jobs.runs({ ...(job ? { job } : {}), all: options.all });
      if (options.json) return print(list);
      if (list.length === 0) return print('no runs');
      print(
        table([
          ['RUN', 'JOB', 'STATE', 'EXIT', 'COMMIT', 'CREATED'],
          ...list.map((run) => [run.id, run.job, run.state, run.exitCode === undefined ? '-' : String(run.exitCode), run.commit.slice(0, 12), run.createdAt]),
        ]),
      );
    });

  jobs
    .command('show')
    .description('a run (run-…), or a job with its latest runs')
    .argument('<id>', 'a run id, or a job name or id')
    .option('--json', 'JSON')
    .action(async (id: string, options) => {
      const paddock = client();
      if (id.startsWith('run-')) {
        const run = await paddock.jobs.getRun(id);
        return print(options.json ? run : describeRun(run));
      }
      const job = await paddock.jobs.get(id);
      const runs = (await paddock.jobs.runs({ job: job.id })).slice(0, 10);
      if (options.json) return print({ ...job, runs });
      print(
        [
          `${job.name} (${job.id}), owner ${job.owner}: ${job.repository} ${job.ref}, script ${job.script}, time limit ${job.timeLimitSeconds}s`,
          ...(Object.keys(job.parameters).length > 0
            ? [
                `  parameters: ${Object.entries(job.parameters)
                  .map(([name, value]) => `${name}=${value}`)
                  .join(' ')}`,
              ]
            : []),
          ...runs.map((run) => `  ${run.id} ${run.state}${run.exitCode !== undefined ? ` (exit code ${run.exitCode})` : ''} ${run.createdAt}`),
        ].join('\n'),
      );
    });

  jobs
    .command('logs')
    .description("a run's output; -f follows it until the run ends")
    .argument('<run>')
    .option('-f, --follow', 'keep streaming new output')
    .action(async (run: string, options) => {
      await client().jobs.log(run, process.stdout, { follow: options.follow });
    });

  jobs
    .command('cancel')
    .description('cancel a run: its script is stopped and its reservations released')
    .argument('<run>')
    .option('--json', 'JSON')
    .action(async (id: string, options) => {
      const run = await client().jobs.cancel(id);
      print(options.json ? run : `${run.id}: ${ended(run) ? run.state : 'cancel requested'}`);
    });

  jobs
    .command('rm')
    .description('delete a job (its runs stay listed)')
    .argument('<job>')
    .action(async (job: string) => {
      await client().jobs.remove(job);
      print(`${job}: deleted`);
    });

  jobs
    .command('reproduce')
    .description(
      'run a run again here: the same commit, script and parameters, with a token made for the reproduction (never yours); what it reserves is released when it ends. The script runs as you on this machine: reproduce only code you trust',
    )
    .argument('<run>')
    .option('--keep <dir>', 'check out into this directory and keep it')
    .option('--allow-other-user', "reproduce another user's run (admins): their script runs on this machine as you")
    .action(async (id: string, options) => {
      const paddock = client();
      const { url } = serverFromEnvironment();
      const reproduction = await paddock.jobs.reproduce(id, { allowOtherUser: Boolean(options.allowOtherUser) });
      const { task } = reproduction;
      const { execute } = await import('../runner-host/execute.js');
      const workDir = options.keep ? path.resolve(options.keep) : mkdtempSync(path.join(os.tmpdir(), 'paddock-reproduce-'));
      const controller = new AbortController();
      process.once('SIGINT', () => controller.abort(new Error('interrupted')));
      console.error(
        `${task.id}: reproducing ${task.job} at ${task.commit.slice(0, 12)} (${task.script}) in ${workDir}, token ${reproduction.id} until ${reproduction.expiresAt}`,
      );
      try {
        const outcome = await execute({
          task,
          url,
          workDir: options.keep ? workDir : path.join(workDir, 'run'),
          onOutput: (chunk) => process.stdout.write(chunk),
          signal: controller.signal,
        });
        print(`${outcome.outcome}${outcome.exitCode !== undefined ? ` (exit code ${outcome.exitCode})` : ''}${outcome.reason ? `: ${outcome.reason}` : ''}`);
        if (outcome.result !== undefined) print(`result: ${JSON.stringify(outcome.result)}`);
        process.exitCode = outcome.outcome === 'passed' ? 0 : outcome.outcome === 'timed_out' ? 124 : 1;
      } finally {
        // As on a runner host, nothing the reproduction reserved outlives it, and its token goes.
        await paddock.jobs
          .endReproduction(reproduction.id)
          .catch((error: unknown) =>
            console.error(`${reproduction.id}: could not end the reproduction (${(error as Error).message}); it ends at ${reproduction.expiresAt}`),
          );
        if (!options.keep) rmSync(workDir, { recursive: true, force: true });
      }
    });

  jobs
    .command('runners')
    .description('the runner hosts heard from, when last, and the runs they hold (admins)')
    .option('--json', 'JSON')
    .action(async (options) => {
      const list = await client().jobs.runners();
      if (options.json) return print(list);
      if (list.length === 0) return print('no runner host has been heard from');
      print(
        table([
          ['RUNNER', 'ALIVE', 'LAST SEEN', 'RUNS'],
          ...list.map((each) => [each.name, each.alive ? 'yes' : 'no', each.lastSeen, each.runs.join(',') || '-']),
        ]),
      );
    });

  cli
    .command('runner')
    .description('run a runner host until a signal stops it: it pulls runs from PADDOCK_URL with a token of role runner')
    .option('--name <name>', "this runner host's name (default: its token's name)")
    .option('--token-file <file>', 'read the token from this file (owned by this user, mode 0600) rather than PADDOCK_TOKEN')
    .option('--slots <n>', 'runs at once', '4')
    .option('--work <dir>', 'where runs are checked out', path.join(os.tmpdir(), 'paddock-runner'))
    .option('--run-uids <first-last>', 'the uids runs execute as, one per run at a time: set aside for this alone (default 61000-61999)')
    .option('--single-user', 'a personal runner host: scripts run as this user and can read its token and each other; isolates nothing')
    .option('--heartbeat <duration>', 'time between heartbeats, e.g. 5s', duration, 5)
    .addOption(logFormatOption())
    .addOption(logLevelOption())
    .addOption(metricsListenOption())
    .action(async (options) => {
      const { Runner } = await import('../runner-host/runner.js');
      const { prepareHost, SetupError } = await import('../runner-host/setup.js');
      const { workerToken, TokenError } = await import('../protocol/worker.js');
      const { RunUsers, IsolationError, defaultRunUids } = await import('../runner-host/run-users.js');
      options.runUids ??= defaultRunUids;
      const slots = Math.max(1, Number(options.slots));
      const workRoot = path.resolve(options.work);
      let token: string;
      let users: InstanceType<typeof RunUsers> | undefined;
      try {
        token = await workerToken(options.tokenFile);
        users = options.singleUser ? undefined : RunUsers.parse(options.runUids);
        if (users && users.size < slots)
          throw new SetupError(`--run-uids ${options.runUids} has ${users.size} uids for ${slots} slots: give each slot one at least`);
        await prepareHost(workRoot, users);
      } catch (error) {
        if (error instanceof SetupError || error instanceof IsolationError || error instanceof TokenError)
          throw new PaddockError(`runner host: ${error.message}`, 'configuration');
        throw error;
      }
      const paddock = new Paddock({ token }); // checks PADDOCK_URL
      const url = process.env.PADDOCK_URL!;
      const me = await paddock.whoami();
      if (me.role !== 'runner' && me.role !== 'admin')
        throw new PaddockError(`a runner host needs a token of role runner; this one is ${me.role} (paddock token create NAME --role runner)`, 'forbidden');
      options.name ??= me.name;
      const log = (await processLog(options, 'runner')).child({ runner: options.name });
      const runner = new Runner({
        url,
        token,
        name: options.name,
        workRoot,
        slots,
        users,
        heartbeatMs: Math.max(0.1, Number(options.heartbeat)) * 1000,
        metrics: options.metricsListen !== undefined,
        log,
      });
      const { serveMetrics } = await import('../protocol/metrics.js');
      const metrics = runner.metrics && options.metricsListen ? await serveMetrics(runner.metrics.registry, metricsAddress(options.metricsListen)) : undefined;
      runner.start();
      const isolation = users
        ? `each run as a uid of its own from ${options.runUids}, in a PID namespace of its own`
        : 'SINGLE-USER: scripts run as this user, can read its token and each other, and are not isolated';
      log.info({ url: paddock.http.where, slots, isolation }, 'pulling runs'); // no user:password in a log
      if (metrics) log.info({ url: metrics.url }, 'metrics served');
      const stop = () => {
        log.info('stopping');
        void runner
          .stop()
          .then(() => metrics?.close())
          .then(() => process.exit(0));
      };
      process.once('SIGTERM', stop);
      process.once('SIGINT', stop);
    });
}
