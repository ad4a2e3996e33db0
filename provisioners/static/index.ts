// The `static` kind's descriptor. A static machine is a host that already exists, one login on it
// (`user`) handed to one reservation at a time, and Paddock's own account on it (`adminUser`) that
// manages that login's keys (provisioner.ts does the work). Settings are validated when the config
// loads; unknown keys are rejected so a typo (`adminKee`) fails loudly instead of silently using a
// default.
//
// The two accounts must differ: a tenant who can log in as the admin can rewrite the admin's keys
// (plant a forced command, keep a key of her own) and outlive her reservation.
import type { KindDescriptor } from '../types.js';
import { staticSettingsSchema, staticIdentities, type StaticSettings } from './settings.js';

export * from './settings.js';

export const staticKind: KindDescriptor<StaticSettings> = {
  kind: 'static',
  settingsSchema: staticSettingsSchema,
  pathSettings: ['adminKey'],
  identities: staticIdentities,
  load: async () => (await import('./provisioner.js')).createStaticProvisioner,
};
