// The provisioning journal: the agent's persisted provisioning state, one record per machine and
// reservation in one format for every kind, at DATA/agent/provisioning/MACHINE/RESERVATION.json.
// The shared loop (loop.ts) writes a record when provisioning starts, on every stage and at
// readiness, and removes it once a release succeeds; a kind keeps what it must remember (a VM's pid
// and port) in the record's `detail` through the ProvisionState handle (provisioners/types.ts).
// After a crash the records say which reservations left work on which machine: the agent resumes
// or re-adopts what lives on and releases the rest (agent.ts).
//
// Every write goes to a temporary file in the same folder (a dot file), is flushed, and renamed
// over the record, so a crash leaves the old record or the new one, never half of one. A record
// that cannot be read (corrupt, or of a version this agent does not know) is reported with the
// names its file stands for and treated as a leftover: never a reason to stop.
import { randomBytes } from 'node:crypto';
import { mkdir, open, readdir, readFile, rename, rm, rmdir } from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { stages, type Stage } from '../protocol/agent.js';
import type { ProvisionState, Readiness } from '../provisioners/types.js';

/** The record format's version; a record of any other version is unreadable to this agent. */
export const recordVersion = 1;

export interface ProvisioningRecord {
  version: typeof recordVersion;
  kind: string;
  machine: string;
  reservationId: string;
  allocationId: string;
  /** The last readiness stage reached. */
  stage?: Stage;
  ready: boolean;
  /** What was reported at readiness (address, user, host key, console relay). */
  readiness?: Readiness;
  /** ISO 8601 times: the allocation's first provisioning start, the last write, readiness. */
  startedAt: string;
  updatedAt: string;
  readyAt?: string;
  /** The kind's own (ProvisionState): opaque to the journal. */
  detail?: unknown;
}

/** A record file as found: its record, or why it cannot be read. */
export type JournalEntry = { machine: string; reservationId: string } & ({ record: ProvisioningRecord } | { problem: string });

/** A machine name or reservation id that cannot name a record file. */
export class JournalNameError extends Error {
  constructor(what: string, name: string) {
    super(`not a valid ${what} for a provisioning record: ${JSON.stringify(name)}`);
    this.name = 'JournalNameError';
  }
}

// The names the config and the API accept (letters, digits, . _ -, starting with a letter or
// digit): no separator, no `.` or `..`, no leading dot (temporary files are dot files).
const namePattern = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const recordSuffix = '.json';

const recordSchema = z.object({
  version: z.literal(recordVersion),
  kind: z.string().min(1),
  machine: z.string(),
  reservationId: z.string(),
  allocationId: z.string().min(1),
  stage: z.enum(stages).optional(),
  ready: z.boolean(),
  readiness: z.record(z.string(), z.unknown()).optional(),
  startedAt: z.string(),
  updatedAt: z.string(),
  readyAt: z.string().optional(),
  detail: z.unknown().optional(),
});

export class ProvisioningJournal {
  constructor(readonly root: string) {}

  /** The record file of a machine and reservation; refuses names that could lead elsewhere. */
  file(machine: string, reservationId: string): string {
    if (!namePattern.test(machine)) throw new JournalNameError('machine name', machine);
    if (!namePattern.test(reservationId)) throw new JournalNameError('reservation id', reservationId);
    const file = path.resolve(this.root, machine, `${reservationId}${recordSuffix}`);
    // Belt and braces: the pattern already keeps the file two levels under the root.
    if (path.dirname(path.dirname(file)) !== path.resolve(this.root)) throw new JournalNameError('machine name', machine);
    return file;
  }

