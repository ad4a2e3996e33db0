// What a runner host makes sure of before it takes a run: its token comes from a file only it can
// read (or from PADDOCK_TOKEN, which is then dropped from its environment so no child inherits
// it), its work folder is its own, and it can isolate runs (run-users.ts), unless it was started
// as a single-user runner host, which isolates nothing. Failures are SetupError with a message
// that says what to change.
import { constants } from 'node:fs';
import { chmod, lstat, mkdir, open } from 'node:fs/promises';
import { checkIsolation, IsolationError, type RunUsers } from './run-users.js';

export class SetupError extends Error {
  override readonly name = 'SetupError';
}

/** A token is a line of text; a "token file" much bigger than that is a mistake. */
const tokenFileLimit = 4096;

/**
 * The runner host's token: from `tokenFile` (a regular file owned by this user, mode 0600 or
 * stricter), else from PADDOCK_TOKEN. Either way PADDOCK_TOKEN leaves this process's environment.
 */
export async function runnerToken(tokenFile: string | undefined): Promise<string> {
  const fromEnvironment = process.env.PADDOCK_TOKEN;
  delete process.env.PADDOCK_TOKEN;
  if (tokenFile === undefined) {
    if (!fromEnvironment) throw new SetupError('no token: give --token-file FILE (mode 0600), or set PADDOCK_TOKEN');
    return fromEnvironment;
  }
  let handle;
  try {
    handle = await open(tokenFile, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch (error) {
    throw new SetupError(`cannot read the token file ${tokenFile}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
  }
  try {
    const info = await handle.stat();
    if (!info.isFile()) throw new SetupError(`the token file ${tokenFile} is not a regular file`);
    if (info.uid !== process.getuid?.() || (info.mode & 0o077) !== 0) {
      throw new SetupError(`the token file ${tokenFile} must be owned by this user (uid ${process.getuid?.()}) and readable by it alone: chown ${process.getuid?.()} ${tokenFile} && chmod 600 ${tokenFile}`);
    }
    const buffer = Buffer.alloc(tokenFileLimit);
    const { bytesRead } = await handle.read(buffer, 0, tokenFileLimit, 0);
    const token = buffer.subarray(0, bytesRead).toString('utf8').trim();
    if (!token || /\s/.test(token) || bytesRead === tokenFileLimit) throw new SetupError(`the token file ${tokenFile} must hold the token alone, on one line`);
    return token;
  } finally {
    await handle.close();
  }
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
