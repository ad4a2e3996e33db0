// `paddock backup FILE`: a copy of the database made while `paddock serve` runs and writes. Each copy
// is one committed state (the tokens written one after the other are a gapless run of them, as many
// as were written around the copy), passes SQLite's integrity check, is the owner's alone, and a
// server restored from it (stop, copy in place, start) starts and serves what it holds.
import { spawn } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import test from 'ava';
import sqlite3 from 'sqlite3';
import type { TokenView } from '../../protocol/api.js';
import { jsonClient } from '../helpers/api.js';
import { freePort } from '../helpers/ports.js';
import { runPaddock, startServerProcess, stopGracefully } from '../helpers/server.js';

/** The tokens named w-NNNNN in a database file, and its integrity check. */
function readBackup(file: string): Promise<{ integrity: string; written: string[] }> {
  return new Promise((resolve, reject) => {
    const db = new sqlite3.Database(file, sqlite3.OPEN_READONLY, (error) => {
      if (error) return reject(error);
      db.get('PRAGMA integrity_check', (checkError, check: { integrity_check: string }) => {
        if (checkError) return reject(checkError);
        db.all(`SELECT name FROM tokens WHERE name LIKE 'w-%' ORDER BY name`, (listError, rows: { name: string }[]) => {
          db.close();
          if (listError) return reject(listError);
          resolve({ integrity: check.integrity_check, written: rows.map((row) => row.name) });
        });
      });
    });
  });
}

const tokenName = (index: number) => `w-${String(index).padStart(5, '0')}`;

test('a backup taken while the server writes is consistent, checked and private, and a server starts on it', async (t) => {
  t.timeout(600_000);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'paddock-backup-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const config = path.join(dir, 'paddock.yaml');
  writeFileSync(config, `listen: 127.0.0.1:${port}\ndataDir: data\nagent: { enabled: false }\nmachines: []\n`);
  let server = await startServerProcess(['--config', config], url);
  t.teardown(() => stopGracefully(server));
  const adminToken = readFileSync(path.join(dir, 'data', 'admin-token'), 'utf8').trim();
  const admin = jsonClient(url, adminToken);

  // One token after the other, each its own commit, as fast as the API takes them.
  let written = 0;
  let writing = true;
  const writer = (async () => {
    while (writing) {
      const created = await admin.post('v1/tokens', { json: { name: tokenName(written), role: 'user' } });
      if (created.statusCode !== 201) throw new Error(`token ${written}: ${JSON.stringify(created.body)}`);
      written += 1;
    }
  })();
  while (written < 20) await new Promise((resolve) => setTimeout(resolve, 20));

  const backups: { file: string; before: number; after: number }[] = [];
  for (let index = 0; index < 3; index++) {
    const file = path.join(dir, `backup-${index}.sqlite`);
    const before = written;
    const result = await runPaddock(url, adminToken, ['backup', file, '--config', config, '--json']);
    const after = written;
    t.is(result.code, 0, result.stderr);
    const answer = JSON.parse(result.stdout) as { file: string; bytes: number; migrations: string[] };
    t.is(answer.file, file);
    t.is(answer.bytes, statSync(file).size);
    t.true(answer.migrations.includes('0001-initial'));
    backups.push({ file, before, after });
  }
  writing = false;
  await writer;
  t.true(written > backups[0].before, 'the server went on writing while the backups were made');

  for (const { file, before, after } of backups) {
    const { integrity, written: copied } = await readBackup(file);
    t.is(integrity, 'ok');
    t.deepEqual(
      copied,
      Array.from({ length: copied.length }, (_, index) => tokenName(index)),
      'a gapless run of the tokens: one committed state',
    );
    t.true(copied.length >= before && copied.length <= after, `${copied.length} tokens, written ${before} before and ${after} after the copy`);
    t.is(statSync(file).mode & 0o777, 0o600, 'the copy holds private keys: owner only');
    t.false(existsSync(`${file}-wal`), 'a single file');
  }

  const refused = await runPaddock(url, adminToken, ['backup', backups[0].file, '--data', path.join(dir, 'data')]);
  t.is(refused.code, 1);
  t.regex(refused.stderr, /backup-0\.sqlite exists: give another name, or --force to replace it \(backup_failed\)/);
  const replaced = await runPaddock(url, adminToken, ['backup', backups[0].file, '--data', path.join(dir, 'data'), '--force']);
  t.is(replaced.code, 0, replaced.stderr);
  t.regex(replaced.stdout, /backup-0\.sqlite: \d+ bytes, schema \d{4}-[a-z-]+, integrity ok/);
  const nowhere = await runPaddock(url, adminToken, ['backup', path.join(dir, 'x.sqlite'), '--data', path.join(dir, 'nothing-here')]);
  t.is(nowhere.code, 1);
  t.regex(nowhere.stderr, /no database at .*nothing-here\/paddock\.sqlite/);
  t.false(existsSync(path.join(dir, 'nothing-here', 'paddock.sqlite')), 'no empty database made');

  // Restore: stop, put the copy in place of the database (and no -wal or -shm of the old one), start.
  const restored = backups[1];
  const { written: expected } = await readBackup(restored.file);
  await stopGracefully(server);
  for (const suffix of ['', '-wal', '-shm']) rmSync(path.join(dir, 'data', `paddock.sqlite${suffix}`), { force: true });
  copyFileSync(restored.file, path.join(dir, 'data', 'paddock.sqlite'));
  server = await startServerProcess(['--config', config], url);
  const tokens = (await admin.get('v1/tokens', { searchParams: { limit: 1000 } })).body as TokenView[];
  t.deepEqual(
    tokens.map((token) => token.name).filter((name) => name.startsWith('w-')),
    expected,
    'the restored server has what the backup had, and the admin token still works',
  );
  t.is((await admin.post('v1/tokens', { json: { name: 'after-restore', role: 'user' } })).statusCode, 201, 'and takes writes');
});

test('paddock backup needs a file name', async (t) => {
  const result = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
    const child = spawn(process.execPath, [path.resolve(import.meta.dirname, '../../bin/paddock.js'), 'backup'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.once('exit', (code) => resolve({ code, stderr }));
  });
  t.is(result.code, 2);
  t.regex(result.stderr, /missing <file>; usage: paddock backup/);
});
