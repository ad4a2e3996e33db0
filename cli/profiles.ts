// Profiles: named servers in ~/.config/paddock/config.yaml ($XDG_CONFIG_HOME/paddock/config.yaml),
// each with its URL and a token file, as lavacli's identities and kubectl's contexts:
//
//   profiles:
//     lab:     { url: https://paddock.lab.example, tokenFile: ~/.config/paddock/lab.token }
//     staging: { url: http://127.0.0.1:7300, tokenFile: staging.token }   # relative to this file
//     ha:      { url: "http://a:7300,http://b:7300", tokenFile: ha.token }  # several API servers
//   default: lab
//
// A call uses the profile named by --profile, else $PADDOCK_PROFILE, else `default`; PADDOCK_URL
// and PADDOCK_TOKEN, when set, still win over the profile's. A token file must be a regular file
// that group and others cannot read (as ssh insists for a private key): another is refused.
import { readFileSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Command } from 'commander';
import { PaddockError } from '../client/errors.js';
import { parseServerUrls } from '../protocol/failover.js';
import { print, table } from './output.js';

export interface ProfileEntry {
  url?: string;
  tokenFile?: string;
}

export interface ProfileConfig {
  file: string;
  profiles: Record<string, ProfileEntry>;
  default?: string;
}

/** A URL or a comma-separated list of them, each http(s) (never echoed: it may hold a password). */
function isServerList(url: string): boolean {
  try {
    return parseServerUrls(url).length > 0 && !/\s/.test(url);
  } catch {
    return false;
  }
}

/** Where the profiles live. */
export function configFile(): string {
  const base = process.env.XDG_CONFIG_HOME?.trim() || path.join(os.homedir(), '.config');
  return path.join(base, 'paddock', 'config.yaml');
}

/** A mistake in the profiles or their token files: exit 1, code `configuration`. */
export class ProfileError extends PaddockError {
  constructor(message: string) {
    super(message, 'configuration');
  }
}

const home = (file: string) => {
  const dir = os.homedir();
  return file === dir || file.startsWith(`${dir}/`) ? `~${file.slice(dir.length)}` : file;
};

/** Whether this user can see the file at all (stat needs only its folders searchable). */
function visible(file: string): boolean {
  try {
    statSync(file);
    return true;
  } catch {
    return false;
  }
}

/** The profiles file, or undefined when there is none (or, when no profile is named, none this user can see). */
export async function readProfiles(file = configFile(), named = true): Promise<ProfileConfig | undefined> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    // A folder on the way this user cannot enter (another user's HOME, as for a command started under
    // another uid with HOME kept): there is no file of this user's there. Unless a profile was named.
    if (!named && (error as NodeJS.ErrnoException).code === 'EACCES' && !visible(file)) return undefined;
    throw new ProfileError(`cannot read ${home(file)}: ${(error as Error).message}`);
  }
  const { parse } = await import('yaml');
  let document: unknown;
  try {
    document = parse(text);
  } catch (error) {
    throw new ProfileError(`${home(file)} is not YAML: ${(error as Error).message.split('\n')[0]}`);
  }
  document ??= {};
  const shape = `it holds "profiles:" (NAME: {url, tokenFile}) and "default: NAME"`;
  if (typeof document !== 'object' || Array.isArray(document)) throw new ProfileError(`${home(file)}: ${shape}`);
  const { profiles = {}, default: chosen, ...rest } = document as Record<string, unknown>;
  const unknownKeys = Object.keys(rest);
  if (unknownKeys.length > 0) throw new ProfileError(`${home(file)}: unknown key ${unknownKeys.join(', ')}; ${shape}`);
  if (profiles === null || typeof profiles !== 'object' || Array.isArray(profiles))
    throw new ProfileError(`${home(file)}: "profiles" is a map of NAME: {url, tokenFile}`);
  if (chosen !== undefined && typeof chosen !== 'string') throw new ProfileError(`${home(file)}: "default" is the name of a profile`);
  const checked: Record<string, ProfileEntry> = {};
  for (const [name, entry] of Object.entries(profiles as Record<string, unknown>)) {
    const where = `${home(file)}: profile ${name}`;
    if (entry === null || typeof entry !== 'object' || Array.isArray(entry)) throw new ProfileError(`${where}: give it url and tokenFile`);
    const { url, tokenFile, ...extra } = entry as Record<string, unknown>;
    const extraKeys = Object.keys(extra);
    if (extraKeys.length > 0) throw new ProfileError(`${where}: unknown key ${extraKeys.join(', ')} (a profile has url and tokenFile)`);
    if (url !== undefined && (typeof url !== 'string' || !isServerList(url)))
      throw new ProfileError(`${where}: url is http://HOST:PORT or https://HOST, or several of them comma-separated`);
    if (tokenFile !== undefined && (typeof tokenFile !== 'string' || tokenFile === '')) throw new ProfileError(`${where}: tokenFile is the path of a file`);
    checked[name] = {
      ...(url !== undefined ? { url: url as string } : {}),
      ...(tokenFile !== undefined ? { tokenFile: resolveTokenFile(file, tokenFile as string) } : {}),
    };
  }
  return { file, profiles: checked, ...(chosen !== undefined ? { default: chosen } : {}) };
}

/** `~/…` from the home directory; a relative path from the profiles file's directory. */
function resolveTokenFile(configPath: string, file: string): string {
  if (file === '~' || file.startsWith('~/')) return path.join(os.homedir(), file.slice(1));
  return path.resolve(path.dirname(configPath), file);
}

