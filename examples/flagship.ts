// The flagship job script: build an image on one machine, boot it on others, and prove they run
// what was built. It reserves an x86 VM, builds an arm64 initramfs on it, stores the result as a
// temporary image, boots two ARM boards from it as one gang, and checks both over SSH.
//
//   PADDOCK_URL=… PADDOCK_TOKEN=… PADDOCK_PARAM_BUILD_IMAGE=x86 PADDOCK_PARAM_BOARD_IMAGE=arm \
//     node --import tsx examples/flagship.ts
//
// What is built, and where: the board image named by BOARD_IMAGE (a bundle of kernel, initrd,
// cmdline, maybe dtb) is downloaded here and its initrd copied to the VM. On the VM, the guest's
// own busybox does the work: `gzip -dc | cpio -i` unpacks the initramfs, a build stamp
// (/etc/paddock-build: a stamp unique to this run, the run id, the build time, the VM's `uname -a`)
// and a check command (/usr/bin/paddock-check: prints the stamp, `uname -m` and the kernel) are
// added, and `find | sort | cpio -o -H newc | gzip` packs it again. The test images' busybox has
// all of these applets (cpio can create newc archives), so nothing is copied to the VM but the
// input and the build script: the VM really does the build, with the tools of the image it booted.
// (Why an initramfs: it is what the boards boot, and busybox is all these images have; no compiler.)
// The new initrd comes back, its sha256 checked, the VM is released at once, and the initrd is
// bundled here (`tar`) with the original kernel, cmdline and dtb: only the initrd changed, and the
// boards need the arm64 kernel. Each board then runs `paddock-check`: the stamp shows it booted
// this build, `aarch64` that it is an arm64 machine, not the x86 VM that built it.
//
// Parameters, as a runner host passes them (PADDOCK_PARAM_<NAME>):
//   BUILD_IMAGE   the image the VM boots (required)
//   BUILD_SPEC    which machine builds (default `arch=x86_64`)
//   BOARD_IMAGE   the arm64 boot bundle to extend (required)
//   BOARD_SPEC    which boards boot the result (default `arch=arm64`)
//   BOARD_COUNT   how many boards, all in one gang (default 2)
// and from the runner host: PADDOCK_URL, PADDOCK_TOKEN, PADDOCK_RUN_ID (names the image and is
// stamped into it; a random id without it), PADDOCK_RESULT (a file for the run's JSON result:
// { runId, image: {ref, sha256, size, expiresAt}, build: {machine, host, uname, stamp, initrd, …},
// boards: [{machine, role, output}], durations: {step: seconds}, error? }, written on failure too).
// Every machine is released whatever happens; any failure ends the script with exit status 1.
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, existsSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { isEvent, Paddock, PaddockError, ReservationFailedError, type ImageView, type Reservation } from 'paddock';

const run = promisify(execFile);
const started = Date.now();

/** A failure the script found itself (a bad parameter, a wrong answer from a machine). */
class JobError extends Error {}

function parameter(name: string, fallback?: string): string {
  const value = process.env[`PADDOCK_PARAM_${name}`]?.trim() || fallback;
  if (value === undefined) throw new JobError(`parameter ${name} is required (set PADDOCK_PARAM_${name})`);
  return value;
}

/** `'…'` for a POSIX shell. */
const quote = (text: string) => `'${text.replaceAll("'", "'\\''")}'`;
const seconds = (since: number) => Math.round((Date.now() - since) / 100) / 10;
const log = (line: string) => console.log(`[${seconds(started).toFixed(1).padStart(5)}s] ${line}`);

