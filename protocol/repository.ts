// Repository rules: which repositories a job may name, and how git is run on them. A repository
// string comes from a user and is handed to git on the API host (ls-remote, to record a commit) and
// on runner hosts (clone), so it is checked here first and git runs fenced in:
// - only the transports a lab allows (https and ssh by default, http and git:// if asked); remote
//   helpers (`ext::`, `fd::`, any `x::y`) never, relative paths never;
// - a local path (or file:// URL) only inside a local root an admin configured, once `..` and every
//   symlink are resolved, and only if the repository's own pointers (a `.git` file, alternates,
//   commondir) stay inside the roots too; git is given the resolved path;
// - hosts, users and ports that read as what they are (no `-oProxyCommand=` smuggled as a host);
// - git with protocol.allow=never and GIT_ALLOW_PROTOCOL set to the allowed transports only (so a
//   redirect, a submodule or a helper cannot switch transport), no HTTP redirects at all, no hooks,
//   no prompts.
// ls-remote runs under a time cap and an output cap (its output is streamed and git is killed with
// its whole process group past the cap), and every failure to read a repository has one code and
// one message, so the answer never says whether a host:port is open.
import { spawn } from 'node:child_process';
import { readFile, realpath, stat } from 'node:fs/promises';
import path from 'node:path';

export type CheckoutErrorCode =
  | 'repository_refused'
  | 'repository_unreachable'
  | 'repository_listing_too_large'
  | 'ref_not_found'
  | 'commit_not_found'
  | 'script_not_found'
  | 'script_outside_repository';

export class CheckoutError extends Error {
  override readonly name = 'CheckoutError';
  constructor(
    readonly code: CheckoutErrorCode,
    message: string,
    options?: { cause?: unknown; gitMessage?: string },
  ) {
    super(message, options);
    /** git's own words (credentials masked), for the operator's log; not for the user's answer. */
    this.gitMessage = options?.gitMessage;
  }
  readonly gitMessage?: string;
}

/** Network transports a lab may allow. Local paths are allowed by naming local roots instead. */
export const networkTransports = ['https', 'ssh', 'http', 'git'] as const;
export type NetworkTransport = (typeof networkTransports)[number];

/** What a repository may be. The API sends it with each run, so runner hosts apply the same rules. */
export interface RepositoryRules {
  transports: NetworkTransport[];
  /** Absolute folders a local repository must be inside (symlinks followed). Empty: no local paths. */
  localRoots: string[];
}

export const defaultRepositoryRules: RepositoryRules = { transports: ['https', 'ssh'], localRoots: [] };

/** `{user}` in a local root stands for the job's owner, so each user may be given a folder of their own. */
export function rulesFor(rules: RepositoryRules, owner: string): RepositoryRules {
  return { ...rules, localRoots: rules.localRoots.map((root) => root.replaceAll('{user}', owner)) };
}

/**
 * The repository as it may be shown: the user-info part of every URL in `text` (all before the
 * last `@` of the authority, so `https://user:p@ss@host/x` too) becomes `***`.
 */
