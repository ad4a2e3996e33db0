// The `static` kind's settings: schema, types and what reads them; light, so the API loads it.
import { z } from 'zod';
import { normalizeKeyLine } from '../../protocol/ssh-keys.js';

const userName = z.string().regex(/^[a-z_][a-z0-9_.-]{0,31}$/i, 'not a user name');

export const staticSettingsSchema = z
  .strictObject({
    /** Host name or IP address the owner and Paddock connect to. */
    address: z.string().trim().min(1),
    port: z.number().int().min(1).max(65535).default(22),
    /** The tenant's login: the account a reservation's key logs in to. Never root, never adminUser. */
    user: userName.refine((name) => name !== 'root', 'root cannot be a reservation login'),
    /** Paddock's own account; it must be root (it writes a root-owned file and ends the tenant's processes). */
    adminUser: userName.default('root'),
    /** Path (on the machine running the provisioner) of the private key Paddock logs in with. */
    adminKey: z.string().min(1),
    /**
     * The file on the host that sshd reads the tenant's keys from (`%u` is the tenant's name). It
     * and every folder above it must be out of the tenant's reach: checked at every provisioning.
     */
    authorizedKeys: z
      .string()
      .startsWith('/', 'an absolute path, outside the tenant’s home (a file the tenant can reach is a file she can rewrite)')
      .refine((path) => !/[\0\n]/.test(path), 'must not contain NUL or newline')
      .default('/etc/ssh/authorized_keys/%u'),
    /** Pinned host key line (`ssh-ed25519 AAAA…`) checked on every admin login. */
    hostKey: z
      .string()
      .refine((line) => {
        try {
          normalizeKeyLine(line);
          return true;
        } catch {
          return false;
        }
      }, 'not an OpenSSH public key line (expected "ssh-ed25519 AAAA…")')
      .optional(),
    /** Seconds to wait for the SSH handshake. */
    connectTimeout: z.number().positive().max(600).default(10),
  })
  .refine((settings) => settings.user !== settings.adminUser, {
    message: 'user (the reservation login) must be another account than adminUser',
    path: ['user'],
  });

export type StaticSettings = z.output<typeof staticSettingsSchema>;

/** The tenant's authorized_keys file on the host, `%u` expanded. */
export function tenantKeysFile(settings: StaticSettings): string {
  return settings.authorizedKeys.replaceAll('%u', settings.user);
}

/** One login on one host: what two static machines must never share. */
export function staticIdentity(settings: StaticSettings): string {
  return `${settings.user}@${settings.address.toLowerCase()}:${settings.port}`;
}

/** The login, and the key file on that host: two machines sharing either would share keys. */
export function staticIdentities(settings: StaticSettings): string[] {
  return [staticIdentity(settings), `the key file ${tenantKeysFile(settings)} on ${settings.address.toLowerCase()}:${settings.port}`];
}

/** What parses a machine's settings: the kind's name and schema (the descriptor and the provisioner share it). */
export const staticSettings = { kind: 'static', settingsSchema: staticSettingsSchema };
