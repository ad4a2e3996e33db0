// The `sim` kind: a simulated board, for benchmarks only. It lives under bench/ and no registry of
// the product lists it: a config that names it is refused as any unknown kind is, unless a
// benchmark put it in the registry first (registerSimKind: the benchmark's agents in its own
// process; server-hook.ts in the servers it starts). A sim board is a few timers in its agent's
// process, no process of its own, so one computer carries a lab of 10,000.
import type { KindDescriptor } from '../../provisioners/types.js';
import { simSettingsSchema, type SimSettings } from './settings.js';

export const simKind: KindDescriptor<SimSettings> = {
  kind: 'sim',
  settingsSchema: simSettingsSchema,
  defaults: { labels: { type: 'simboard' } },
  leaseActions: true,
  load: async () => (await import('./provisioner.js')).createSimProvisioner,
};

/** Puts the sim kind into a registry of machine kinds (the `machineKinds` of provisioners/registry.ts, in source or compiled). */
export function registerSimKind(kinds: Record<string, KindDescriptor>): void {
  kinds[simKind.kind] = simKind as KindDescriptor;
}
