// Getting a run's code: which commit a ref names (asked when a run is made, so the run keeps
// running the same code however the branch moves), and a checkout of exactly that commit with
// the job script's path resolved inside it. The repository and the script path come from users,
// so the repository must pass the rules the API sent with the run and git runs fenced by them
// (protocol/repository.ts: allowed transports only, no redirects, no hooks, no prompts), and a script path may not leave
// the checkout (`..`, an absolute path, or a symlink pointing out). Errors carry a stable code and
// a message for the CI engineer that never shows a credential written in the repository URL.
import { execFile } from 'node:child_process';
import { realpath, stat } from 'node:fs/promises';
import path from 'node:path';
import {
  checkRepository,
  CheckoutError,
  displayRepository,
  gitFence,
  gitReason as gitStderrReason,
  hostSshCommand,
  type RepositoryRules,
} from '../protocol/repository.js';

export { CheckoutError, displayRepository, resolveRef, type CheckoutErrorCode } from '../protocol/repository.js';

/** How long a clone may take before it is given up (large repositories over slow links). */
export const cloneTimeoutMs = 10 * 60_000;
/** How long every other git command may take (fetch of one commit, checkout). */
export const gitTimeoutMs = 2 * 60_000;

const commitPattern = /^(?:[0-9a-f]{40}|[0-9a-f]{64})$/;

export interface CheckoutTask {
  repository: string;
  commit: string;
  script: string;
  /** The API's repository rules for this run: the runner host clones nothing they refuse. */
  repositoryRules: RepositoryRules;
}

/**
 * Clones `task.repository` into `dir` (which must not exist or be empty), checks out `task.commit`
 * detached and checks HEAD is that commit, then resolves the script inside the checkout.
 * `scriptPath` is the script's real path (symlinks followed), a regular file inside the checkout.
 * Throws CheckoutError; an abort rejects with the signal's reason instead.
 */
export async function checkout(task: CheckoutTask, dir: string, signal?: AbortSignal): Promise<{ scriptPath: string }> {
  const shown = displayRepository(task.repository);
  const commit = task.commit.toLowerCase();
  if (!commitPattern.test(commit)) {
    throw new CheckoutError(
      'commit_not_found',
      `'${task.commit}' is not a full commit id (repository ${shown}); a run checks out the commit its ref was resolved to`,
    );
  }
  checkScriptPath(task.script, `repository ${shown} at commit ${commit}`);
  const { gitUrl } = await checkRepository(task.repository, task.repositoryRules);
  const rules = task.repositoryRules;
  try {
    // --no-hardlinks: a clone of a local repository would otherwise share its object files, which
    // become the run user's when the checkout is handed over (execute.ts).
    await git(['clone', '--no-checkout', '--no-hardlinks', '--quiet', '--', gitUrl, dir], { rules, timeoutMs: cloneTimeoutMs, signal });
  } catch (error) {
    if (signal?.aborted) throw signal.reason;
    throw new CheckoutError('repository_unreachable', `cannot clone repository ${shown}: ${gitReason(error)}`, { cause: error });
  }
  const inCheckout = (args: string[], timeoutMs = gitTimeoutMs) => git(['-C', dir, ...args], { rules, timeoutMs, signal });
  if (!(await hasCommit(inCheckout, commit))) {
    // Not on any branch or tag the clone brought (a pull request's head, a force-pushed branch):
    // servers that allow fetching a commit by id still have it.
    await inCheckout(['fetch', '--quiet', 'origin', commit], cloneTimeoutMs).catch(() => undefined);
    if (signal?.aborted) throw signal.reason;
    if (!(await hasCommit(inCheckout, commit))) {
      throw new CheckoutError('commit_not_found', `commit ${commit} is not in repository ${shown} (was the branch force-pushed or the commit never pushed?)`);
    }
  }
  try {
    await inCheckout(['-c', 'advice.detachedHead=false', 'checkout', '--quiet', '--detach', commit]);
  } catch (error) {
    if (signal?.aborted) throw signal.reason;
    throw new CheckoutError('repository_unreachable', `cannot check out commit ${commit} of repository ${shown}: ${gitReason(error)}`, { cause: error });
  }
  const head = (await inCheckout(['rev-parse', 'HEAD'])).trim();
  if (head !== commit) throw new CheckoutError('commit_not_found', `checking out commit ${commit} of repository ${shown} gave ${head} instead`);
  // The script gets the checkout, not the credentials: the remote the clone recorded keeps none.
  if (shown !== task.repository) await inCheckout(['remote', 'set-url', 'origin', shown]);
  return { scriptPath: await resolveScript(dir, task.script, `repository ${shown} at commit ${commit}`) };
}

