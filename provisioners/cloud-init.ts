// What a stock cloud image's cloud-init is told for a reservation, shared by the kinds that boot such
// images (qemu: a NoCloud `cidata` volume; openstack: the server's user data). The user-data gives
// the reservation's public key, and the host key pair Paddock made for this machine (`ssh_keys`,
// with `ssh_deletekeys`), so the host key is known before the first login and readiness pins it
// rather than trusting the first key it sees.
//
// The login user: cloud-init puts the keys on the image's default user (`debian` on Debian, `ubuntu`,
// `cloud-user`, … depending on the image), a name Paddock cannot know. `disable_root: false` makes it
// put the same keys on root as they are (without it root's line only prints "log in as debian"), and
// root key logins are allowed by OpenSSH's default `PermitRootLogin prohibit-password`: so the
// reservation logs in as root on every cloud-init image, as on Paddock's own images, and the default
// user works too for those who know it.
//
// The rest trims what a reservation does not need (measured under TCG: 76.6 s to the first login with
// only the key, 65.4 s with these): no host key generation (given), no growpart or resize (the
// overlay is the image's size), no package updates, and shorter config and final module lists.
// cloud-init versions that ignore a trim only lose speed; `ssh_authorized_keys` and `ssh_keys` are
// long-standing keys.
import { stringify } from 'yaml';
import { generateKeyPair } from '../protocol/ssh-keys.js';

/** cloud-init reads YAML 1.1 (PyYAML), where a bare `off` or `yes` is a boolean: such strings are quoted. */
const yaml11 = { lineWidth: 0, version: '1.1' } as const;

export interface HostKeyPair {
  /** OpenSSH private key file text. */
  privateKey: string;
  /** `ssh-ed25519 AAAA… comment` */
  publicKey: string;
}

/** A fresh ed25519 host key pair for one machine of one reservation. */
export function newHostKey(comment: string): HostKeyPair {
  return generateKeyPair(comment);
}

/** The cloud-config for a reservation's machine: its key for the default user and root, its host key. */
export function cloudConfig(options: { publicKey: string; hostKey: HostKeyPair }): string {
  const config = {
    disable_root: false,
    ssh_authorized_keys: [options.publicKey.trim()],
    ssh_keys: { ed25519_private: options.hostKey.privateKey, ed25519_public: options.hostKey.publicKey.trim() },
    ssh_deletekeys: true,
    growpart: { mode: 'off' },
    resize_rootfs: false,
    package_update: false,
    package_upgrade: false,
    cloud_config_modules: ['set-passwords', 'runcmd'],
    cloud_final_modules: ['scripts-per-instance', 'scripts-user', 'final-message'],
  };
  return `#cloud-config\n${stringify(config, yaml11)}`;
}

/**
 * NoCloud meta-data: a fresh instance id for every reservation (cloud-init runs its per-instance
 * modules, the keys among them, only once per id) and the hostname.
 */
export function noCloudMetaData(options: { instanceId: string; hostname: string }): string {
  return stringify({ 'instance-id': options.instanceId, 'local-hostname': options.hostname }, yaml11);
}

/** A hostname (one DNS label) from a machine name: lower case, other characters as `-`, at most 63. */
export function hostnameFor(name: string): string {
  const label = name
    .toLowerCase()
    .replace(/[^a-z0-9-]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, 63)
    .replace(/-+$/, '');
  return label || 'paddock';
}
