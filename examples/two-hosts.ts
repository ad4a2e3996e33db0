// An example job script. It reserves two machines at once (one gang: Paddock grants both or neither),
// waits until both are ready while showing progress, runs commands on both in parallel over SSH,
// writes a file on `build`, brings it back to this machine and sends it on to `test`, checks it
// arrived intact, and releases both hosts when the scope ends, whatever happens in between.
//
//   PADDOCK_URL=http://127.0.0.1:7300 PADDOCK_TOKEN=… PADDOCK_EXAMPLE_IMAGE=debian-tiny \
//     node --import tsx examples/two-hosts.ts
//
// PADDOCK_EXAMPLE_SPEC picks the machines (default `arch=x86_64`; `paddock explain SPEC` shows what
// a spec matches) and PADDOCK_EXAMPLE_IMAGE the image they boot (VMs need one; static hosts ignore
// it). The script exits non-zero if anything fails.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { isEvent, Paddock } from '../client/index.js';

const spec = process.env.PADDOCK_EXAMPLE_SPEC ?? 'arch=x86_64';
const image = process.env.PADDOCK_EXAMPLE_IMAGE || undefined;
const local = mkdtempSync(path.join(os.tmpdir(), 'paddock-example-'));

try {
  const paddock = new Paddock(); // reads PADDOCK_URL and PADDOCK_TOKEN

  // `await using`: the reservation is released when this block ends, by success or by error.
  // Until then the library renews the lease in the background.
  await using reservation = await paddock.reserve({
    members: [
      { role: 'build', spec, image },
      { role: 'test', spec, image },
    ],
    lease: '10m',
  });
  console.log(`reserved ${reservation.id} (${reservation.state})`);

  // Progress: state changes of the reservation and readiness stages of each machine.
  await reservation.ready({
    timeout: 300,
    onProgress: (update) => {
      if (isEvent(update)) console.log(`  ${update.machine ?? reservation.id}: ${update.to}`);
      else if (update.queuePosition) console.log(`  waiting in the queue at position ${update.queuePosition}`);
    },
  });
  for (const allocation of reservation.view.allocations) {
    console.log(`${allocation.role}: ${allocation.machine} at ${allocation.user}@${allocation.host}:${allocation.port}`);
  }

  // The same commands on both machines at once. A command that fails is not an exception by
  // itself: look at `code`.
  const roles = ['build', 'test'] as const;
  const answers = await Promise.all(
    roles.map(async (role) => {
      const [uname, hostname] = await Promise.all([reservation.run(role, 'uname -a'), reservation.run(role, 'hostname')]);
      for (const result of [uname, hostname]) {
        if (result.code !== 0) throw new Error(`${role}: exit ${result.code}: ${result.stderr.trim()}`);
      }
      return { role, uname: uname.stdout.trim(), hostname: hostname.stdout.trim() };
    }),
  );
  for (const answer of answers) console.log(`${answer.role} says: ${answer.uname} (hostname ${answer.hostname})`);

  // A file made on `build`, copied to this machine, then on to `test`; its checksum proves it
  // arrived intact.
  const remote = `/tmp/paddock-example-${reservation.id}.txt`;
  const artifact = path.join(local, 'artifact.txt');
  const made = await reservation.run('build', `printf 'built by %s on %s\\n' "$(id -un)" "$(hostname)" > ${remote} && sha256sum ${remote}`);
  if (made.code !== 0) throw new Error(`build: could not write ${remote}: ${made.stderr.trim()}`);
  const expected = made.stdout.split(' ')[0];
  await reservation.copyFrom('build', remote, artifact);
  await reservation.copyTo('test', artifact, `${remote}.copy`);
  const check = await reservation.run('test', `sha256sum ${remote}.copy`);
  await Promise.all([reservation.run('build', `rm -f ${remote}`), reservation.run('test', `rm -f ${remote}.copy`)]);
  if (check.code !== 0 || check.stdout.split(' ')[0] !== expected) {
    throw new Error(`the copy on test differs from the file on build (${check.stdout.trim() || check.stderr.trim()})`);
  }
  console.log(`copied build:${remote} to test intact: ${readFileSync(artifact, 'utf8').trim()}`);

  console.log(
    `summary: ${answers.map((answer) => `${answer.role}=${answer.hostname}`).join(', ')}; file checksum ${expected.slice(0, 12)}…; releasing ${reservation.id}`,
  );
} catch (error) {
  console.error(`job failed: ${(error as Error).message}`);
  process.exitCode = 1;
} finally {
  rmSync(local, { recursive: true, force: true });
}
