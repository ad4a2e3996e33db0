// /v1/jobs and /v1/runs for users: define a job (a script in a git repository), run it, list and
// show runs, follow a run's output, cancel it. Users see their own; admins all (?all=1 to list).
import type Koa from 'koa';
import { z } from 'zod';
import { ApiError } from '../errors.js';
import { bounds, duration, name, text } from '../fields.js';
import { jobView } from '../jobs/catalog.js';
import type { JobService } from '../jobs/service.js';
import type { Caller } from '../../protocol/api.js';
import type { RouteTable } from './define.js';
import { compareKeys, pageOf, pageQuery, sendPage, slicePage, type Key } from '../pages.js';
import type { JobView } from '../../protocol/api.js';
import { offsetOf, streamLog } from './follow.js';

const caller = (ctx: Koa.Context) => ctx.state.caller as Caller;

const parameterName = text({ max: 64, pattern: /^[A-Za-z_][A-Za-z0-9_]{0,63}$/, message: 'parameter names use letters, digits and _ (up to 64)' });
/** Parameter values are the one place for tab and newline (a script may take a list or a snippet). */
const parameters = z.record(parameterName, text({ max: 4096, lines: true })).refine((record) => Object.keys(record).length <= 64, 'at most 64 parameters');

/** A relative path inside the repository: no leading /, no `..`, no empty or `.` segments. */
const scriptPath = text({ min: 1, max: 500 }).refine(
  (value) => !value.startsWith('/') && !value.includes('\\') && value.split('/').every((part) => part !== '' && part !== '.' && part !== '..'),
  {
    message: 'the script is a path inside the repository, like ci/build.ts (no leading /, no .. or . segments)',
  },
);

