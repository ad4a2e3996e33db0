// The `openstack` kind's descriptor. An openstack pool is one machine entry in the config that
// becomes (pool.ts) one machine per allowed flavor and instance slot (POOL-FLAVOR-1 …
// POOL-FLAVOR-N, N = maxInstances), each with the flavor's cpus, ram and disk as capacities. The
// scheduler keeps the whole pool to maxInstances servers at once; provisioner.ts makes the servers.
// Credentials come from `auth`, from the clouds.yaml entry `cloud`, or from the standard OS_*
// environment variables of the process, in that order. Unknown keys are rejected.
import type { KindDescriptor } from '../types.js';
import { openstackSettingsSchema, openstackDefaults, type OpenStackSettings } from './settings.js';

export * from './settings.js';

export const openstackKind: KindDescriptor<OpenStackSettings> = {
  kind: 'openstack',
  settingsSchema: openstackSettingsSchema,
  defaults: openstackDefaults,
  // pool.ts (with the cloud's HTTP client) is loaded by the first pool the API expands: a config
  // without an OpenStack pool does without it.
  pool: {
    expand: async (entry, context) => (await import('./pool.js')).expandPool(entry, context),
    images: async (entry) => (await import('./pool.js')).poolImages(entry),
  },
  leaseActions: true,
  // A warm server is handed over by swapping the reservation's key in over an SSH login.
  warm: (settings) => (settings.ready === 'ssh' ? undefined : 'a warm server is handed over by an SSH login: the pool must be ready: ssh'),
  load: async () => (await import('./provisioner.js')).createOpenStackProvisioner,
};