/** Waits until every machine of the reservation is ready, printing each step on the way. */
async function readyWithProgress(reservation: Reservation, what: string, timeout: number): Promise<void> {
  log(`${what}: reservation ${reservation.id} is ${reservation.state}`);
  await reservation.ready({
    timeout,
    onProgress: (update) => {
      if (isEvent(update)) log(`  ${update.machine ?? reservation.id}: ${update.to}${update.reason && update.type !== 'stage' ? ` (${update.reason})` : ''}`);
      else if (update.queuePosition) log(`  waiting in the queue at position ${update.queuePosition}`);
    },
  });
  for (const allocation of reservation.view.allocations) {
    log(`${what}: ${allocation.role}[${allocation.index}] is ${allocation.machine} at ${allocation.user}@${allocation.host}:${allocation.port}`);
  }
}

/** Runs a command and returns its output; a non-zero exit is an error naming the machine. */
async function check(reservation: Reservation, target: string, command: string, what: string): Promise<string> {
  const result = await reservation.run(target, command);
  if (result.code !== 0) {
    const detail = (result.stderr.trim() || result.stdout.trim()).split('\n').slice(-10).join('\n    ');
    throw new JobError(`${what} on ${target} failed (exit ${result.code ?? result.signal}):\n    ${detail}`);
  }
  return result.stdout;
}

async function fileSha256(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** `key=value` lines as a record (the first `=` splits). */
function keyValues(text: string): Record<string, string> {
  const record: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const at = line.indexOf('=');
    if (at > 0) record[line.slice(0, at)] = line.slice(at + 1).trim();
  }
  return record;
}

// Runs on the build VM under busybox sh: sh build.sh WORKDIR RUN_ID STAMP, with WORKDIR/initrd.in
// the input. Writes WORKDIR/initrd.out and prints what it made as key=value lines.
const buildScript = String.raw`set -eu
set -o pipefail
work=$1 run=$2 stamp=$3
cd "$work"
rm -rf root
mkdir root
cd root
gzip -dc ../initrd.in | cpio -i -d -m 2> ../unpack.log
[ -e init ] || { echo "the board image's initrd has no /init: not an initramfs" >&2; exit 1; }
mkdir -p etc usr/bin
built=$(date -u +%Y-%m-%dT%H:%M:%SZ)
{
  echo "stamp=$stamp"
  echo "run=$run"
  echo "built=$built"
  echo "builder=$(uname -a)"
} > etc/paddock-build
cat > usr/bin/paddock-check <<'EOF'
#!/bin/sh
# What this image is (the flagship build's stamp) and what it runs on.
cat /etc/paddock-build
echo "machine=$(uname -m)"
echo "kernel=$(uname -r)"
EOF
chmod 644 etc/paddock-build
chmod 755 usr/bin/paddock-check
find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 2> ../pack.log | gzip -6 -n > ../initrd.out
cd ..
gzip -dc initrd.out | cpio -t 2> /dev/null > contents
grep -qx usr/bin/paddock-check contents || { echo "the new initrd lacks usr/bin/paddock-check" >&2; exit 1; }
echo "built=$built"
echo "files=$(wc -l < contents)"
echo "size=$(wc -c < initrd.out)"
echo "sha256=$(sha256sum initrd.out | cut -d' ' -f1)"
echo "host=$(hostname)"
echo "uname=$(uname -a)"
`;

const bundleMembers = ['kernel', 'initrd', 'dtb', 'cmdline'] as const;

interface Build {
  reservation: string;
  machine: string;
  host: string;
  uname: string;
  builtAt: string;
  stamp: string;
  initrd: { size: number; sha256: string; files: number };
}

interface Result {
  runId: string;
  image?: { ref: string; sha256: string; size: number; expiresAt?: string };
  build?: Build;
  boards?: { machine: string; role: string; output: string }[];
  durations: Record<string, number>;
  error?: string;
}

const local = mkdtempSync(path.join(os.tmpdir(), 'paddock-flagship-'));
const result: Result = { runId: '', image: undefined, build: undefined, boards: undefined, durations: {} }; // keys in this order in the file
/** Times a step into the result's durations (seconds). */
async function step<T>(name: string, work: () => Promise<T>): Promise<T> {
  const since = Date.now();
  try {
    return await work();
  } finally {
    result.durations[name] = seconds(since);
  }
}