export function displayRepository(text: string): string {
  return (
    text
      .replace(/([a-z][a-z0-9+.-]*:\/\/)([^/\s"]*)@/gi, '$1***@')
      // scp-like `user:secret@host:path` (git reads no password there, but a user may have meant one): whole strings only.
      .replace(/^[^:/@\s"{]+:[^/\s"]*@(?=[^/\s"]*:[^\s"]*$)/, '***@')
  );
}

/** How git reaches a checked repository. */
export interface CheckedRepository {
  transport: NetworkTransport | 'local';
  /** What git is given: the URL as written, or a local repository's real path. */
  gitUrl: string;
}

const hostPattern = /^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]+\])$/;
const userPattern = /^[A-Za-z0-9._~!$&'()*+,;=%-]*(?::[^\s]*)?$/;
const schemes: Record<string, NetworkTransport | 'local'> = {
  https: 'https',
  http: 'http',
  ssh: 'ssh',
  'git+ssh': 'ssh',
  'ssh+git': 'ssh',
  git: 'git',
  file: 'local',
};

/**
 * Checks `repository` against `rules`; resolves with what git is to be given, or throws
 * CheckoutError `repository_refused` saying why (the message never shows a credential).
 */
export async function checkRepository(repository: string, rules: RepositoryRules): Promise<CheckedRepository> {
  const shown = displayRepository(repository);
  const refuse = (why: string) => new CheckoutError('repository_refused', `repository ${JSON.stringify(shown)} is refused: ${why}`);
  if (repository === '' || repository.length > 2000) throw refuse('not a repository URL or path');
  if (/[\s\p{Cc}]/u.test(repository)) throw refuse('it holds white space or control characters');
  if (repository.startsWith('-')) throw refuse('it starts with -');
  if (/^[A-Za-z0-9][A-Za-z0-9+.-]*::/.test(repository)) throw refuse('git remote helpers (transport::address, such as ext:: or fd::) are not allowed');
  const allowed = (transport: NetworkTransport) => {
    if (!rules.transports.includes(transport))
      throw refuse(
        `the ${transport} transport is not allowed here (allowed: ${rules.transports.join(', ') || 'none'}${rules.localRoots.length > 0 ? ', local paths under the local roots' : ''})`,
      );
    return { transport, gitUrl: repository };
  };
  const url = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/([^/]*)(.*)$/.exec(repository);
  if (url) {
    const [, schemeText, authority, rest] = url;
    const transport = schemes[schemeText.toLowerCase()];
    if (!transport) throw refuse(`the ${schemeText} scheme is not a git transport Paddock allows`);
    if (transport === 'local') {
      if (authority !== '' && authority.toLowerCase() !== 'localhost') throw refuse('a file:// URL names a path on this host (file:///path)');
      let decoded: string;
      try {
        decoded = decodeURIComponent(rest);
      } catch {
        throw refuse('its path is not valid percent-encoding');
      }
      return { transport, gitUrl: await checkLocal(decoded, rules, refuse) };
    }
    const at = authority.lastIndexOf('@');
    const user = at >= 0 ? authority.slice(0, at) : '';
    const hostPort = at >= 0 ? authority.slice(at + 1) : authority;
    const port = /:(\d{1,5})$/.exec(hostPort);
    const host = port ? hostPort.slice(0, port.index) : hostPort;
    if (!hostPattern.test(host)) throw refuse('its host is not a host name or an address');
    if (port && (Number(port[1]) < 1 || Number(port[1]) > 65535)) throw refuse('its port is not a port number');
    if (user.startsWith('-') || !userPattern.test(user)) throw refuse('its user name is not valid');
    return allowed(transport);
  }
  // git's scp-like syntax, [user@]host:path, when a colon comes before any slash.
  const colon = repository.indexOf(':');
  const slash = repository.indexOf('/');
  if (colon > 0 && (slash < 0 || colon < slash)) {
    const authority = repository.slice(0, colon);
    if (/^[^/]*@/.test(repository.slice(colon + 1))) throw refuse('user:password@host:path is not a password to git; write https://user:password@host/path');
    const at = authority.lastIndexOf('@');
    const user = at >= 0 ? authority.slice(0, at) : '';
    if (!hostPattern.test(authority.slice(at + 1)) || authority.includes('[')) throw refuse('its host is not a host name or an address');
    if (user.startsWith('-') || !/^[A-Za-z0-9._-]*$/.test(user)) throw refuse('its user name is not valid');
    return allowed('ssh');
  }
  return { transport: 'local', gitUrl: await checkLocal(repository, rules, refuse) };
}

/** A local repository's real path, if it and everything git would follow from it lie inside a local root. */
async function checkLocal(repository: string, rules: RepositoryRules, refuse: (why: string) => CheckoutError): Promise<string> {
  if (rules.localRoots.length === 0) throw refuse('local paths are not allowed here (no local roots are configured)');
  if (!path.isAbsolute(repository)) throw refuse('a local repository is given by its absolute path');
  const roots = rules.localRoots.map((root) => path.resolve(root));
  const under = (candidate: string, list: string[]) =>
    list.some((root) => candidate === root || candidate.startsWith(root.endsWith(path.sep) ? root : root + path.sep));
  const where = `inside the local roots (${roots.join(', ')})`;
  if (!under(path.resolve(repository), roots)) throw refuse(`a local repository must be ${where}`);
  const realRoots = await Promise.all(roots.map((root) => realpath(root).catch(() => root)));
  const real = await realpath(repository).catch(() => {
    throw new CheckoutError('repository_unreachable', unreachableMessage(repository));
  });
  if (!under(real, realRoots)) throw refuse(`it leads out of the local roots through a symlink; a local repository must be ${where}`);
  // What git follows from inside a repository: a `.git` file (gitdir:), a worktree's commondir and
  // object alternates. Each must stay inside the roots too, or a repository in one's own folder
  // could read another user's.
  const pointers: string[] = [];
  const gitFile = await readFile(path.join(real, '.git'), 'utf8').catch(() => undefined);
  const gitDirs = [real, path.join(real, '.git')];
  if (gitFile !== undefined) {
    const target = /^gitdir:\s*(.+)$/m.exec(gitFile)?.[1]?.trim();
    if (target) gitDirs.push(path.resolve(real, target));
    pointers.push(...gitDirs.slice(2));
  }
  for (const dir of gitDirs) {
    const common = await readFile(path.join(dir, 'commondir'), 'utf8').catch(() => undefined);
    if (common !== undefined) pointers.push(path.resolve(dir, common.trim()));
    const alternates = await readFile(path.join(dir, 'objects', 'info', 'alternates'), 'utf8').catch(() => '');
    for (const line of alternates.split('\n').map((each) => each.trim())) if (line && !line.startsWith('#')) pointers.push(path.resolve(dir, 'objects', line));
  }
  for (const pointer of pointers) {
    const target = await realpath(pointer).catch(() => pointer);
    if (!under(target, realRoots))
      throw refuse(`the repository points git at a folder outside the local roots (a .git file, commondir or alternates); it must be ${where}`);
  }
  if (!(await stat(real)).isDirectory()) throw new CheckoutError('repository_unreachable', unreachableMessage(repository));
  return real;
}

/** The one answer for a repository that cannot be read, whatever the reason (so it tells nothing about a host:port). */
export function unreachableMessage(repository: string): string {
  return `cannot read repository ${displayRepository(repository)}: it does not exist, is not a git repository, refused the credentials, or did not answer in time`;
}

const gitProtocols: Record<NetworkTransport | 'local', string> = { https: 'https', http: 'http', ssh: 'ssh', git: 'git', local: 'file' };

/**
 * git's arguments and environment under `rules`: only the allowed transports (local paths count as
 * git's `file` protocol) for the repository, any redirect, submodule or helper alike; no HTTP
 * redirects; no hooks; no prompts; SSH in batch mode unless the host chose its own SSH command.
 */
export function gitFence(rules: RepositoryRules, hostSshCommand: boolean): { args: string[]; env: NodeJS.ProcessEnv } {
  const protocols = [...rules.transports, ...(rules.localRoots.length > 0 ? (['local'] as const) : [])].map((transport) => gitProtocols[transport]);
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    GIT_TERMINAL_PROMPT: '0',
    GCM_INTERACTIVE: 'never',
    LC_ALL: 'C',
    // Wins over any protocol.*.allow in a config file: a colon-separated list, everything else never.
    GIT_ALLOW_PROTOCOL: protocols.join(':'),
    GIT_PROTOCOL_FROM_USER: '0',
  };
  if (!env.GIT_SSH_COMMAND && !env.GIT_SSH && !hostSshCommand) env.GIT_SSH_COMMAND = 'ssh -o BatchMode=yes';
  const args = [
    '-c',
    'core.hooksPath=/dev/null',
    '-c',
    'protocol.allow=never',
    '-c',
    'http.followRedirects=false',
    '-c',
    'submodule.recurse=false',
    '-c',
    'core.askPass=',
  ];
  return { args, env };
}

