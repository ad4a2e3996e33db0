// Building the container images of deploy/container/ with buildah, as root with chroot isolation
// (no container engine runs here), into a storage kept with the build cache in
// ${PADDOCK_CONTAINER_CACHE:-~/.cache/paddock/container}. No registry can be reached from here: the
// base image is a stand-in for node:20-bookworm-slim built from Debian packages and this machine's
// Node (node-base-image.sh). test/deploy/container.test.ts builds and runs them; CI builds them
// ahead (test/deploy/prebuild.ts), so the test finds its layers cached.
import { execFile } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

const exec = promisify(execFile);
export const repository = path.resolve(import.meta.dirname, '../..');
const driver = process.env.PADDOCK_BUILDAH_DRIVER ?? 'overlay';
const cache = process.env.PADDOCK_CONTAINER_CACHE ?? path.join(os.homedir(), '.cache', 'paddock', 'container');
const storage = path.join(cache, `storage-${driver}`);
export const images = { api: 'localhost/paddock-api:test', runner: 'localhost/paddock-runner:test' };

/** buildah's global options for the kept storage. */
export const storageOptions = ['--root', path.join(storage, 'root'), '--runroot', path.join(storage, 'run'), '--storage-driver', driver];

export const buildah = async (args: string[], timeoutMs = 120_000) =>
  (
    await exec('buildah', [...storageOptions, ...args], {
      cwd: repository,
      timeout: timeoutMs,
      maxBuffer: 256 * 1024 * 1024,
    })
  ).stdout;

/** The stand-in base image, built once and kept in the storage. */
export async function buildBase(): Promise<void> {
  mkdirSync(storage, { recursive: true });
  await exec('bash', [path.join(repository, 'test/helpers/node-base-image.sh'), storage], {
    timeout: 1_800_000,
    env: { ...process.env, PADDOCK_BUILDAH_DRIVER: driver },
  });
}

/** Builds a Containerfile of deploy/container/ into `tag`, with the cache of earlier builds; the output on failure. */
export async function build(file: string, tag: string): Promise<void> {
  try {
    await buildah(
      ['bud', '--isolation', 'chroot', '--format', 'docker', '--pull=never', '--layers', '-f', `deploy/container/${file}`, '-t', tag, '.'],
      3_600_000,
    );
  } catch (error) {
    const { stdout = '', stderr = '' } = error as { stdout?: string; stderr?: string };
    throw new Error(`buildah bud ${file} failed:\n${`${stdout}\n${stderr}`.split('\n').slice(-40).join('\n')}`);
  }
}