/** A token file's token, refused unless it is a regular file only its owner (this user) can read. */
export function readTokenFile(file: string, profile: string): string {
  let info;
  try {
    info = statSync(file);
  } catch (error) {
    throw new ProfileError(
      `profile ${profile}: cannot read the token file ${home(file)} (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`,
    );
  }
  if (!info.isFile()) throw new ProfileError(`profile ${profile}: the token file ${home(file)} is not a regular file`);
  const uid = process.getuid?.();
  if (uid !== undefined) {
    if (info.uid !== uid && info.uid !== 0)
      throw new ProfileError(`profile ${profile}: the token file ${home(file)} belongs to uid ${info.uid}, not to you (uid ${uid})`);
    if ((info.mode & 0o077) !== 0) {
      const mode = (info.mode & 0o777).toString(8).padStart(4, '0');
      throw new ProfileError(
        `profile ${profile}: permissions ${mode} for the token file ${home(file)} are too open: it must not be readable by group or others (chmod 600 ${home(file)}); the token is not used`,
      );
    }
  }
  const token = readFileSync(file, 'utf8').trim();
  if (!token || /\s/.test(token)) throw new ProfileError(`profile ${profile}: the token file ${home(file)} must hold the token alone, on one line`);
  return token;
}

/** The profile a call uses, and why. */
export interface ChosenProfile {
  name: string;
  /** `--profile`, `PADDOCK_PROFILE` or `default` (the file's). */
  from: string;
  file: string;
  url?: string;
}

let chosenProfile: ChosenProfile | undefined;

/** What `applyProfile` chose for this call, if anything. */
export const activeProfile = (): ChosenProfile | undefined => chosenProfile;

/**
 * Sets PADDOCK_URL and PADDOCK_TOKEN from the chosen profile where they are not set already. Reads
 * nothing when both are set and no profile is named; a named profile that does not exist is an error.
 */
export async function applyProfile(flag: string | undefined): Promise<ChosenProfile | undefined> {
  const fromEnvironment = process.env.PADDOCK_PROFILE?.trim() || undefined;
  const named = flag ?? fromEnvironment;
  if (named === undefined && process.env.PADDOCK_URL && process.env.PADDOCK_TOKEN) return undefined;
  const config = await readProfiles(configFile(), named !== undefined);
  const file = configFile();
  if (!config) {
    if (named === undefined) return undefined;
    throw new ProfileError(`no profile ${named}: ${home(file)} does not exist (paddock profiles --help shows what it holds)`);
  }
  const name = named ?? config.default;
  if (name === undefined) return undefined;
  const from = flag !== undefined ? '--profile' : fromEnvironment !== undefined ? 'PADDOCK_PROFILE' : `default in ${home(file)}`;
  const entry = config.profiles[name];
  if (!entry) {
    const known = Object.keys(config.profiles);
    throw new ProfileError(`no profile ${name} (${from}) in ${home(file)}; ${known.length > 0 ? `the profiles are ${known.join(', ')}` : 'it has none'}`);
  }
  if (!process.env.PADDOCK_URL && entry.url) process.env.PADDOCK_URL = entry.url;
  if (!process.env.PADDOCK_TOKEN && entry.tokenFile) process.env.PADDOCK_TOKEN = readTokenFile(entry.tokenFile, name);
  chosenProfile = { name, from, file, ...(entry.url ? { url: entry.url } : {}) };
  return chosenProfile;
}

const example = `
The profiles file (${'$'}XDG_CONFIG_HOME/paddock/config.yaml, else ~/.config/paddock/config.yaml):

  profiles:
    lab:
      url: https://paddock.lab.example
      tokenFile: ~/.config/paddock/lab.token     # chmod 600: group and others must not read it
    local:
      url: http://127.0.0.1:7300
      tokenFile: local.token                     # relative to the profiles file
    ha:
      url: http://paddock-a:7300,http://paddock-b:7300   # several API servers: the leader is followed
      tokenFile: ha.token
  default: lab

A call uses --profile NAME, else ${'$'}PADDOCK_PROFILE, else the default. PADDOCK_URL and
PADDOCK_TOKEN, when set, win over the profile's url and token.`;

export function addProfileCommands(cli: Command): void {
  const profiles = cli
    .command('profiles')
    .description('named servers with their URL and token file (~/.config/paddock/config.yaml), chosen with --profile or PADDOCK_PROFILE')
    .addHelpText('after', example);
  profiles
    .command('ls')
    .description('the profiles: name, URL, token file; * marks the one a call uses now')
    .option('--json', 'the profiles as JSON')
    .action(async (options: { json?: boolean }) => {
      const config = await readProfiles();
      if (!config) {
        if (options.json) return print([]);
        return print(`no profiles: ${home(configFile())} does not exist (paddock profiles --help shows what it holds)`);
      }
      const flag = (cli.opts() as { profile?: string }).profile;
      const current = flag ?? (process.env.PADDOCK_PROFILE?.trim() || undefined) ?? config.default;
      const list = Object.entries(config.profiles).map(([name, entry]) => ({
        name,
        ...entry,
        default: name === config.default,
        current: name === current,
      }));
      if (options.json) return print(list);
      if (list.length === 0) return print(`no profiles in ${home(config.file)}`);
      print(
        table([
          ['', 'NAME', 'URL', 'TOKEN FILE'],
          ...list.map((entry) => [
            entry.current ? '*' : '',
            `${entry.name}${entry.default ? ' (default)' : ''}`,
            entry.url ?? '-',
            entry.tokenFile ? home(entry.tokenFile) : '-',
          ]),
        ]),
      );
    });
}
