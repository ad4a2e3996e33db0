// Jobs: a script in a git repository, the ref to take it from, parameters and a time limit, owned
// by the user who defined it. Users see their own jobs, admins all. Whether a job may be deleted
// depends on its runs: runs.ts asks, then calls `remove`.
import { randomBytes } from 'node:crypto';
import type { Caller, JobView } from '../../protocol/api.js';
import { displayRepository } from '../../protocol/repository.js';
import { plainRow, plainRows, type Database, type JobRow } from '../db/index.js';
import { DomainError, forbidden, notFound } from '../domain-error.js';
import type { RepositoryResolver } from '../repositories.js';

export interface JobInput {
  name: string;
  repository: string;
  ref: string;
  script: string;
  parameters: Record<string, string>;
  timeLimitSeconds: number;
}

export class JobCatalog {
  constructor(
    private readonly db: Database,
    private readonly repositories: RepositoryResolver,
    private readonly now: () => number,
  ) {}

  async add(caller: Caller, input: JobInput): Promise<JobView> {
    if (await this.db.jobs.findOne({ where: { owner: caller.name, name: input.name } })) {
      throw new DomainError('conflict', `you have a job named ${input.name} already`);
    }
    await this.repositories.resolve(caller.name, input.repository, input.ref);
    const row: JobRow = {
      id: `job-${randomBytes(6).toString('hex')}`,
      name: input.name,
      owner: caller.name,
      repository: input.repository,
      ref: input.ref,
      script: input.script,
      parameters: JSON.stringify(input.parameters),
      timeLimit: input.timeLimitSeconds,
      createdAt: new Date(this.now()),
    };
    await this.db.jobs.create(row);
    return jobView(row);
  }

  async list(caller: Caller, all: boolean): Promise<JobView[]> {
    const where = all && caller.role === 'admin' ? {} : { owner: caller.name };
    return plainRows(await this.db.jobs.findAll({ where, order: [['name', 'ASC']], raw: true })).map(jobView);
  }

  /** A job by id, or by name among the caller's (an admin's name lookup falls back to anyone's, if unique). */
  async get(caller: Caller, idOrName: string): Promise<JobRow> {
    let row = plainRow(await this.db.jobs.findByPk(idOrName, { raw: true }));
    if (!row) row = plainRow(await this.db.jobs.findOne({ where: { owner: caller.name, name: idOrName }, raw: true }));
    if (!row && caller.role === 'admin') {
      const named = plainRows(await this.db.jobs.findAll({ where: { name: idOrName }, raw: true }));
      if (named.length > 1) throw new DomainError('conflict', `${named.length} users have a job named ${idOrName}: use its id`);
      row = named[0] ?? null;
    }
    if (!row) throw notFound(`job ${idOrName}`);
    if (row.owner !== caller.name && caller.role !== 'admin') throw forbidden(`job ${idOrName} belongs to another user`);
    return row;
  }

  /** The commit the job's ref points at now, resolved for the caller. */
  resolve(caller: Caller, job: JobRow): Promise<string> {
    return this.repositories.resolve(caller.name, job.repository, job.ref);
  }

  async remove(job: JobRow): Promise<void> {
    await this.db.jobs.destroy({ where: { id: job.id } });
  }
}

export function jobView(row: JobRow): JobView {
  return {
    id: row.id,
    name: row.name,
    owner: row.owner,
    // A password in the URL is for the runner hosts, not for whoever lists jobs.
    repository: displayRepository(row.repository),
    ref: row.ref,
    script: row.script,
    parameters: JSON.parse(row.parameters) as Record<string, string>,
    timeLimitSeconds: row.timeLimit,
    createdAt: new Date(row.createdAt).toISOString(),
  };
}