export const jobSchema = z.strictObject({
  name: name('job'),
  /** What `git clone` takes: a URL or a path the runner hosts can read. */
  repository: text({ min: 1, max: 1000 }).refine((value) => !value.startsWith('-') && !/[\0\r\n]/.test(value), 'not a repository URL or path'),
  ref: text({ min: 1, max: 200 })
    .refine((value) => !value.startsWith('-') && !value.includes('..') && !/[\0-\x20~^:?*[\\]/.test(value), 'not a git ref (a branch, a tag or a commit)')
    .default('main'),
  script: scriptPath,
  parameters: parameters.default({}),
  timeLimit: duration('time limit', bounds.jobTimeLimitSeconds).default(3600),
});

const runSchema = z.strictObject({ parameters: parameters.default({}) });
const reproduceSchema = z.strictObject({ allowOtherUser: z.boolean().default(false) });

export function jobRoutes(table: RouteTable, jobs: JobService): void {
  table.define(
    {
      method: 'post',
      path: '/v1/jobs',
      summary: 'Define a job: a script in a git repository, its ref, parameters and time limit',
      body: { schema: jobSchema, name: 'job' },
      responses: { 201: 'created', 422: 'the repository or the ref does not exist' },
    },
    async (ctx, input) => {
      ctx.body = await jobs.catalog.add(caller(ctx), { ...input, timeLimitSeconds: input.timeLimit });
      ctx.status = 201;
    },
  );

  table.define(
    {
      method: 'get',
      path: '/v1/jobs',
      summary: "Your jobs by name (all: every user's, admins only); paginated",
      query: { all: "1 for every user's (admins)", ...pageQuery },
    },
    async (ctx) => {
      const key = (job: JobView): Key => [job.name, job.id];
      const list = (await jobs.catalog.list(caller(ctx), ctx.query.all === '1')).sort((a, b) => compareKeys(key(a), key(b)));
      sendPage(ctx, slicePage(list, key, pageOf(ctx, 2)));
    },
  );

  table.define({ method: 'get', path: '/v1/jobs/:job', summary: 'One job, by id or name' }, async (ctx) => {
    ctx.body = jobView(await jobs.catalog.get(caller(ctx), ctx.params.job));
  });

  table.define({ method: 'delete', path: '/v1/jobs/:job', summary: 'Delete a job (refused while a run of it is live)' }, async (ctx) => {
    await jobs.runs.deleteJob(caller(ctx), ctx.params.job);
    ctx.status = 204;
  });

  table.define(
    {
      method: 'post',
      path: '/v1/jobs/:job/runs',
      summary: 'Run a job: the commit its ref points at now is recorded and the run queued',
      body: { schema: runSchema, name: 'run request' },
      responses: { 201: 'queued', 422: 'the repository or the ref does not exist' },
    },
    async (ctx, { parameters: values }) => {
      ctx.body = await jobs.runs.run(caller(ctx), ctx.params.job, values);
      ctx.status = 201;
    },
  );

  table.define(
    {
      method: 'get',
      path: '/v1/runs',
      summary: "Your runs, newest first (job: of one job; all: every user's, admins only); paginated",
      query: { job: 'a job id or name', all: "1 for every user's (admins)", ...pageQuery },
    },
    async (ctx) => {
      sendPage(
        ctx,
        await jobs.runs.list(caller(ctx), { ...(typeof ctx.query.job === 'string' ? { job: ctx.query.job } : {}), all: ctx.query.all === '1' }, pageOf(ctx, 2)),
      );
    },
  );

  table.define(
    {
      method: 'get',
      path: '/v1/runs/:id',
      summary: 'One run; ?wait=end&timeout=60 holds the answer until it has ended',
      query: { wait: 'end: long-poll until the run has ended', timeout: 'seconds to wait, at most 300' },
    },
    async (ctx) => {
      if (ctx.query.wait === undefined) {
        ctx.body = await jobs.runs.get(caller(ctx), ctx.params.id);
        return;
      }
      if (ctx.query.wait !== 'end') throw new ApiError(400, 'invalid_request', 'wait is end (until the run has ended)');
      const timeout = Number(ctx.query.timeout ?? 60);
      if (!Number.isFinite(timeout) || timeout < 0 || timeout > 300) throw new ApiError(400, 'invalid_request', 'timeout is a number of seconds from 0 to 300');
      ctx.body = await jobs.runs.waitForEnd(caller(ctx), ctx.params.id, timeout * 1000);
    },
  );

  table.define(
    {
      method: 'get',
      path: '/v1/runs/:id/log',
      summary: "A run's output as text; follow=1 streams it live until the run ends",
      query: { follow: '1 to keep streaming new output', offset: 'bytes to skip: where a broken follow stopped' },
      responses: { 200: 'text/plain' },
    },
    async (ctx) => {
      const run = await jobs.runs.get(caller(ctx), ctx.params.id);
      const follow = ctx.query.follow === '1' || ctx.query.follow === 'true';
      streamLog(
        ctx,
        async () => jobs.logs.file(run.id),
        follow,
        () => !jobs.runs.isLive(run.id),
        offsetOf(ctx),
      );
    },
  );

  table.define(
    {
      method: 'post',
      path: '/v1/runs/:id/reproductions',
      summary: "Reproduce a run elsewhere: its task with a token made for the reproduction alone (another user's run only with allowOtherUser)",
      body: { schema: reproduceSchema, name: 'reproduction' },
      responses: { 201: 'the task and its token', 403: "other_users_run: another user's run, without allowOtherUser" },
    },
    async (ctx, { allowOtherUser }) => {
      ctx.body = await jobs.reproductions.create(caller(ctx), ctx.params.id, allowOtherUser);
      ctx.status = 201;
    },
  );

  table.define(
    { method: 'delete', path: '/v1/reproductions/:id', summary: 'End a reproduction: its reservations are released and its token revoked' },
    async (ctx) => {
      ctx.body = { released: await jobs.reproductions.end(caller(ctx), ctx.params.id) };
    },
  );

  table.define(
    { method: 'post', path: '/v1/runs/:id/cancel', summary: 'Cancel a run: a queued one ends at once, a running one is stopped by its runner host' },
    async (ctx) => {
      ctx.body = await jobs.runs.cancel(caller(ctx), ctx.params.id);
    },
  );
}
