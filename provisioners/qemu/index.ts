// The `qemu` kind's descriptor. A qemu machine is one VM slot on the agent's host, booted by
// provisioner.ts. A pool is a machine entry with `count: N`; the slot's size is its capacities
// (`cpus`, `ram`) and its architecture its `arch` label, so what a spec matches is what QEMU is told
// to boot. Settings are validated when the config loads; unknown keys are rejected.
import type { KindDescriptor } from '../types.js';
import { qemuSettingsSchema, qemuDefaults, type QemuSettings } from './settings.js';

export * from './settings.js';

export const qemuKind: KindDescriptor<QemuSettings> = {
  kind: 'qemu',
  settingsSchema: qemuSettingsSchema,
  defaults: qemuDefaults,
  leaseActions: true,
  warm: () => undefined,
  load: async () => (await import('./provisioner.js')).createQemuProvisioner,
};
