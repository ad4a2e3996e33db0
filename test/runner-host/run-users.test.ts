// The run users of an isolating runner host: one uid per run at a time, even across runner hosts
// (two pools over one range here, as two runner hosts on one machine), skipped when /etc/passwd
// names it, a lock left by a runner host that died taken over, and nothing of a run (processes,
// files in the shared temp folders) left for the uid's next run. Runs as root, as CI does.
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync, chownSync, existsSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import test from 'ava';
import { processesOf } from '../../runner-host/launch.js';
import { RunUsers } from '../../runner-host/run-users.js';
import { waitFor } from '../helpers/wait.js';

let locks: string;
test.before(() => {
  locks = mkdtempSync(path.join(os.tmpdir(), 'paddock-run-users-'));
});
test.after.always(() => rmSync(locks, { recursive: true, force: true }));

test.serial('two pools over one range never hand out the same uid at once; a freed uid is handed out again', async (t) => {
  const first = new RunUsers(61950, 61953, locks);
  const second = new RunUsers(61950, 61953, locks);
  const held = await Promise.all([first.acquire(), second.acquire(), first.acquire(), second.acquire()]);
  t.is(new Set(held.map((user) => user.uid)).size, 4, 'four runs, four uids');
  t.true(held.every((user) => user.gid === user.uid));
  await t.throwsAsync(first.acquire(), { message: /no free run user: every uid of 61950-61953 is held/ });
  await held[0].release();
  const again = await second.acquire();
  t.is(again.uid, held[0].uid);
  await Promise.all([again, ...held.slice(1)].map((user) => user.release()));
});

test.serial('a uid /etc/passwd names is never handed out', async (t) => {
  const ids = (file: string) =>
    readFileSync(file, 'utf8')
      .split('\n')
      .map((line) => Number(line.split(':')[2]))
      .filter(Number.isInteger);
  const taken = new Set([...ids('/etc/passwd'), ...ids('/etc/group')]);
  // An account's uid followed by a number nothing names.
  const named = ids('/etc/passwd').find((uid) => uid > 0 && !taken.has(uid + 1))!;
  const users = new RunUsers(named, named + 1, locks);
  const user = await users.acquire();
  t.is(user.uid, named + 1);
  await t.throwsAsync(users.acquire(), { message: /no free run user/ });
  await user.release();
});

test.serial(
  "freeing a uid kills what it still runs and removes its files from /tmp; a dead runner host's lock is taken over, and what it left is cleared",
  async (t) => {
    const users = new RunUsers(61960, 61960, locks);
    const user = await users.acquire();
    const leftFile = path.join('/tmp', `paddock-left-${user.uid}-${process.pid}`);
    const survivor = spawn('sh', ['-c', `setsid sleep 1000 & echo left > ${leftFile}; sleep 1000`], {
      uid: user.uid,
      gid: user.gid,
      detached: true,
      stdio: 'ignore',
    });
    await waitFor(async () => existsSync(leftFile) && (await processesOf(user.uid)).length >= 3, 120_000, "the run user's processes");
    await user.release();
    t.deepEqual(await processesOf(user.uid), [], 'no process of the uid is left');
    t.false(existsSync(leftFile), 'its file in /tmp is gone');
    t.not(survivor.exitCode ?? survivor.signalCode, undefined);

    // A runner host that died holding the uid: its lock names a process that no longer exists.
    mkdirSync(path.join(locks, '61960'));
    writeFileSync(path.join(locks, '61960', 'owner'), '999999999 1');
    const planted = path.join('/tmp', `paddock-planted-${process.pid}`);
    writeFileSync(planted, 'from the last run');
    chownSync(planted, 61960, 61960);
    const taken = await users.acquire();
    t.is(taken.uid, 61960);
    t.false(existsSync(planted), 'what the last run left is cleared before the uid is handed out again');
    await taken.release();
  },
);
