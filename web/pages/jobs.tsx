// Jobs and their runs; one run with its output, live while it runs, and a cancel.
import { useEffect, useState } from 'preact/hooks';
import type { Caller, JobView, RunView } from '../../protocol/api.js';
import { api, describe, follow, relative } from '../api.js';
import { Action, Badge, Columns, Loading, usePoll } from '../ui.js';

const live = (run: RunView) => run.state === 'queued' || run.state === 'running';

export function Jobs({ caller }: { caller: Caller }) {
  // Yours; an admin's page shows everyone's.
  const all = caller.role === 'admin' ? 'all=1&' : '';
  const jobs = usePoll(() => api.get<JobView[]>(`/v1/jobs?${all}limit=100`), 10_000);
  const runs = usePoll(() => api.get<RunView[]>(`/v1/runs?${all}limit=50`), 3000);
  return (
    <section>
      <h2>Jobs</h2>
      {!jobs.data ? (
        <Loading error={jobs.error} />
      ) : jobs.data.length === 0 ? (
        <p class="muted">No jobs. paddock jobs create NAME --repository URL --script PATH makes one.</p>
      ) : (
        <table>
          <Columns names={['Job', 'Owner', 'Repository', 'Script', 'Time limit']} />
          <tbody>
            {jobs.data.map((job) => (
              <tr key={job.id}>
                <td>{job.name}</td>
                <td>{job.owner}</td>
                <td>
                  {job.repository} @ {job.ref}
                </td>
                <td>{job.script}</td>
                <td>{Math.round(job.timeLimitSeconds / 60)} min</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <h2>Runs</h2>
      {!runs.data ? (
        <Loading error={runs.error} />
      ) : runs.data.length === 0 ? (
        <p class="muted">No runs yet.</p>
      ) : (
        <table>
          <Columns names={['Run', 'Job', 'Owner', 'State', 'Runner', 'Started', 'Exit']} />
          <tbody>
            {runs.data.map((run) => (
              <tr key={run.id}>
                <td>
                  <a href={`#/runs/${encodeURIComponent(run.id)}`}>{run.id}</a>
                </td>
                <td>{run.job}</td>
                <td>{run.owner}</td>
                <td>
                  <Badge state={run.state} />
                </td>
                <td>{run.runner ?? '—'}</td>
                <td>{relative(run.startedAt)}</td>
                <td>{run.exitCode ?? run.signal ?? ''}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

export function RunPage({ id }: { id: string }) {
  const run = usePoll(() => api.get<RunView>(`/v1/runs/${encodeURIComponent(id)}`), 3000, [id]);
  const [output, setOutput] = useState('');
  const [error, setError] = useState<string>();
  useEffect(() => {
    const abort = new AbortController();
    setOutput('');
    follow(`/v1/runs/${encodeURIComponent(id)}/log?follow=1`, (text) => setOutput((earlier) => earlier + text), abort.signal).catch(
      (failure: unknown) => !abort.signal.aborted && setError(describe(failure)),
    );
    return () => abort.abort();
  }, [id]);
  const view = run.data;
  if (!view) return <Loading error={run.error} />;
  return (
    <section>
      <h2>
        Run {view.id} <Badge state={view.state} />
      </h2>
      <p>
        {view.job} · {view.owner} · started {relative(view.startedAt)}
        {view.exitCode !== undefined && ` · exit ${view.exitCode}`}
        {view.reason && <span class="why"> · {view.reason}</span>}{' '}
        {live(view) && <Action label="Cancel" danger run={() => api.post(`/v1/runs/${encodeURIComponent(id)}/cancel`).then(run.reload)} />}
      </p>
      {error && <p class="error">{error}</p>}
      <pre class="log">{output}</pre>
    </section>
  );
}
