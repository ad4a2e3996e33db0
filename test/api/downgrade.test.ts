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

const bin = path.resolve(import.meta.dirname, '../../bin/paddock.js');

test('a database from a newer Paddock is refused at start, with a clear message and exit status 3, and left as it was', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'paddock-downgrade-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const db = await openDatabase(dir);
  await db.tokens.create({ name: 'carol', role: 'user', hash: 'h', createdAt: new Date() });
  await db.sequelize.query(`INSERT INTO "SequelizeMeta" (name) VALUES ('0099-from-the-future')`);
  await db.close();
  const file = path.join(dir, 'paddock.sqlite');
  const before = readFileSync(file);

  const error = await t.throwsAsync(openDatabase(dir), { instanceOf: NewerDatabaseError });
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
    execFile(process.execPath, [bin, 'serve', '--data', dir, '--listen', `127.0.0.1:${port}`], { env, timeout: 120_000 }, (failure, _stdout, stderr) =>
      resolve({ code: failure ? ((failure as { code?: number }).code ?? null) : 0, stderr }),
    );
  });
  t.is(started.code, 3, started.stderr);
  t.regex(started.stderr, /paddock: .*paddock\.sqlite was written by a newer Paddock: it has migration 0099-from-the-future/);
  t.regex(started.stderr, /A downgrade is refused, the file is left as it is: run the newer Paddock again, or restore a backup made before the upgrade/);
  t.deepEqual(readFileSync(file), before, 'the file is unchanged');
});