export interface ResolveOptions {
  rules: RepositoryRules;
  /** git is stopped (its whole process group) after this long. */
  timeoutMs: number;
  /** The most ls-remote output read; past it git is stopped and the listing refused. */
  maxOutputBytes: number;
  signal?: AbortSignal;
}

const commitPattern = /^(?:[0-9a-f]{40}|[0-9a-f]{64})$/;

/**
 * The commit `ref` points at in `repository`: a branch, a tag (annotated tags give the commit they
 * tag), a full ref name, `HEAD`, or a full commit id (taken as it is when no ref has that name:
 * a remote cannot be asked whether it holds a commit without fetching it).
 * Throws CheckoutError: repository_refused, repository_unreachable (one message for every way a
 * repository cannot be read), repository_listing_too_large, ref_not_found.
 */
export async function resolveRef(repository: string, ref: string, options: ResolveOptions): Promise<string> {
  const shown = displayRepository(repository);
  if (ref === '' || ref.startsWith('-') || /[\s\p{Cc}]/u.test(ref)) {
    throw new CheckoutError('ref_not_found', `ref '${ref}' is not a valid branch, tag or commit name (repository ${shown})`);
  }
  const { gitUrl } = await checkRepository(repository, options.rules);
  const fence = gitFence(options.rules, await hostSshCommand());
  const listing = await listRefs([...fence.args, 'ls-remote', '--', gitUrl, ref, `${ref}^{}`], fence.env, repository, options);
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

/** Runs `git ls-remote` in a process group of its own, reading at most maxOutputBytes, for at most timeoutMs. */
function listRefs(args: string[], env: NodeJS.ProcessEnv, repository: string, options: ResolveOptions): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn('git', args, { env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    const chunks: Buffer[] = [];
    let size = 0;
    let stderr = '';
    let stopped: CheckoutError | Error | undefined;
    const stop = (why: CheckoutError | Error) => {
      stopped ??= why;
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        // already gone
      }
    };
    const unreachable = (gitMessage: string) =>
      new CheckoutError('repository_unreachable', unreachableMessage(repository), { gitMessage: displayRepository(gitMessage) });
    const timer = setTimeout(() => stop(unreachable(`git ls-remote took longer than ${options.timeoutMs} ms and was stopped`)), options.timeoutMs);
    const onAbort = () => stop(options.signal!.reason as Error);
    options.signal?.addEventListener('abort', onAbort, { once: true });
    child.stdout.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > options.maxOutputBytes) {
        stop(
          new CheckoutError(
            'repository_listing_too_large',
            `repository ${displayRepository(repository)} lists more than ${options.maxOutputBytes} bytes of refs for this ref: give a full ref name (refs/heads/…) or a commit id`,
          ),
        );
        return;
      }
      chunks.push(chunk);
    });
    child.stderr.on('data', (chunk: Buffer) => {
      if (stderr.length < 4096) stderr += chunk.toString('utf8');
    });
    child.on('error', (error) => stop(unreachable(`cannot run git: ${error.message}`)));
    child.on('close', (code) => {
      clearTimeout(timer);
      options.signal?.removeEventListener('abort', onAbort);
      if (stopped) reject(stopped);
      else if (code !== 0) reject(unreachable(gitReason(stderr) || `git ls-remote exited with ${code}`));
      else resolve(Buffer.concat(chunks).toString('utf8'));
    });
  });
}

/** The line of git's stderr that says what failed, credentials masked. */
export function gitReason(stderr: string): string {
  const lines = stderr
    .split('\n')
    .map((line) => line.trim())
    .filter(Boolean);
  const fatal = lines.find((line) => line.startsWith('fatal:')) ?? lines.at(-1) ?? '';
  return displayRepository(fatal.replace(/^fatal:\s*/, ''));
}

let sshCommandConfigured: Promise<boolean> | undefined;
/** Whether the host's git config sets core.sshCommand (GIT_SSH_COMMAND would override it). Asked once. */
export function hostSshCommand(): Promise<boolean> {
  sshCommandConfigured ??= new Promise((resolve) => {
    const child = spawn('git', ['config', '--get', 'core.sshCommand'], { stdio: ['ignore', 'pipe', 'ignore'] });
    let out = '';
    child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
    child.on('error', () => resolve(false));
    child.on('close', () => resolve(out.trim() !== ''));
  });
  return sshCommandConfigured;
}
