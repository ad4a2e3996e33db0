// Getting a run's code: which commit a ref names (asked when a run is made, so the run keeps
// running the same code however the branch moves), and a checkout of exactly that commit with
// the job script's path resolved inside it. The repository and the script path come from users,
// so git runs with no hooks, no prompts and no `ext::` transport, and a script path may not leave
// the checkout (`..`, an absolute path, or a symlink pointing out). Errors carry a stable code and
// a message for the CI engineer that never shows a credential written in the repository URL.
import { execFile } from 'node:child_process';
import { realpath, stat } from 'node:fs/promises';
import path from 'node:path';

export type CheckoutErrorCode = 'repository_unreachable' | 'ref_not_found' | 'commit_not_found' | 'script_not_found' | 'script_outside_repository';

export class CheckoutError extends Error {
  override readonly name = 'CheckoutError';
  constructor(readonly code: CheckoutErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

/** How long a clone may take before it is given up (large repositories over slow links). */
export const cloneTimeoutMs = 10 * 60_000;
/** How long every other git command may take (ls-remote, fetch of one commit, checkout). */
export const gitTimeoutMs = 2 * 60_000;

const commitPattern = /^(?:[0-9a-f]{40}|[0-9a-f]{64})$/;

/** The repository as it may be shown: `https://user:secret@host/x` becomes `https://***@host/x`. */
export function displayRepository(repository: string): string {
  return repository.replace(/([a-z][a-z0-9+.-]*:\/\/)[^/@\s]*@/gi, '$1***@');
}

/**
 * The commit `ref` points at in `repository`: a branch, a tag (annotated tags give the commit they
 * tag), a full ref name, `HEAD`, or a full commit id (taken as it is when no ref has that name:
 * a remote cannot be asked whether it holds a commit without fetching it).
 */
export async function resolveRef(repository: string, ref: string, signal?: AbortSignal): Promise<string> {
  const shown = displayRepository(repository);
  if (ref === '' || ref.startsWith('-') || /[\s\p{Cc}]/u.test(ref)) {
    throw new CheckoutError('ref_not_found', `ref '${ref}' is not a valid branch, tag or commit name (repository ${shown})`);
  }
  let listing: string;
  try {
    listing = await git(['ls-remote', '--', repository, ref, `${ref}^{}`], { timeoutMs: gitTimeoutMs, signal });
  } catch (error) {
    if (signal?.aborted) throw signal.reason;
    throw new CheckoutError('repository_unreachable', `cannot read repository ${shown}: ${gitReason(error)}`, { cause: error });
  }
  const refs = new Map<string, string>();
  for (const line of listing.split('\n')) {
    const [commit, name] = line.split('\t');
    if (commit && name) refs.set(name, commit);
  }
  // git's own order for a short name (gitrevisions(7)); an annotated tag's peeled line wins.
  const candidates = [ref, `refs/${ref}`, `refs/tags/${ref}`, `refs/heads/${ref}`, `refs/remotes/${ref}`, `refs/remotes/${ref}/HEAD`];
  for (const name of candidates) {
    const commit = refs.get(`${name}^{}`) ?? refs.get(name);
    if (commit) return commit;
  }
  if (commitPattern.test(ref.toLowerCase())) return ref.toLowerCase();
  throw new CheckoutError('ref_not_found', `ref '${ref}' not found in repository ${shown} (give a branch, a tag, or a full 40-digit commit id)`);
}

export interface CheckoutTask {
  repository: string;
  commit: string;
  script: string;
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
    throw new CheckoutError('commit_not_found', `'${task.commit}' is not a full commit id (repository ${shown}); a run checks out the commit its ref was resolved to`);
  }
  checkScriptPath(task.script, `repository ${shown} at commit ${commit}`);
  try {
    // --no-hardlinks: a clone of a local repository would otherwise share its object files, which
    // become the run user's when the checkout is handed over (execute.ts).
    await git(['clone', '--no-checkout', '--no-hardlinks', '--quiet', '--', task.repository, dir], { timeoutMs: cloneTimeoutMs, signal });
  } catch (error) {
    if (signal?.aborted) throw signal.reason;
    throw new CheckoutError('repository_unreachable', `cannot clone repository ${shown}: ${gitReason(error)}`, { cause: error });
  }
  const inCheckout = (args: string[], timeoutMs = gitTimeoutMs) => git(['-C', dir, ...args], { timeoutMs, signal });
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
  if (relative.split(path.sep)[0] === '.git') throw new CheckoutError('script_not_found', `script '${script}' is inside git's own directory, not a file of ${where}`);
  if (!(await stat(real)).isFile()) throw new CheckoutError('script_not_found', `script '${script}' is not a regular file in ${where}`);
  return real;
}

/** Throws unless `script` reads as a path inside a repository: relative, with no `..` segment. */
function checkScriptPath(script: string, where: string): void {
  if (script === '' || path.isAbsolute(script) || script.split(/[\\/]/).includes('..')) {
    throw new CheckoutError('script_outside_repository', `script '${script}' is not a path inside the repository (${where}): give it relative to the repository's top, without '..'`);
  }
}

async function hasCommit(inCheckout: (args: string[]) => Promise<string>, commit: string): Promise<boolean> {
  return inCheckout(['cat-file', '-e', `${commit}^{commit}`]).then(
    () => true,
    () => false,
  );
}

/**
 * Runs git with no prompt (a missing credential fails at once), no hooks, no `ext::` transport
 * (it runs commands), and SSH in batch mode unless the host chose its own SSH command.
 * Resolves with stdout; rejects with execFile's error, which carries stderr.
 */
async function git(args: string[], options: { timeoutMs: number; signal?: AbortSignal }): Promise<string> {
  const env: NodeJS.ProcessEnv = { ...process.env, GIT_TERMINAL_PROMPT: '0', GCM_INTERACTIVE: 'never', LC_ALL: 'C' };
  if (!env.GIT_SSH_COMMAND && !env.GIT_SSH && !(await hostSshCommand())) env.GIT_SSH_COMMAND = 'ssh -o BatchMode=yes';
  return execGit(['-c', 'core.hooksPath=/dev/null', '-c', 'protocol.ext.allow=never', ...args], env, options);
}

let sshCommandConfigured: Promise<boolean> | undefined;
/** Whether the host's git config sets core.sshCommand (GIT_SSH_COMMAND would override it). Asked once. */
function hostSshCommand(): Promise<boolean> {
  sshCommandConfigured ??= execGit(['config', '--get', 'core.sshCommand'], process.env, { timeoutMs: 10_000 }).then(
    (value) => value.trim() !== '',
    () => false,
  );
  return sshCommandConfigured;
}

function execGit(args: string[], env: NodeJS.ProcessEnv, options: { timeoutMs: number; signal?: AbortSignal }): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('git', args, { env, timeout: options.timeoutMs, signal: options.signal, maxBuffer: 64 * 1024 * 1024, encoding: 'utf8' }, (error, stdout, stderr) => {
      if (error) reject(Object.assign(error, { stderr }));
      else resolve(stdout);
    });
  });
}

/** git's own words for a failure, one line, credentials in URLs masked. */
function gitReason(error: unknown): string {
  const failure = error as { stderr?: string; killed?: boolean; code?: unknown; message?: string };
  if (failure.killed) return 'git took too long and was stopped';
  if (failure.code === 'ENOENT') return 'git is not installed on the runner host';
  const lines = String(failure.stderr ?? '').split('\n').map((line) => line.trim()).filter(Boolean);
  const fatal = lines.find((line) => line.startsWith('fatal:')) ?? lines.at(-1) ?? failure.message ?? 'git failed';
  return displayRepository(fatal.replace(/^fatal:\s*/, ''));
}
