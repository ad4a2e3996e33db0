// The `openstack` kind's settings: schema, types and what reads them; light, so the API loads it.
import { z } from 'zod';

const authSchema = z
  .strictObject({
    authUrl: z.string().url(),
    username: z.string().min(1).optional(),
    password: z.string().min(1).optional(),
    project: z.string().min(1).optional(),
    userDomain: z.string().min(1).default('Default'),
    projectDomain: z.string().min(1).default('Default'),
    applicationCredentialId: z.string().min(1).optional(),
    applicationCredentialSecret: z.string().min(1).optional(),
  })
  .refine((auth) => (auth.applicationCredentialId && auth.applicationCredentialSecret) || (auth.username && auth.password && auth.project), {
    message: 'give username, password and project, or applicationCredentialId and applicationCredentialSecret',
  });

export const openstackSettingsSchema = z.strictObject({
  /** Credentials written in the config; without them, `cloud` or the OS_* variables are used. */
  auth: authSchema.optional(),
  /** An entry of clouds.yaml (as OS_CLOUD names one). */
  cloud: z.string().min(1).optional(),
  region: z.string().min(1).optional(),
  interface: z.enum(['public', 'internal', 'admin']).optional(),
  /** A PEM CA bundle that verifies the cloud's TLS endpoints (else clouds.yaml's `cacert`, OS_CACERT, or the system's). */
  cacert: z.string().min(1).optional(),
  /** Seconds a JSON call to the cloud may take in all; an upload has no such limit, only `idleTimeout`. */
  requestTimeout: z.number().positive().max(3600).default(30),
  /** Seconds an image upload may go without a byte moving before it fails. */
  idleTimeout: z.number().positive().max(3600).default(60),
  /** Retries of an idempotent call (GET, HEAD, PUT, DELETE) on 429, 5xx or a dropped connection; never of a POST or an upload. */
  retries: z.number().int().min(0).max(10).default(4),
  /** The network servers are attached to: its id or its name. */
  network: z.string().min(1),
  /** The most servers this pool runs at once, across its flavors. */
  maxInstances: z.number().int().min(1).max(1000).default(10),
  /** The flavors (names or ids) requests may get; a spec gets the smallest that satisfies it. */
  flavors: z.array(z.string().min(1)).min(1),
  /**
   * `ssh`: ready once an SSH login with the reservation's key works (host key captured); `active`:
   * ready once the server is ACTIVE with an address, for clouds whose addresses Paddock cannot reach.
   */
  ready: z.enum(['ssh', 'active']).default('ssh'),
  /** The guest user the reservation's key logs in as. */
  user: z
    .string()
    .regex(/^[a-z_][a-z0-9_.-]*\$?$/i, 'not a user name')
    .default('root'),
  /**
   * How the reservation's public key reaches the server: a Nova keypair, or cloud-init user data (the
   * key for the image's default user and root, and a host key Paddock made, so it is pinned from the
   * first login). Images uploaded with access `cloud-init` get the user data with either.
   */
  keys: z.enum(['keypair', 'userdata']).default('keypair'),
  /** Seconds a new server has to become ACTIVE before it is deleted and replaced. */
  activeTimeout: z.number().positive().max(3600).default(300),
  /** Seconds from ACTIVE until the SSH login must work. */
  sshTimeout: z.number().positive().max(3600).default(300),
  /** How many times a server that went to ERROR (or did not become ACTIVE) is replaced by a new one. */
  replaceAttempts: z.number().int().min(0).max(10).default(2),
  /** Seconds between looks at a booting server. */
  pollInterval: z.number().min(0.1).max(60).default(1),
  /** Seconds between looks at a ready server: if it went to ERROR or was deleted, the reservation fails. */
  watchInterval: z.number().min(0.5).max(3600).default(15),
  /** The Nova microversion sent (2.52 or later: tags at creation). */
  computeVersion: z
    .string()
    .regex(/^2\.\d+$/, 'a Nova microversion such as 2.79')
    .default('2.79'),
  /** Set for each machine when the pool is expanded: the flavor this machine boots and its pool. */
  flavor: z.string().optional(),
  pool: z.string().optional(),
});

export type OpenStackSettings = z.output<typeof openstackSettingsSchema>;

export const openstackDefaults = { labels: { arch: 'x86_64' } };

/** What parses a machine's settings: the kind's name and schema (the descriptor and the provisioner share it). */
export const openstackSettings = { kind: 'openstack', settingsSchema: openstackSettingsSchema };