try {
  const buildImage = parameter('BUILD_IMAGE');
  const buildSpec = parameter('BUILD_SPEC', 'arch=x86_64');
  const boardImage = parameter('BOARD_IMAGE');
  const boardSpec = parameter('BOARD_SPEC', 'arch=arm64');
  const boardCount = Number(parameter('BOARD_COUNT', '2'));
  if (!Number.isInteger(boardCount) || boardCount < 1 || boardCount > 64)
    throw new JobError(`BOARD_COUNT must be a whole number from 1 to 64, not ${JSON.stringify(parameter('BOARD_COUNT'))}`);
  const runId = process.env.PADDOCK_RUN_ID?.replace(/\s+/g, ' ').trim() || `local-${randomBytes(4).toString('hex')}`;
  const stamp = `${runId}/${randomBytes(6).toString('hex')}`;
  const slug =
    runId
      .toLowerCase()
      .replace(/[^a-z0-9._-]+/g, '-')
      .replace(/^[^a-z0-9]+/, '')
      .slice(0, 80) || randomBytes(4).toString('hex');
  const imageName = `flagship-${slug}`;
  result.runId = runId;

  const paddock = new Paddock(); // PADDOCK_URL, PADDOCK_TOKEN
  log(`run ${runId}: build on ${buildSpec} (${buildImage}), boot ${boardCount} × ${boardSpec} from ${boardImage} + the build`);

  // The board image's bundle, while the VM boots: download it and unpack it here.
  const bundleDir = path.join(local, 'bundle');
  const fetched = step('download', async () => {
    await paddock.images.download(boardImage, path.join(local, 'base.tar'));
    mkdirSync(bundleDir);
    await run('tar', ['-xf', path.join(local, 'base.tar'), '-C', bundleDir]);
    if (!existsSync(path.join(bundleDir, 'initrd'))) throw new JobError(`image ${boardImage} has no initrd to extend (is it a boot bundle?)`);
    log(`downloaded ${boardImage}: initrd ${statSync(path.join(bundleDir, 'initrd')).size} bytes`);
  });
  fetched.catch(() => undefined); // awaited below; a failure before then must not go unhandled

  // 1-2. The build, on a VM that is released as soon as the build is back here.
  {
    await using builder = await paddock.reserve({ members: [{ role: 'build', spec: buildSpec, image: buildImage }], lease: '20m' });
    const ready = step('buildReady', () => readyWithProgress(builder, 'build', 600));
    await Promise.all([ready, fetched]);
    await step('build', async () => {
      const work = `/tmp/paddock-flagship-${randomBytes(4).toString('hex')}`;
      writeFileSync(path.join(local, 'build.sh'), buildScript);
      await check(builder, 'build', `mkdir -p ${quote(work)}`, 'making the work directory');
      await builder.copyTo('build', path.join(bundleDir, 'initrd'), `${work}/initrd.in`);
      await builder.copyTo('build', path.join(local, 'build.sh'), `${work}/build.sh`);
      log(`build: unpacking the initrd, adding /etc/paddock-build and /usr/bin/paddock-check, packing it again`);
      const made = keyValues(await check(builder, 'build', `sh ${quote(`${work}/build.sh`)} ${quote(work)} ${quote(runId)} ${quote(stamp)}`, 'the build'));
      await builder.copyFrom('build', `${work}/initrd.out`, path.join(bundleDir, 'initrd'));
      const sha256 = await fileSha256(path.join(bundleDir, 'initrd'));
      if (sha256 !== made.sha256)
        throw new JobError(`the initrd copied back differs from the one built (sha256 ${sha256.slice(0, 12)}…, built ${made.sha256?.slice(0, 12)}…)`);
      const allocation = builder.view.allocations[0];
      result.build = {
        reservation: builder.id,
        machine: allocation.machine,
        host: made.host ?? '',
        uname: made.uname ?? '',
        builtAt: made.built ?? '',
        stamp,
        initrd: { size: Number(made.size), sha256: made.sha256 ?? '', files: Number(made.files) },
      };
      log(`build: ${made.files} files, ${made.size} bytes, sha256 ${made.sha256?.slice(0, 12)}… on ${made.uname}`);
    });
    log(`build: releasing ${builder.id}`);
  }

  // 3. The new bundle: the original kernel, cmdline and dtb with the new initrd, as a temporary image.
  const image: ImageView = await step('upload', async () => {
    const members = bundleMembers.filter((member) => existsSync(path.join(bundleDir, member)));
    const bundle = path.join(local, 'flagship.tar');
    await run('tar', ['--create', '--file', bundle, '--directory', bundleDir, '--owner=0', '--group=0', '--numeric-owner', ...members]);
    let shown = 0;
    const uploaded = await paddock.images.upload(bundle, {
      name: imageName,
      format: 'bundle',
      arch: 'arm64',
      expires: '2h',
      onProgress: (sent, total) => {
        const percent = total > 0 ? Math.floor((sent / total) * 100) : 100;
        if (percent >= shown + 25 || (sent === total && shown < 100)) {
          shown = percent;
          log(`  uploading ${imageName}: ${percent}%`);
        }
      },
    });
    log(`uploaded ${uploaded.ref} (${members.join(', ')}; ${uploaded.size} bytes, expires ${uploaded.expiresAt ?? 'never'})`);
    return uploaded;
  });
  result.image = { ref: image.ref, sha256: image.sha256, size: image.size, ...(image.expiresAt ? { expiresAt: image.expiresAt } : {}) };

  // 4-5. The boards, one gang booted from the new image, checked in parallel.
  {
    await using boards = await paddock.reserve({ members: [{ role: 'board', spec: boardSpec, image: image.ref, count: boardCount }], lease: '20m' });
    await step('boardsReady', () => readyWithProgress(boards, 'boards', 900));
    result.boards = await step('check', () =>
      Promise.all(
        boards.view.allocations.map(async (allocation) => {
          const target = `${allocation.role}.${allocation.index}`;
          const output = await check(boards, target, 'paddock-check', 'paddock-check');
          const said = keyValues(output);
          if (said.stamp !== stamp)
            throw new JobError(`${allocation.machine} did not boot this build: its stamp is ${JSON.stringify(said.stamp)}, not ${JSON.stringify(stamp)}`);
          if (said.machine !== 'aarch64') throw new JobError(`${allocation.machine} is ${JSON.stringify(said.machine)}, not aarch64`);
          log(`${allocation.machine}: runs build ${said.stamp} (built ${said.built}) on ${said.machine}, kernel ${said.kernel}`);
          return { machine: allocation.machine, role: target, output };
        }),
      ),
    );
    log(`boards: releasing ${boards.id}`);
  }

  result.durations.total = seconds(started);
  const durations = Object.entries(result.durations)
    .map(([name, value]) => `${name} ${value}s`)
    .join(', ');
  log(
    `summary: built ${image.ref} on ${result.build?.machine}, booted on ${result.boards.map((board) => board.machine).join(' and ')}, all checked; ${durations}`,
  );
} catch (error) {
  let message = error instanceof Error ? error.message : String(error);
  if (error instanceof ReservationFailedError && error.failureCode) message += ` [${error.failureCode}]`;
  else if (error instanceof PaddockError) message += ` [${error.code}]`;
  result.error = message;
  result.durations.total = seconds(started);
  console.error(`job failed: ${message}`);
  process.exitCode = 1;
} finally {
  rmSync(local, { recursive: true, force: true });
  if (process.env.PADDOCK_RESULT) writeFileSync(process.env.PADDOCK_RESULT, `${JSON.stringify(result, null, 2)}\n`);
}
