// Jobs and runs in the client library: define a job (a script in a git repository), run it, list
// and show runs, wait for one to end, read or follow its output, cancel it.
import type { Writable } from 'node:stream';
import type { JobView, ReproductionView, RunnerView, RunView } from '../protocol/api.js';
import type { Http } from './http.js';

export interface JobDefinition {
  name: string;
  /** What `git clone` takes on the runner hosts: a URL or a path. */
  repository: string;
  /** Branch, tag or commit (default main). */
  ref?: string;
  /** The script's path in the repository. */
  script: string;
  parameters?: Record<string, string>;
  /** A duration such as 30m (default 1h). */
  timeLimit?: string | number;
}

const runPath = (id: string) => `v1/runs/${encodeURIComponent(id)}`;

export class Jobs {
  constructor(private readonly http: Http) {}

  add(job: JobDefinition): Promise<JobView> {
    return this.http.post('v1/jobs', job);
  }

  async list(options: { all?: boolean } = {}): Promise<JobView[]> {
    return (await this.http.getAll<JobView>('v1/jobs', options.all ? { all: 1 } : {})).items;
  }

  /** A job by id or name. */
  get(job: string): Promise<JobView> {
    return this.http.get(`v1/jobs/${encodeURIComponent(job)}`);
  }

  async remove(job: string): Promise<void> {
    await this.http.delete(`v1/jobs/${encodeURIComponent(job)}`);
  }

  /** Queues a run of the job at the commit its ref points at now; parameters override the job's. */
  run(job: string, parameters: Record<string, string> = {}): Promise<RunView> {
    return this.http.post(`v1/jobs/${encodeURIComponent(job)}/runs`, { parameters });
  }

  async runs(options: { job?: string; all?: boolean } = {}): Promise<RunView[]> {
    const query: Record<string, string | number> = {};
    if (options.job) query.job = options.job;
    if (options.all) query.all = 1;
    return (await this.http.getAll<RunView>('v1/runs', query)).items;
  }

  getRun(id: string): Promise<RunView> {
    return this.http.get(runPath(id));
  }

  /**
   * A reproduction of a run: its task, with a token made for the reproduction alone (never give a
   * script your own). Another user's run is refused (other_users_run) unless `allowOtherUser`.
   * End it with endReproduction: what it reserved is released and its token revoked.
   */
  reproduce(id: string, options: { allowOtherUser?: boolean } = {}): Promise<ReproductionView> {
    return this.http.post(`${runPath(id)}/reproductions`, { allowOtherUser: options.allowOtherUser ?? false });
  }

  /** Ends a reproduction; resolves with the reservations released. */
  async endReproduction(id: string): Promise<string[]> {
    return ((await this.http.delete(`v1/reproductions/${encodeURIComponent(id)}`)) as { released: string[] }).released;
  }

  /** Resolves with the run once it has ended (long-polls), or as it is when `timeoutSeconds` pass. */
  async wait(id: string, options: { timeoutSeconds?: number } = {}): Promise<RunView> {
    const deadline = Date.now() + (options.timeoutSeconds ?? Infinity) * 1000;
    const ended = (run: RunView) => ['passed', 'failed', 'timed_out', 'cancelled'].includes(run.state);
    for (;;) {
      const left = Math.max(0, Math.min(60, (deadline - Date.now()) / 1000));
      const run = await this.http.get<RunView>(runPath(id), { wait: 'end', timeout: Math.floor(left) }, left);
      if (ended(run) || Date.now() >= deadline) return run;
    }
  }

  /**
   * Writes the run's output into `target`; with `follow`, keeps streaming until the run ends, taking
   * a broken connection up again where it stopped.
   */
  async log(id: string, target: Writable, options: { follow?: boolean } = {}): Promise<void> {
    if (options.follow) await this.http.follow(`${runPath(id)}/log`, new URLSearchParams({ follow: '1' }), target);
    else await this.http.download(`${runPath(id)}/log`, target);
  }

  /** The runner hosts heard from (admins). */
  async runners(): Promise<RunnerView[]> {
    return (await this.http.getAll<RunnerView>('v1/runners')).items;
  }

  cancel(id: string): Promise<RunView> {
    return this.http.post(`${runPath(id)}/cancel`);
  }
}