/**
 * The real path of `script` inside `dir`. It must be relative, have no `..` segment, stay inside
 * `dir` once every symlink is followed, and be a regular file. `where` names the checkout in errors.
 */
export async function resolveScript(dir: string, script: string, where: string): Promise<string> {
  checkScriptPath(script, where);
  const top = await realpath(dir);
  let real: string;
  try {
    real = await realpath(path.join(top, script));
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') throw new CheckoutError('script_not_found', `script '${script}' not found in ${where}`, { cause: error });
    if (code === 'ELOOP') throw new CheckoutError('script_not_found', `script '${script}' is a symlink loop in ${where}`, { cause: error });
    throw error;
  }
  const relative = path.relative(top, real);
  if (relative === '..' || relative.startsWith(`..${path.sep}`) || path.isAbsolute(relative)) {
    throw new CheckoutError('script_outside_repository', `script '${script}' leads outside the repository through a symlink (${where})`);
  }
  if (relative.split(path.sep)[0] === '.git')
    throw new CheckoutError('script_not_found', `script '${script}' is inside git's own directory, not a file of ${where}`);
  if (!(await stat(real)).isFile()) throw new CheckoutError('script_not_found', `script '${script}' is not a regular file in ${where}`);
  return real;
}

/** Throws unless `script` reads as a path inside a repository: relative, with no `..` segment. */
function checkScriptPath(script: string, where: string): void {
  if (script === '' || path.isAbsolute(script) || script.split(/[\\/]/).includes('..')) {
    throw new CheckoutError(
      'script_outside_repository',
      `script '${script}' is not a path inside the repository (${where}): give it relative to the repository's top, without '..'`,
    );
  }
}

async function hasCommit(inCheckout: (args: string[]) => Promise<string>, commit: string): Promise<boolean> {
  return inCheckout(['cat-file', '-e', `${commit}^{commit}`]).then(
    () => true,
    () => false,
  );
}

/** Runs git fenced by the repository rules (protocol/repository.ts). Resolves with stdout; rejects with execFile's error, which carries stderr. */
async function git(args: string[], options: { rules: RepositoryRules; timeoutMs: number; signal?: AbortSignal }): Promise<string> {
  const fence = gitFence(options.rules, await hostSshCommand());
  return new Promise((resolve, reject) => {
    execFile(
      'git',
      [...fence.args, ...args],
      { env: fence.env, timeout: options.timeoutMs, signal: options.signal, maxBuffer: 64 * 1024 * 1024, encoding: 'utf8' },
      (error, stdout, stderr) => {
        if (error) reject(Object.assign(error, { stderr }));
        else resolve(stdout);
      },
    );
  });
}

/** git's own words for a failure, one line, credentials in URLs masked. */
function gitReason(error: unknown): string {
  const failure = error as { stderr?: string; killed?: boolean; code?: unknown; message?: string };
  if (failure.killed) return 'git took too long and was stopped';
  if (failure.code === 'ENOENT') return 'git is not installed on the runner host';
  return gitStderrReason(String(failure.stderr ?? '')) || displayRepository(failure.message ?? 'git failed');
}
