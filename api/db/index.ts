// The database: one SQLite file in the data directory, in WAL mode (the default), or a PostgreSQL
// database (`database: postgres://…`, for several API servers: api/leader.ts). Its schema is brought
// up to date by the migrations (migrations/, the same for both) on open so an upgrade keeps the
// data. A start on an up-to-date database reads the list of applied ones and goes on. A database
// that has migrations this build does not know was written by a newer Paddock: it is refused as it
// is (NewerDatabaseError), never opened for use, since this build would misread what it cannot know of.
import { chmodSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { parseIntoClientConfig } from 'pg-connection-string';
import { DataTypes, Sequelize, type Model, type ModelStatic, type Options, type PoolOptions } from 'sequelize';
import { version } from '../../protocol/version.js';
import * as initial from './migrations/0001-initial.js';
import * as images from './migrations/0002-images.js';
import * as imageHealth from './migrations/0003-image-health.js';
import * as requeues from './migrations/0004-requeues.js';
import * as jobs from './migrations/0005-jobs.js';
import * as offline from './migrations/0006-offline-machines.js';
import * as unreachable from './migrations/0007-unreachable-machines.js';
import * as labHosts from './migrations/0008-lab-hosts.js';
import * as imageAccess from './migrations/0009-image-access.js';
import * as provisionings from './migrations/0010-provisionings.js';
import * as qualification from './migrations/0011-qualification.js';
import * as tokenExpiry from './migrations/0012-token-expiry.js';
import * as leader from './migrations/0013-leader.js';
import { PostgresSession } from './session.js';

export interface TokenRow {
  name: string;
  role: string;
  hash: string;
  createdAt: Date;
  /** When it stops being accepted; null: never. */
  expiresAt?: Date | null;
}

export interface MachineRow {
  name: string;
  kind: string;
  state: string;
  reservationId: string | null;
  reason: string | null;
  failures: number;
  labels: string;
  capacities: string;
  updatedAt: Date;
  /** While offline (its lab host silent): the state it returns to, and since when. */
  onlineState: string | null;
  offlineSince: Date | null;
  /** While its lab host's agent reports it cannot reach it: since when, and why. */
  unreachableSince: Date | null;
  unreachableReason: string | null;
  /** Its last qualification, as JSON (a QualificationView). */
  qualification: string | null;
  /** While reserved: the state it takes once released (maintenance, quarantined, retired). */
  pendingState?: string | null;
}

/** One provisioning attempt of a machine as it ended (api/scheduler/health.ts). */
export interface ProvisioningRow {
  id: number;
  machine: string;
  reservationId: string;
  allocationId: string;
  owner: string;
  image: string | null;
  outcome: string;
  code: string | null;
  fault: string | null;
  stage: string | null;
  counted: boolean;
  qualification: boolean;
  /** JSON: when each readiness stage was reached. */
  stages: string;
  startedAt: Date;
  endedAt: Date;
}

/** A lab host's agent: when it was last heard, and the version it said then. */
export interface LabHostRow {
  name: string;
  lastHeard: Date;
  version: string | null;
}

export interface ReservationRow {
  id: string;
  owner: string;
  state: string;
  outcome: string | null;
  reason: string | null;
  priority: number;
  leaseSeconds: number;
  members: string;
  allocations: string;
  publicKey: string;
  privateKey: string;
  idempotencyKey: string | null;
  createdAt: Date;
  updatedAt: Date;
  grantedAt: Date | null;
  expiresAt: Date | null;
  hardCapAt: Date | null;
  queueDeadline: Date | null;
  requeues: number;
}

export interface EventRow {
  id: number;
  reservationId: string;
  at: Date;
  type: string;
  from: string | null;
  to: string;
  machine: string | null;
  reason: string | null;
}

export interface ImageRow {
  ref: string;
  name: string;
  tag: string;
  format: string;
  arch: string;
  access?: string;
  size: number;
  sha256: string;
  owner: string;
  createdAt: Date;
  expiresAt: Date | null;
  bootFailures?: number;
  lastBootFailure?: string | null;
}

export interface JobRow {
  id: string;
  name: string;
  owner: string;
  repository: string;
  ref: string;
  script: string;
  /** JSON object of strings. */
  parameters: string;
  /** Seconds. */
  timeLimit: number;
  createdAt: Date;
}

export interface RunRow {
  id: string;
  jobId: string;
  job: string;
  owner: string;
  state: string;
  repository: string;
  ref: string;
  commit: string;
  script: string;
  parameters: string;
  timeLimit: number;
  runner: string | null;
  cancelRequested: boolean;
  exitCode: number | null;
  signal: string | null;
  fault: string | null;
  reason: string | null;
  /** JSON. */
  result: string | null;
  createdAt: Date;
  startedAt: Date | null;
  endedAt: Date | null;
}

export interface Database {
  sequelize: Sequelize;
  dialect: Dialect;
  /** The PostgreSQL database's URL (it may hold a password: never shown; `databaseName` is); none on SQLite. */
  url?: string;
  /** On PostgreSQL: the connection of the store's commits and of leadership (api/leader.ts). */
  session?: PostgresSession;
  tokens: ModelStatic<Model<TokenRow>>;
  machines: ModelStatic<Model<MachineRow>>;
  reservations: ModelStatic<Model<ReservationRow>>;
  events: ModelStatic<Model<EventRow>>;
  images: ModelStatic<Model<ImageRow>>;
  jobs: ModelStatic<Model<JobRow>>;
  runs: ModelStatic<Model<RunRow>>;
  labHosts: ModelStatic<Model<LabHostRow>>;
  provisionings: ModelStatic<Model<ProvisioningRow>>;
  close(): Promise<void>;
}

const migrations = [
  { name: '0001-initial', module: initial },
  { name: '0002-images', module: images },
  { name: '0003-image-health', module: imageHealth },
  { name: '0004-requeues', module: requeues },
  { name: '0005-jobs', module: jobs },
  { name: '0006-offline-machines', module: offline },
  { name: '0007-unreachable-machines', module: unreachable },
  { name: '0008-lab-hosts', module: labHosts },
  { name: '0009-image-access', module: imageAccess },
  { name: '0010-provisionings', module: provisionings },
  { name: '0011-qualification', module: qualification },
  { name: '0012-token-expiry', module: tokenExpiry },
  { name: '0013-leader', module: leader },
];

/** Every migration's name, in order: what an up-to-date database has applied. */
export const migrationNames: readonly string[] = migrations.map(({ name }) => name);

/** The engines Paddock stores its data in: SQLite (the default, a file in the data directory) or PostgreSQL. */
export type Dialect = 'sqlite' | 'postgres';

/** Whether `SequelizeMeta` (the record of applied migrations) exists yet. */
async function hasMeta(sequelize: Sequelize): Promise<boolean> {
  const [tables] =
    sequelize.getDialect() === 'postgres'
      ? await sequelize.query(`SELECT 1 FROM pg_tables WHERE schemaname = current_schema() AND tablename = 'SequelizeMeta'`)
      : await sequelize.query(`SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'SequelizeMeta'`);
  return tables.length > 0;
}

/**
 * The migrations not applied yet, read from `SequelizeMeta`: the table umzug kept (and the format it
 * kept it in) when it applied them, so a file migrated by an older Paddock keeps its record.
 */
async function pendingMigrations(sequelize: Sequelize): Promise<typeof migrations> {
  if (!(await hasMeta(sequelize))) return migrations;
  const [rows] = await sequelize.query('SELECT name FROM "SequelizeMeta"');
  const applied = new Set((rows as { name: string }[]).map((row) => row.name));
  return migrations.filter(({ name }) => !applied.has(name));
}

/** The database was written by a newer Paddock: a downgrade, refused before anything is read or written. */
export class NewerDatabaseError extends Error {
  override readonly name = 'NewerDatabaseError';
  readonly code = 'database_newer';
  /** What `paddock serve` exits with: a service manager can tell it from a crash and stop retrying. */
  static readonly exitStatus = 3;
  readonly exitStatus = NewerDatabaseError.exitStatus;

  constructor(
    /** The SQLite file, or the PostgreSQL database as `databaseName` shows it. */
    readonly file: string,
    /** The applied migrations this build does not know. */
    readonly unknown: string[],
  ) {
    super(
      `${file} was written by a newer Paddock: it has migration${unknown.length === 1 ? '' : 's'} ${unknown.join(', ')}, which this Paddock ` +
        `(${version}, whose newest is ${migrationNames.at(-1)}) does not know. A downgrade is refused, the database is left as it is: ` +
        'run the newer Paddock again, or restore a backup made before the upgrade (paddock backup, or pg_dump on PostgreSQL; README: Running Paddock for a lab)',
    );
  }
}

/** The applied migrations this build does not know (none on a database it made or a fresh one). */
async function unknownMigrations(sequelize: Sequelize): Promise<string[]> {
  if (!(await hasMeta(sequelize))) return [];
  const [rows] = await sequelize.query('SELECT name FROM "SequelizeMeta" ORDER BY name');
  return (rows as { name: string }[]).map((row) => row.name).filter((name) => !migrationNames.includes(name));
}

/**
 * The lock that orders servers migrating one PostgreSQL database at once: a transaction-level
 * advisory lock, so it ends with the transaction. (Leadership takes a session-level one of another
 * number: api/leader.ts.)
 */
const migrationLock = 7300_0001;

/**
 * Applies the pending migrations in order, and records each, in one transaction: a fresh database
 * gets its whole schema in one commit, and a migration that fails leaves it as it was (PostgreSQL's
 * schema changes are transactional too). The list is read again under the write lock (SQLite's, or
 * an advisory lock on PostgreSQL), so a second process migrating at once applies nothing twice.
 * `sequelize` has one connection, so every statement of the migrations lands in the transaction.
 */
async function migrate(sequelize: Sequelize): Promise<void> {
  if ((await pendingMigrations(sequelize)).length === 0) return;
  const postgres = sequelize.getDialect() === 'postgres';
  await sequelize.query(postgres ? 'BEGIN' : 'BEGIN IMMEDIATE');
  try {
    if (postgres) await sequelize.query(`SELECT pg_advisory_xact_lock(${migrationLock})`);
    await sequelize.query('CREATE TABLE IF NOT EXISTS "SequelizeMeta" ("name" VARCHAR(255) NOT NULL UNIQUE PRIMARY KEY)');
    const context = sequelize.getQueryInterface();
    for (const { name, module } of await pendingMigrations(sequelize)) {
      await module.up({ context });
      await sequelize.query('INSERT INTO "SequelizeMeta" ("name") VALUES (?)', { replacements: [name] });
    }
    await sequelize.query('COMMIT');
  } catch (error) {
    // SQLite has rolled back by itself after some failures (a full disk): then there is nothing to end.
    await sequelize.query('ROLLBACK').catch(() => undefined);
    throw error;
  }
}

/** A `postgres://` URL as it may be shown: without its password. */
export function databaseName(url: string): string {
  try {
    const parsed = new URL(url);
    parsed.password = '';
    return parsed.href;
  } catch {
    return 'postgres://(not a URL)';
  }
}

/** PostgreSQL's BIGINT (image sizes) arrives as text by default; Paddock's are far below 2^53. */
let bigintsParsed = false;
async function parseBigints(): Promise<void> {
  if (bigintsParsed) return;
  const { default: pg } = await import('pg');
  pg.types.setTypeParser(pg.types.builtins.INT8, (value: string) => Number(value));
  bigintsParsed = true;
}

/**
 * Sequelize's options for the database at `url`, read by the driver's own parser as the leadership
 * session reads it (api/db/session.ts), so both reach the same server: a socket directory as the
 * host (`postgres://paddock@%2Fvar%2Frun%2Fpostgresql/paddock` or `…/paddock?host=/var/run/postgresql`),
 * the port, `sslmode` and the client's other parameters (`application_name`, `options`). Left out
 * (no user, no password), the driver's defaults apply: PGUSER, PGPASSWORD, ~/.pgpass.
 */
function postgres(url: string, pool: PoolOptions): Options {
  const config = parseIntoClientConfig(url);
  return {
    dialect: 'postgres',
    logging: false,
    pool,
    host: config.host || undefined,
    port: config.port || undefined,
    database: config.database || undefined,
    username: config.user || undefined,
    password: typeof config.password === 'string' && config.password !== '' ? config.password : undefined,
    // Sequelize takes the client settings it knows from here (ssl, application_name, options, …).
    dialectOptions: config,
  };
}

/** Opens `url` with one connection, for the checks and migrations that must share one session. */
function postgresSession(url: string): Sequelize {
  return new Sequelize(postgres(url, { max: 1, min: 0, idle: 10_000 }));
}

/**
 * The database: the SQLite file DATA/paddock.sqlite, or the PostgreSQL database at `url`
 * (`database: postgres://…` in the config). Either is checked against this build (a newer
 * Paddock's is refused as it is) and migrated, then opened for use.
 */
export async function openDatabase(dataDir: string, url?: string): Promise<Database> {
  // Images, console logs and run logs stay in the data directory on either engine.
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  return url === undefined ? openSqlite(dataDir) : openPostgres(url);
}

/** The PostgreSQL database at `url`, checked and migrated as `openDatabase` does. */
export async function openPostgres(url: string): Promise<Database> {
  await parseBigints();
  const setup = postgresSession(url);
  try {
    await setup.authenticate().catch((error: unknown) => {
      // Sequelize's errors keep the connection options (the password) as properties: only the driver's words go on.
      throw new Error(`cannot open the database ${databaseName(url)}: ${(error as Error).message}`);
    });
    const unknown = await unknownMigrations(setup);
    if (unknown.length > 0) throw new NewerDatabaseError(databaseName(url), unknown);
    await migrate(setup);
  } finally {
    await setup.close();
  }
  const sequelize = new Sequelize(postgres(url, { max: 8, min: 0, idle: 30_000 }));
  return defineModels(sequelize, 'postgres', url);
}

async function openSqlite(dataDir: string): Promise<Database> {
  const storage = path.join(dataDir, 'paddock.sqlite');
  const sequelize = new Sequelize({
    dialect: 'sqlite',
    storage,
    logging: false,
    // One connection: every write goes through the store's single writer, so SQLite never sees two.
    pool: { max: 1, min: 1, idle: 60_000 },
  });
  // The file holds reservations' private keys: owner only, whatever the data directory's mode.
  // SQLite gives the -wal and -shm files the same mode, so this comes before WAL mode.
  await sequelize.authenticate();
  // Before anything is changed (not even the journal mode): a newer Paddock's file stays as it left it.
  const unknown = await unknownMigrations(sequelize).catch(async (error: unknown) => {
    await sequelize.close();
    throw error;
  });
  if (unknown.length > 0) {
    await sequelize.close();
    throw new NewerDatabaseError(storage, unknown);
  }
  chmodSync(storage, 0o600);
  await sequelize.query('PRAGMA journal_mode = WAL');
  await sequelize.query('PRAGMA synchronous = NORMAL');
  await sequelize.query('PRAGMA busy_timeout = 5000');

  await migrate(sequelize).catch(async (error: unknown) => {
    await sequelize.close();
    throw error;
  });
  return defineModels(sequelize, 'sqlite');
}

function defineModels(sequelize: Sequelize, dialect: Dialect, url?: string): Database {
  const plain = { timestamps: false, freezeTableName: true };
  const tokens = sequelize.define<Model<TokenRow>>(
    'tokens',
    {
      name: { type: DataTypes.STRING, primaryKey: true },
      role: DataTypes.STRING,
      hash: DataTypes.STRING,
      createdAt: DataTypes.DATE,
      expiresAt: DataTypes.DATE,
    },
    plain,
  );
  const machines = sequelize.define<Model<MachineRow>>(
    'machines',
    {
      name: { type: DataTypes.STRING, primaryKey: true },
      kind: DataTypes.STRING,
      state: DataTypes.STRING,
      reservationId: DataTypes.STRING,
      reason: DataTypes.TEXT,
      failures: DataTypes.INTEGER,
      labels: DataTypes.TEXT,
      capacities: DataTypes.TEXT,
      updatedAt: DataTypes.DATE,
      onlineState: DataTypes.STRING,
      offlineSince: DataTypes.DATE,
      unreachableSince: DataTypes.DATE,
      unreachableReason: DataTypes.TEXT,
      qualification: DataTypes.TEXT,
      pendingState: DataTypes.STRING,
    },
    plain,
  );
  const reservations = sequelize.define<Model<ReservationRow>>(
    'reservations',
    {
      id: { type: DataTypes.STRING, primaryKey: true },
      owner: DataTypes.STRING,
      state: DataTypes.STRING,
      outcome: DataTypes.STRING,
      reason: DataTypes.TEXT,
      priority: DataTypes.INTEGER,
      leaseSeconds: DataTypes.INTEGER,
      members: DataTypes.TEXT,
      allocations: DataTypes.TEXT,
      publicKey: DataTypes.TEXT,
      privateKey: DataTypes.TEXT,
      idempotencyKey: DataTypes.STRING,
      createdAt: DataTypes.DATE,
      updatedAt: DataTypes.DATE,
      grantedAt: DataTypes.DATE,
      expiresAt: DataTypes.DATE,
      hardCapAt: DataTypes.DATE,
      queueDeadline: DataTypes.DATE,
      requeues: { type: DataTypes.INTEGER, allowNull: false, defaultValue: 0 },
    },
    plain,
  );
  const events = sequelize.define<Model<EventRow>>(
    'events',
    {
      id: { type: DataTypes.INTEGER, primaryKey: true },
      reservationId: DataTypes.STRING,
      at: DataTypes.DATE,
      type: DataTypes.STRING,
      from: DataTypes.STRING,
      to: DataTypes.STRING,
      machine: DataTypes.STRING,
      reason: DataTypes.TEXT,
    },
    plain,
  );
  const images = sequelize.define<Model<ImageRow>>(
    'images',
    {
      ref: { type: DataTypes.STRING, primaryKey: true },
      name: DataTypes.STRING,
      tag: DataTypes.STRING,
      format: DataTypes.STRING,
      arch: DataTypes.STRING,
      access: { type: DataTypes.STRING, defaultValue: 'hook' },
      size: DataTypes.BIGINT,
      sha256: DataTypes.STRING,
      owner: DataTypes.STRING,
      createdAt: DataTypes.DATE,
      expiresAt: DataTypes.DATE,
      bootFailures: { type: DataTypes.INTEGER, defaultValue: 0 },
      lastBootFailure: DataTypes.TEXT,
    },
    plain,
  );
  const jobs = sequelize.define<Model<JobRow>>(
    'jobs',
    {
      id: { type: DataTypes.STRING, primaryKey: true },
      name: DataTypes.STRING,
      owner: DataTypes.STRING,
      repository: DataTypes.TEXT,
      ref: DataTypes.STRING,
      script: DataTypes.TEXT,
      parameters: DataTypes.TEXT,
      timeLimit: DataTypes.INTEGER,
      createdAt: DataTypes.DATE,
    },
    plain,
  );
  const runs = sequelize.define<Model<RunRow>>(
    'runs',
    {
      id: { type: DataTypes.STRING, primaryKey: true },
      jobId: DataTypes.STRING,
      job: DataTypes.STRING,
      owner: DataTypes.STRING,
      state: DataTypes.STRING,
      repository: DataTypes.TEXT,
      ref: DataTypes.STRING,
      commit: DataTypes.STRING,
      script: DataTypes.TEXT,
      parameters: DataTypes.TEXT,
      timeLimit: DataTypes.INTEGER,
      runner: DataTypes.STRING,
      cancelRequested: DataTypes.BOOLEAN,
      exitCode: DataTypes.INTEGER,
      signal: DataTypes.STRING,
      fault: DataTypes.STRING,
      reason: DataTypes.TEXT,
      result: DataTypes.TEXT,
      createdAt: DataTypes.DATE,
      startedAt: DataTypes.DATE,
      endedAt: DataTypes.DATE,
    },
    plain,
  );
  const labHosts = sequelize.define<Model<LabHostRow>>(
    'labHosts',
    {
      name: { type: DataTypes.STRING, primaryKey: true },
      lastHeard: DataTypes.DATE,
      version: DataTypes.STRING,
    },
    plain,
  );
  const provisionings = sequelize.define<Model<ProvisioningRow>>(
    'provisionings',
    {
      id: { type: DataTypes.INTEGER, primaryKey: true },
      machine: DataTypes.STRING,
      reservationId: DataTypes.STRING,
      allocationId: DataTypes.STRING,
      owner: DataTypes.STRING,
      image: DataTypes.STRING,
      outcome: DataTypes.STRING,
      code: DataTypes.STRING,
      fault: DataTypes.STRING,
      stage: DataTypes.STRING,
      counted: DataTypes.BOOLEAN,
      qualification: DataTypes.BOOLEAN,
      stages: DataTypes.TEXT,
      startedAt: DataTypes.DATE,
      endedAt: DataTypes.DATE,
    },
    plain,
  );
  const db: Database = {
    sequelize,
    dialect,
    ...(url === undefined ? {} : { url, session: new PostgresSession(url) }),
    tokens,
    machines,
    reservations,
    events,
    images,
    jobs,
    runs,
    labHosts,
    provisionings,
    close: async () => {
      await db.session?.close();
      await sequelize.close();
    },
  };
  return db;
}

/** Rows read with `raw: true` are plain objects; these give them back their row types. */
export const plainRows = <T extends object>(rows: Model<T>[]): T[] => rows as unknown as T[];
export const plainRow = <T extends object>(row: Model<T> | null): T | null => row as unknown as T | null;
