// A throwaway PostgreSQL cluster for tests: Debian's postgresql (`initdb`, `pg_ctl`) run as an
// unprivileged user in a temporary directory, one cluster per test process, started on first use
// and removed when the process exits. Each Paddock under test gets a database of its own on it,
// named after its data directory, so a server started again on the same data directory (a crash
// test) finds its database again, as it finds its SQLite file.
//
// `PADDOCK_TEST_DATABASE=postgres` (npm test's second pass over test/api) makes testConfig() put
// every test server on PostgreSQL; tests that need PostgreSQL whatever the pass call
// `postgresDatabase()` themselves.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chownSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/** Where Debian's postgresql keeps its programs (initdb and pg_ctl are not on PATH there). */
function postgresBin(): string {
  for (const dir of ['/usr/lib/postgresql']) {
    if (!existsSync(dir)) continue;
    const versions = execFileSync('ls', [dir], { encoding: 'utf8' })
      .split('\n')
      .filter(Boolean)
      .sort((a, b) => Number(b) - Number(a));
    for (const version of versions) if (existsSync(path.join(dir, version, 'bin', 'initdb'))) return path.join(dir, version, 'bin');
  }
  throw new Error('PostgreSQL is not installed (Debian package postgresql; scripts/setup.sh installs it)');
}

interface Cluster {
  port: number;
  socketDir: string;
  bin: string;
  databases: Set<string>;
}

let cluster: Cluster | undefined;

/** PostgreSQL refuses to run as root: the cluster runs as `nobody` when the tests run as root. */
const asUser: { uid?: number; gid?: number } = process.getuid?.() === 0 ? { uid: 65534, gid: 65534 } : {};

function startCluster(): Cluster {
  const bin = postgresBin();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'paddock-pg-'));
  if (asUser.uid !== undefined) chownSync(dir, asUser.uid, asUser.gid ?? asUser.uid);
  const data = path.join(dir, 'data');
  execFileSync(path.join(bin, 'initdb'), ['-D', data, '-U', 'postgres', '--auth=trust', '--locale=C', '-E', 'UTF8', '--no-sync'], {
    ...asUser,
    stdio: 'ignore',
  });
  // A port of its own: tried until one is free (another test process may start a cluster at once).
  for (let attempt = 0; ; attempt++) {
    const port = 20000 + Math.floor(Math.random() * 20000);
    const options = `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200`;
    try {
      execFileSync(path.join(bin, 'pg_ctl'), ['-D', data, '-o', options, '-l', path.join(dir, 'log'), '-w', '-t', '120', 'start'], {
        ...asUser,
        stdio: 'ignore',
      });
      const started: Cluster = { port, socketDir: dir, bin, databases: new Set() };
      process.once('exit', () => {
        try {
          execFileSync(path.join(bin, 'pg_ctl'), ['-D', data, '-m', 'immediate', 'stop'], { ...asUser, stdio: 'ignore' });
        } finally {
          rmSync(dir, { recursive: true, force: true });
        }
      });
      return started;
    } catch (error) {
      if (attempt >= 5) throw error;
    }
  }
}

/** Runs one SQL statement on the cluster's `postgres` database, as its superuser. */
export function postgresSql(sql: string, database = 'postgres'): string {
  cluster ??= startCluster();
  return execFileSync(
    path.join(cluster.bin, 'psql'),
    ['-h', '127.0.0.1', '-p', String(cluster.port), '-U', 'postgres', '-d', database, '-XAtq', '-v', 'ON_ERROR_STOP=1', '-c', sql],
    {
      encoding: 'utf8',
    },
  );
}

/**
 * The URL of a database of its own for `key` (a data directory, say), created on first use: the
 * same key gives the same, still-filled database.
 */
export function postgresDatabase(key: string = mkdtempSync(path.join(os.tmpdir(), 'paddock-pgdb-'))): string {
  cluster ??= startCluster();
  const name = `paddock_${createHash('sha256').update(key).digest('hex').slice(0, 16)}`;
  if (!cluster.databases.has(name)) {
    postgresSql(`CREATE DATABASE ${name}`);
    cluster.databases.add(name);
  }
  return `postgres://postgres@127.0.0.1:${cluster.port}/${name}`;
}

/** `url` (from postgresDatabase) through the cluster's Unix socket: its directory as the host, `encoded` in it or as `?host=` (with an application_name). */
export function postgresSocketUrl(url: string, form: 'encoded' | 'query'): string {
  cluster ??= startCluster();
  const { pathname } = new URL(url);
  return form === 'encoded'
    ? `postgres://postgres@${encodeURIComponent(cluster.socketDir)}:${cluster.port}${pathname}`
    : `postgres://postgres@localhost:${cluster.port}${pathname}?host=${cluster.socketDir}&application_name=paddock-b`;
}

/** True in the PostgreSQL pass of the API tests. */
export const onPostgres = process.env.PADDOCK_TEST_DATABASE === 'postgres';

/** The database a test server on `dataDir` uses: its PostgreSQL database in that pass, else none (the SQLite file). */
export const testDatabase = (dataDir: string): string | undefined => (onPostgres ? postgresDatabase(dataDir) : undefined);
