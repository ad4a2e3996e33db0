// The database file across versions: a file left by an older Paddock gets the migrations it lacks on
// the next start, and keeps its data; an up-to-date file is opened as it is.
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import test from 'ava';
import { openDatabase } from '../../api/db/index.js';

test('a file without the newest migration gets it on open and keeps its rows; an up-to-date file opens unchanged', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'paddock-migrations-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const first = await openDatabase(dir);
  await first.tokens.create({ name: 'carol', role: 'user', hash: 'h', createdAt: new Date() });
  // What a Paddock from before jobs left: no jobs or runs tables, and umzug's record without 0005.
  await first.sequelize.query('DROP TABLE runs');
  await first.sequelize.query('DROP TABLE jobs');
  await first.sequelize.query(`DELETE FROM "SequelizeMeta" WHERE name = '0005-jobs'`);
  await first.close();

  const upgraded = await openDatabase(dir);
  t.is(await upgraded.runs.count(), 0, 'the runs table is back');
  t.is(await upgraded.jobs.count(), 0, 'the jobs table is back');
  t.is((await upgraded.tokens.findByPk('carol'))?.get('role'), 'user', 'the older rows are kept');
  const [applied] = await upgraded.sequelize.query('SELECT name FROM "SequelizeMeta" ORDER BY name');
  t.deepEqual(
    (applied as { name: string }[]).map((row) => row.name),
    ['0001-initial', '0002-images', '0003-image-health', '0004-requeues', '0005-jobs', '0006-offline-machines', '0007-unreachable-machines', '0008-lab-hosts'],
  );
  await upgraded.close();

  const again = await openDatabase(dir);
  t.is(await again.tokens.count(), 1);
  await again.close();
});
