// A downgrade is refused: a database that has migrations this Paddock does not know was written by a
// newer one, and `paddock serve` stops at start with a message that says so and exit status 3
// (NewerDatabaseError), leaving the file exactly as it was.
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import test from 'ava';
import { migrationNames, NewerDatabaseError, openDatabase } from '../../api/db/index.js';
import { freePort } from '../helpers/ports.js';
import { openStoredData } from '../helpers/database.js';
import { testDatabase } from '../helpers/postgres.js';

const bin = path.resolve(import.meta.dirname, '../../bin/paddock.js');

test('a database from a newer Paddock is refused at start, with a clear message and exit status 3, and left as it was', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'paddock-downgrade-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const database = testDatabase(dir);
  const db = await openDatabase(dir, database);
  await db.tokens.create({ name: 'carol', role: 'user', hash: 'h', createdAt: new Date() });
  await db.sequelize.query(`INSERT INTO "SequelizeMeta" (name) VALUES ('0099-from-the-future')`);
  await db.close();
  const file = path.join(dir, 'paddock.sqlite');
  // What it holds, to compare after: the file's bytes, or the PostgreSQL database's rows.
  const contents = async () => {
    if (database === undefined) return readFileSync(file).toString('base64');
    const stored = await openStoredData({ dataDir: dir, database });
    const rows = await stored.all('SELECT name FROM "SequelizeMeta" ORDER BY name');
    const tables = await stored.all(`SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename`);
    const tokens = await stored.all('SELECT name, role, hash FROM tokens ORDER BY name');
    await stored.close();
    return JSON.stringify({ rows, tables, tokens });
  };
  const before = await contents();

  const error = await t.throwsAsync(openDatabase(dir, database), { instanceOf: NewerDatabaseError });
  t.deepEqual(error!.unknown, ['0099-from-the-future']);
  t.regex(
    error!.message,
    new RegExp(
      `written by a newer Paddock: it has migration 0099-from-the-future, which this Paddock \\(.*whose newest is ${migrationNames.at(-1)}\\) does not know`,
    ),
  );

  const port = await freePort();
  const started = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
    const env = { ...process.env };
    delete env.PADDOCK_TOKEN;
    const args = ['serve', '--data', dir, '--listen', `127.0.0.1:${port}`, ...(database === undefined ? [] : ['--database', database])];
    execFile(process.execPath, [bin, ...args], { env, timeout: 120_000 }, (failure, _stdout, stderr) =>
      resolve({ code: failure ? ((failure as { code?: number }).code ?? null) : 0, stderr }),
    );
  });
  t.is(started.code, 3, started.stderr);
  const where = database === undefined ? 'paddock\\.sqlite' : 'postgres://postgres@127\\.0\\.0\\.1:\\d+/paddock_\\w+';
  t.regex(started.stderr, new RegExp(`paddock: .*${where} was written by a newer Paddock: it has migration 0099-from-the-future`));
  t.regex(started.stderr, /A downgrade is refused, the database is left as it is: run the newer Paddock again, or restore a backup made before the upgrade/);
  t.is(await contents(), before, 'the database is unchanged');
});
