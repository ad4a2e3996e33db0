// An example job script. It reserves two hosts at once (one gang: both or neither), waits until
// both are ready, runs commands on both in parallel over SSH, makes a file on one, copies it to the
// other through this machine, checks it arrived intact, and releases both when the scope ends,
// whatever happens in between.
//
//   PADDOCK_URL=… PADDOCK_TOKEN=… node --import tsx examples/two-hosts.ts
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Paddock } from '../client/index.js';

const spec = process.env.PADDOCK_EXAMPLE_SPEC ?? 'kind=static';
const paddock = new Paddock();
const local = mkdtempSync(path.join(os.tmpdir(), 'paddock-example-'));

try {
  await using reservation = await paddock.reserve({
    members: [
      { role: 'build', spec },
      { role: 'test', spec },
    ],
    lease: '10m',
  });
  console.log(`reserved ${reservation.id} (${reservation.state})`);
  await reservation.ready({ timeout: 300, onProgress: (event) => console.log(`  ${event.machine ?? reservation.id}: ${event.to}`) });
  for (const allocation of reservation.view.allocations) {
    console.log(`${allocation.role}: ${allocation.machine} at ${allocation.user}@${allocation.host}:${allocation.port}`);
  }

  // Both machines at once.
  const [build, test] = await Promise.all([reservation.run('build', 'uname -sr && hostname'), reservation.run('test', 'uname -sr && hostname')]);
  for (const [role, result] of [['build', build], ['test', test]] as const) {
    if (result.code !== 0) throw new Error(`${role}: exit ${result.code}: ${result.stderr}`);
    console.log(`${role} says: ${result.stdout.trim().replace(/\n/g, ' / ')}`);
  }

  // A file made on one machine, carried to the other.
  const remote = `/tmp/paddock-example-${reservation.id}.txt`;
  const made = await reservation.run('build', `printf 'built by %s on %s\\n' "$(id -un)" "$(date -u +%FT%TZ)" > ${remote} && sha256sum ${remote}`);
  if (made.code !== 0) throw new Error(`build: could not write ${remote}: ${made.stderr}`);
  const expected = made.stdout.split(' ')[0];
  await reservation.copyFrom('build', remote, path.join(local, 'artifact.txt'));
  await reservation.copyTo('test', path.join(local, 'artifact.txt'), `${remote}.copy`);
  const check = await reservation.run('test', `sha256sum ${remote}.copy && rm -f ${remote}.copy`);
  await reservation.run('build', `rm -f ${remote}`);
  if (check.stdout.split(' ')[0] !== expected) throw new Error('the copy on test differs from the file on build');
  console.log(`copied build:${remote} to test intact: ${readFileSync(path.join(local, 'artifact.txt'), 'utf8').trim()}`);
  console.log(`releasing ${reservation.id}`);
} catch (error) {
  console.error(`job failed: ${(error as Error).message}`);
  process.exitCode = 1;
} finally {
  rmSync(local, { recursive: true, force: true });
}
