// What a runner host makes sure of before it takes a run (its token is read by protocol/worker.ts:
// from a file only it can read, or from PADDOCK_TOKEN, then dropped): its work folder is its own, and it can isolate runs (run-users.ts), unless it was started
// as a single-user runner host, which isolates nothing. Failures are SetupError with a message
// that says what to change.
import { chmod, lstat, mkdir } from 'node:fs/promises';
import { checkIsolation, IsolationError, type RunUsers } from './run-users.js';

export class SetupError extends Error {
  override readonly name = 'SetupError';
}

/**
 * Makes the work folder (runs get a folder each under it) and checks it is this user's alone;
 * then, unless `users` is undefined (single-user), that runs can be isolated. Throws SetupError.
 */
export async function prepareHost(workRoot: string, users: RunUsers | undefined): Promise<void> {
  await mkdir(workRoot, { recursive: true, mode: 0o700 });
  const info = await lstat(workRoot);
  // Another user owning it (made first in a shared /tmp, say) could swap a run's folder for a link.
  if (!info.isDirectory() || info.uid !== process.getuid?.() || (info.mode & 0o022) !== 0) {
    throw new SetupError(`the work folder ${workRoot} must be a folder owned by this user and writable by it alone; choose another --work`);
  }
  if (!users) return;
  // Run users pass through to their own run's folder; they cannot list the others.
  await chmod(workRoot, 0o711);
  try {
    await checkIsolation(users, workRoot);
  } catch (error) {
    if (error instanceof IsolationError) throw new SetupError(error.message);
    throw error;
  }
}
