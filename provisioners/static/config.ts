// Settings of a `static` machine: a host that already exists and that Paddock logs in to with an
// admin key to add and remove reservation keys. Validated when the config loads; unknown keys are
// rejected so a typo (`adminKee`) fails loudly instead of silently using a default.
import { z } from 'zod';
import { normalizeKeyLine } from '../ssh.js';

export const staticSettingsSchema = z.strictObject({
  /** Host name or IP address the owner and Paddock connect to. */
  address: z.string().trim().min(1),
  port: z.number().int().min(1).max(65535).default(22),
  user: z.string().regex(/^[a-z_][a-z0-9_.-]*\$?$/i, 'not a user name').default('root'),
  /** Path (on the machine running the provisioner) of the private key Paddock logs in with. */
  adminKey: z.string().min(1),
  /** File on the host where reservation keys go; `~/` is the login user's home. */
  authorizedKeys: z
    .string()
    .min(1)
    .refine((path) => !/[\0\n]/.test(path), 'must not contain NUL or newline')
    .refine((path) => !path.startsWith('~') || (path.startsWith('~/') && path.length > 2), 'only ~/ is expanded (not ~user/)')
    .default('~/.ssh/authorized_keys'),
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
});

export type StaticSettings = z.output<typeof staticSettingsSchema>;

/** One login on one host: what two static machines must never share. */
export function staticIdentity(settings: StaticSettings): string {
  return `${settings.user}@${settings.address.toLowerCase()}:${settings.port}`;
}
