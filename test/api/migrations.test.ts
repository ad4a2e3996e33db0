// The database file across versions: a file left by an older Paddock gets the migrations it lacks on
// the next start, and keeps its data; an up-to-date file is opened as it is; a migration that fails
// changes nothing.
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import test, { type ExecutionContext } from 'ava';
import type { Sequelize } from 'sequelize';
import { migrationNames, openDatabase } from '../../api/db/index.js';

/**
 * What a Paddock from before jobs left, with one token (carol's): no jobs or runs tables, and
 * umzug's record without 0005; then `extra` statements.
 */
async function fileBeforeJobs(t: ExecutionContext, ...extra: string[]): Promise<string> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'paddock-migrations-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const first = await openDatabase(dir);
  await first.tokens.create({ name: 'carol', role: 'user', hash: 'h', createdAt: new Date() });
  for (const statement of ['DROP TABLE runs', 'DROP TABLE jobs', `DELETE FROM "SequelizeMeta" WHERE name = '0005-jobs'`, ...extra]) {
    await first.sequelize.query(statement);
  }
  await first.close();
  return dir;
}

async function applied(sequelize: Sequelize): Promise<string[]> {
  const [rows] = await sequelize.query('SELECT name FROM "SequelizeMeta" ORDER BY name');
  return (rows as { name: string }[]).map((row) => row.name);
}

test('a file without the newest migration gets it on open and keeps its rows; an up-to-date file opens unchanged', async (t) => {
  const dir = await fileBeforeJobs(t);
  const upgraded = await openDatabase(dir);
  t.is(await upgraded.runs.count(), 0, 'the runs table is back');
  t.is(await upgraded.jobs.count(), 0, 'the jobs table is back');
  t.is((await upgraded.tokens.findByPk('carol'))?.get('role'), 'user', 'the older rows are kept');
  t.deepEqual(await applied(upgraded.sequelize), [...migrationNames].sort());
  t.true(migrationNames.includes('0005-jobs'));
  await upgraded.close();

  const again = await openDatabase(dir);
  t.is(await again.tokens.count(), 1);
  await again.close();
});

test('a migration that fails leaves the file as it was: no table of it, no record, and the next open fails the same way', async (t) => {
  // 0005 makes the jobs table, then its index jobs_owner_name: a table of that name makes it fail
  // after its first statement.
  const dir = await fileBeforeJobs(t, 'CREATE TABLE jobs_owner_name (x TEXT)');
  await t.throwsAsync(openDatabase(dir), { message: /jobs_owner_name/ });
  await t.throwsAsync(openDatabase(dir), { message: /jobs_owner_name/ });

  const { Sequelize } = await import('sequelize');
  const sequelize = new Sequelize({ dialect: 'sqlite', storage: path.join(dir, 'paddock.sqlite'), logging: false });
  t.teardown(() => sequelize.close());
  const [tables] = await sequelize.query(`SELECT name FROM sqlite_master WHERE type = 'table' AND name IN ('jobs', 'runs')`);
  t.deepEqual(tables, [], 'the jobs table the failed migration made is gone');
  t.deepEqual(await applied(sequelize), migrationNames.filter((name) => name !== '0005-jobs').sort(), 'every migration but the failed one');
  const [tokens] = await sequelize.query('SELECT name FROM tokens');
  t.deepEqual(tokens, [{ name: 'carol' }]);
});

test('tokens made before token expiry keep working and never expire; a new one can expire', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'paddock-migrations-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const first = await openDatabase(dir);
  const { Tokens } = await import('../../api/auth.js');
  const { token } = await new Tokens(first).create('carol', 'user');
  for (const statement of ['ALTER TABLE tokens DROP COLUMN expiresAt', `DELETE FROM "SequelizeMeta" WHERE name = '0012-token-expiry'`]) {
    await first.sequelize.query(statement);
  }
  await first.close();

  const upgraded = await openDatabase(dir);
  t.teardown(() => upgraded.close());
  t.deepEqual(await applied(upgraded.sequelize), [...migrationNames].sort());
  let now = Date.now();
  const tokens = new Tokens(upgraded, () => now);
  await tokens.start(dir);
  t.deepEqual(tokens.check(token), { name: 'carol', role: 'user' });
  t.is((await tokens.get('carol')).expiresAt, undefined);
  const brief = await tokens.create('brief', 'user', { expiresInSeconds: 60 });
  t.deepEqual(tokens.check(brief.token), { name: 'brief', role: 'user' });
  now += 60_000;
  t.like(tokens.check(brief.token), { expired: { name: 'brief' } }, 'refused from the second it expires');
  t.true((await tokens.get('brief')).expired);
});
