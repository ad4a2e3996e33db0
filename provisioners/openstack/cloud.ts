// An OpenStack pool's cloud: one client per set of credentials (shared by the pool's machines, in the
// API for the pool and in the agent for the servers), and where the credentials come from: the
// pool's own settings, the standard OS_* environment variables, or a clouds.yaml entry named by
// OS_CLOUD (the same files the openstack CLI reads: OS_CLIENT_CONFIG_FILE, ./clouds.yaml,
// ~/.config/openstack/clouds.yaml, /etc/openstack/clouds.yaml), with its companion secure.yaml
// (OS_CLIENT_SECURE_FILE or the same folders) merged over the entry. A CA bundle comes from the
// pool's `cacert`, the entry's `cacert` or OS_CACERT. Errors name what is missing, never a secret.
import { existsSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { load } from 'js-yaml';
import { OpenStackClient, type CloudOptions, type Credentials } from './client.js';
import type { OpenStackSettings } from './settings.js';
import { ProvisionError } from '../types.js';

type Settings = Record<string, string | undefined>;

/** Cloud options from OS_* variables, or from clouds.yaml when OS_CLOUD (or `cloud`) names an entry. */
export function cloudFromEnvironment(env: NodeJS.ProcessEnv = process.env, cloud = env.OS_CLOUD): CloudOptions {
  if (cloud) return fromCloudsYaml(cloud, env);
  return build(
    {
      auth_url: env.OS_AUTH_URL,
      username: env.OS_USERNAME,
      password: env.OS_PASSWORD,
      project_name: env.OS_PROJECT_NAME ?? env.OS_TENANT_NAME,
      user_domain_name: env.OS_USER_DOMAIN_NAME,
      project_domain_name: env.OS_PROJECT_DOMAIN_NAME,
      application_credential_id: env.OS_APPLICATION_CREDENTIAL_ID,
      application_credential_secret: env.OS_APPLICATION_CREDENTIAL_SECRET,
    },
    { region: env.OS_REGION_NAME, interface: env.OS_INTERFACE, cacert: env.OS_CACERT },
    'the OS_* environment variables',
  );
}

type CloudEntry = { auth?: Settings; region_name?: string; interface?: string; cacert?: string };

/** The first file of `names` in the places the openstack CLI looks (`first`: the variable naming one) that has cloud `name`. */
function findEntry(name: string, file: string, first: string | undefined): { file: string; entry: CloudEntry } | { searched: string[] } {
  const candidates = [first, path.resolve(file), path.join(os.homedir(), '.config/openstack', file), path.join('/etc/openstack', file)].filter(
    (each): each is string => typeof each === 'string' && each.length > 0,
  );
  for (const candidate of candidates) {
    if (!existsSync(candidate)) continue;
    const document = load(readFileSync(candidate, 'utf8')) as { clouds?: Record<string, CloudEntry> } | undefined;
    const entry = document?.clouds?.[name];
    if (entry) return { file: candidate, entry };
  }
  return { searched: candidates };
}

function fromCloudsYaml(name: string, env: NodeJS.ProcessEnv): CloudOptions {
  const clouds = findEntry(name, 'clouds.yaml', env.OS_CLIENT_CONFIG_FILE);
  if ('searched' in clouds) throw new Error(`no cloud named ${JSON.stringify(name)} in ${clouds.searched.join(', ')}`);
  const secure = findEntry(name, 'secure.yaml', env.OS_CLIENT_SECURE_FILE);
  const entry = 'entry' in secure ? { ...clouds.entry, ...secure.entry, auth: { ...clouds.entry.auth, ...secure.entry.auth } } : clouds.entry;
  const source = `cloud ${name} in ${clouds.file}${'file' in secure ? ` and ${secure.file}` : ''}`;
  return build(entry.auth ?? {}, { region: entry.region_name, interface: entry.interface, cacert: entry.cacert ?? env.OS_CACERT }, source);
}

/** The PEM text of a CA bundle file; a missing or unreadable file is named with where it was given. */
export function readCacert(file: string, source: string): string {
  try {
    const text = readFileSync(file, 'utf8');
    if (!text.includes('-----BEGIN CERTIFICATE-----')) throw new Error('no PEM certificate in it');
    return text;
  } catch (error) {
    throw new Error(`${source}: cacert ${file}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
  }
}

function build(auth: Settings, where: { region?: string; interface?: string; cacert?: string }, source: string): CloudOptions {
  if (!auth.auth_url) throw new Error(`${source}: no auth URL (OS_AUTH_URL / auth.auth_url)`);
  let credentials: Credentials;
  if (auth.application_credential_id && auth.application_credential_secret) {
    credentials = { kind: 'application', id: auth.application_credential_id, secret: auth.application_credential_secret };
  } else {
    const missing = (['username', 'password', 'project_name'] as const).filter((key) => !auth[key]);
    if (missing.length > 0) throw new Error(`${source}: missing ${missing.join(', ')} (or an application credential id and secret)`);
    credentials = {
      kind: 'password',
      username: auth.username!,
      password: auth.password!,
      project: auth.project_name!,
      userDomain: auth.user_domain_name ?? 'Default',
      projectDomain: auth.project_domain_name ?? 'Default',
    };
  }
  const face = where.interface?.replace(/URL$/i, '');
  if (face !== undefined && face !== 'public' && face !== 'internal' && face !== 'admin')
    throw new Error(`${source}: interface ${JSON.stringify(where.interface)} is not public, internal or admin`);
  return {
    authUrl: auth.auth_url,
    credentials,
    ...(where.region ? { region: where.region } : {}),
    ...(face ? { interface: face } : {}),
    ...(where.cacert ? { ca: readCacert(where.cacert, source) } : {}),
  };
}

const clients = new Map<string, OpenStackClient>();

/** One client per set of credentials, so tokens are shared by the pool's machines. */
export function clientFor(settings: OpenStackSettings): OpenStackClient {
  const key = JSON.stringify([
    settings.auth,
    settings.cloud,
    settings.region,
    settings.interface,
    settings.computeVersion,
    settings.cacert,
    settings.requestTimeout,
    settings.idleTimeout,
    settings.retries,
  ]);
  let client = clients.get(key);
  if (!client) {
    client = new OpenStackClient({
      ...cloudOptions(settings),
      computeVersion: settings.computeVersion,
      timeoutMs: settings.requestTimeout * 1000,
      idleTimeoutMs: settings.idleTimeout * 1000,
      retries: settings.retries,
    });
    clients.set(key, client);
  }
  return client;
}

function cloudOptions(settings: OpenStackSettings): CloudOptions {
  let options: CloudOptions;
  if (settings.auth) {
    const auth = settings.auth;
    options = {
      authUrl: auth.authUrl,
      credentials:
        auth.applicationCredentialId && auth.applicationCredentialSecret
          ? { kind: 'application', id: auth.applicationCredentialId, secret: auth.applicationCredentialSecret }
          : {
              kind: 'password',
              username: auth.username!,
              password: auth.password!,
              project: auth.project!,
              userDomain: auth.userDomain,
              projectDomain: auth.projectDomain,
            },
    };
  } else {
    try {
      options = cloudFromEnvironment(process.env, settings.cloud ?? process.env.OS_CLOUD);
    } catch (error) {
      throw new ProvisionError(`no OpenStack credentials: ${(error as Error).message}`, 'infrastructure', undefined, { code: 'cloud_unreachable' });
    }
  }
  let ca = options.ca;
  const cacert = settings.cacert ?? (settings.auth ? process.env.OS_CACERT : undefined);
  if (cacert) {
    try {
      ca = readCacert(cacert, settings.cacert ? 'the pool settings' : 'OS_CACERT');
    } catch (error) {
      throw new ProvisionError((error as Error).message, 'infrastructure', undefined, { code: 'cloud_unreachable' });
    }
  }
  return {
    ...options,
    ...(settings.region ? { region: settings.region } : {}),
    ...(settings.interface ? { interface: settings.interface } : {}),
    ...(ca ? { ca } : {}),
  };
}

/** What tells one cloud account from another: a pool's listings and uploads are kept per account. */
export const clientKey = (settings: OpenStackSettings) => [
  settings.auth?.authUrl,
  settings.auth?.username,
  settings.auth?.project,
  settings.auth?.applicationCredentialId,
  settings.cloud,
  settings.region,
];
