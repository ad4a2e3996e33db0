// What a runner host and the API say to each other, and what a job script finds in its environment;
// protocol/api.ts re-exports them.
import type { RepositoryRules } from './repository.js';
//
// The runner host pulls (no inbound connection, so it can sit behind NAT):
//   POST /v1/runner/claim            { runner, slots, wait }       → { runs: RunTask[] }   (long-poll)
//   POST /v1/runner/heartbeat        { runner, runs: [ids] }       → { cancel: [ids] }
//   POST /v1/runner/runs/:id/started { runner }
//   POST /v1/runner/runs/:id/log     the output, as text/plain, appended in order (?offset= where it starts in what was sent)
//   POST /v1/runner/runs/:id/finished RunFinish
// All with a token of role `runner`.

/** queued → assigned (a runner host took it) → running → passed | failed | timed_out | cancelled */
export const runStates = ['queued', 'assigned', 'running', 'passed', 'failed', 'timed_out', 'cancelled'] as const;
export type RunState = (typeof runStates)[number];
export const endedRunStates: readonly RunState[] = ['passed', 'failed', 'timed_out', 'cancelled'];

/** One run handed to a runner host. */
export interface RunTask {
  /** `run-` and 12 hex digits; also the name of the run's token. */
  id: string;
  job: string;
  /** What `git clone` takes: a URL or a path on the runner host. */
  repository: string;
  /** The API's repository rules, local roots filled in for the job's owner: the checkout refuses what they refuse. */
  repositoryRules: RepositoryRules;
  ref: string;
  /** The commit the ref pointed at when the run was made: what is checked out. */
  commit: string;
  /** The script's path inside the repository. */
  script: string;
  parameters: Record<string, string>;
  timeLimitSeconds: number;
  /** A token made for this run alone: every reservation made with it is released when the run ends. */
  token: string;
}

/** How a run ended, as the runner host reports it. */
export interface RunFinish {
  runner: string;
  outcome: 'passed' | 'failed' | 'timed_out' | 'cancelled';
  exitCode?: number;
  signal?: string;
  /** Why it failed when the script could not run (no such script, checkout failed, …). */
  reason?: string;
  /** `infrastructure` when the runner host, not the script, is at fault (checkout failed, say). */
  fault?: 'infrastructure' | 'request';
  /** What the script wrote to $PADDOCK_RESULT: JSON if it parses, else the text. */
  result?: unknown;
}

/**
 * The environment a job script runs with, besides PATH and HOME:
 * - PADDOCK_URL, PADDOCK_TOKEN: the API and the run's own token (the client library reads both);
 * - PADDOCK_RUN_ID, PADDOCK_JOB, PADDOCK_COMMIT;
 * - PADDOCK_RESULT: a file; what the script writes there (JSON, at most 1 MiB) is the run's result;
 * - PADDOCK_PARAM_<NAME>: each parameter, its name upper-cased with non-alphanumerics as `_`.
 */
export function scriptEnvironment(
  task: Pick<RunTask, 'id' | 'job' | 'commit' | 'parameters' | 'token'>,
  url: string,
  resultFile: string,
): Record<string, string> {
  const env: Record<string, string> = {
    PADDOCK_URL: url,
    PADDOCK_TOKEN: task.token,
    PADDOCK_RUN_ID: task.id,
    PADDOCK_JOB: task.job,
    PADDOCK_COMMIT: task.commit,
    PADDOCK_RESULT: resultFile,
  };
  for (const [name, value] of Object.entries(task.parameters)) env[`PADDOCK_PARAM_${name.toUpperCase().replace(/[^A-Z0-9]/g, '_')}`] = value;
  return env;
}