  /** The record of a machine and reservation, or why it cannot be read; undefined when there is none. */
  async read(machine: string, reservationId: string): Promise<JournalEntry | undefined> {
    let text: string;
    try {
      text = await readFile(this.file(machine, reservationId), 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      if (error instanceof JournalNameError) throw error;
      return { machine, reservationId, problem: `cannot read it: ${(error as Error).message}` };
    }
    return parseRecord(text, machine, reservationId);
  }

  /** Replaces the record atomically: the old record or the new one is on disk, never a mix. */
  async write(record: ProvisioningRecord): Promise<void> {
    const file = this.file(record.machine, record.reservationId);
    await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
    const temporary = path.join(path.dirname(file), `.${path.basename(file)}.${randomBytes(6).toString('hex')}.tmp`);
    try {
      const handle = await open(temporary, 'wx', 0o600);
      try {
        await handle.writeFile(`${JSON.stringify(record, null, 2)}\n`);
        await handle.sync();
      } finally {
        await handle.close();
      }
      await rename(temporary, file);
    } catch (error) {
      await rm(temporary, { force: true });
      throw error;
    }
  }

  /** Removes the record (and its machine's folder once empty); removing what is not there succeeds. */
  async remove(machine: string, reservationId: string): Promise<void> {
    const file = this.file(machine, reservationId);
    await rm(file, { force: true });
    await rmdir(path.dirname(file)).catch(() => undefined); // not empty: other reservations' records
  }

  /**
   * Every record file under the root, read. `clean` also removes the temporary files a crash in
   * the middle of a write left (only when nothing writes: at the agent's start). Files and folders
   * whose names are not record names are not Paddock's and are left alone.
   */
  async list(options: { clean?: boolean } = {}): Promise<JournalEntry[]> {
    const entries: JournalEntry[] = [];
    for (const machine of await namesIn(this.root)) {
      if (!namePattern.test(machine)) continue;
      for (const name of await namesIn(path.join(this.root, machine))) {
        if (name.startsWith('.') && name.endsWith('.tmp')) {
          if (options.clean) await rm(path.join(this.root, machine, name), { force: true });
          continue;
        }
        const reservationId = name.slice(0, -recordSuffix.length);
        if (!name.endsWith(recordSuffix) || !namePattern.test(reservationId)) continue;
        const entry = await this.read(machine, reservationId);
        if (entry) entries.push(entry);
      }
    }
    return entries;
  }
}

/** A record file's text as a record of that machine and reservation, or why it is not one. */
export function parseRecord(text: string, machine: string, reservationId: string): JournalEntry {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    return { machine, reservationId, problem: 'corrupt: not JSON' };
  }
  const version = (json as { version?: unknown } | null)?.version;
  if (version !== recordVersion) return { machine, reservationId, problem: `unknown record version ${JSON.stringify(version ?? null)}` };
  const parsed = recordSchema.safeParse(json);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((issue) => `${issue.path.join('.') || '(record)'}: ${issue.message}`).join('; ');
    return { machine, reservationId, problem: `corrupt: ${problems}` };
  }
  if (parsed.data.machine !== machine || parsed.data.reservationId !== reservationId) {
    return {
      machine,
      reservationId,
      problem: `corrupt: the file names ${machine}/${reservationId}, the record ${parsed.data.machine}/${parsed.data.reservationId}`,
    };
  }
  return { machine, reservationId, record: parsed.data as ProvisioningRecord };
}

/**
 * One record being kept up to date by the loop: changes apply in memory at once and reach the disk
 * in the order they were made (a stage and a detail saved together never overtake each other).
 */
export class OpenRecord {
  private writes: Promise<void> = Promise.resolve();

  constructor(
    private readonly journal: ProvisioningJournal,
    private current: ProvisioningRecord,
  ) {}

  get record(): ProvisioningRecord {
    return this.current;
  }

  /** Applies the change and resolves once the record holding it (or a later one) is on disk. */
  update(change: Partial<Omit<ProvisioningRecord, 'version' | 'kind' | 'machine' | 'reservationId'>>): Promise<void> {
    this.current = { ...this.current, ...change, updatedAt: new Date().toISOString() };
    const record = this.current;
    const write = this.writes.then(() => this.journal.write(record));
    this.writes = write.catch(() => undefined);
    return write;
  }
}

/** The kind's handle on its part (`detail`) of a record being provisioned: ProvisionRequest.state. */
export function detailOf<Detail = unknown>(record: OpenRecord): ProvisionState<Detail> {
  return {
    read: async () => record.record.detail as Detail | undefined,
    save: (detail) => record.update({ detail }),
  };
}

async function namesIn(folder: string): Promise<string[]> {
  try {
    return (await readdir(folder)).sort();
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT' || (error as NodeJS.ErrnoException).code === 'ENOTDIR') return [];
    throw error;
  }
}
