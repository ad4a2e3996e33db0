// Pools offered by a provider (an OpenStack cloud's flavors): when the server starts, each pool entry
// of the config becomes its machines, and the most of them that may be reserved at once is kept as
// the pool's limit for the scheduler. The pool entries are kept too, to list the providers' images.
import type { Config, MachineConfig } from './config.js';
import { getKind } from '../provisioners/registry.js';
import type { PoolContext, PoolEntry } from '../provisioners/types.js';
import type { ProviderImage } from '../protocol/api.js';

export interface Pools {
  entries: PoolEntry[];
  /** The most machines of each pool (by its `pool` label) reserved at once. */
  limits: Map<string, number>;
}

/** Replaces each pool entry of config.machines by the pool's machines. */
export async function expandProviderPools(config: Config, context: PoolContext): Promise<Pools> {
  const entries: PoolEntry[] = [];
  const limits = new Map<string, number>();
  const machines: MachineConfig[] = [];
  for (const machine of config.machines) {
    const support = getKind(machine.kind).pool;
    if (!support) {
      machines.push(machine);
      continue;
    }
    const entry: PoolEntry = { name: machine.name, kind: machine.kind, labels: machine.labels, capacities: machine.capacities, settings: machine.settings };
    const expanded = await support.expand(entry, context);
    entries.push(entry);
    limits.set(machine.name, expanded.maxInstances);
    for (const each of expanded.machines)
      machines.push({
        ...each,
        kind: machine.kind,
        labHost: machine.labHost,
        access: machine.access,
        qualify: machine.qualify,
        warm: machine.warm,
        warmPool: machine.warmPool,
      });
  }
  if (entries.length === 0) return { entries, limits };
  const names = new Set<string>();
  for (const machine of machines) {
    if (names.has(machine.name)) throw new Error(`the pools make machine ${machine.name} twice: rename a pool`);
    names.add(machine.name);
  }
  config.machines = machines;
  return { entries, limits };
}

/** Every provider pool's bootable images; a pool that cannot be asked is reported, not fatal. */
export async function providerImages(pools: Pools, context: PoolContext): Promise<{ images: ProviderImage[]; errors: { pool: string; message: string }[] }> {
  const images: ProviderImage[] = [];
  const errors: { pool: string; message: string }[] = [];
  await Promise.all(
    pools.entries.map(async (entry) => {
      const list = getKind(entry.kind).pool?.images;
      if (!list) return;
      try {
        images.push(...(await list(entry, context)));
      } catch (error) {
        errors.push({ pool: entry.name, message: (error as Error).message });
      }
    }),
  );
  images.sort((a, b) => (a.ref < b.ref ? -1 : a.ref > b.ref ? 1 : 0));
  return { images, errors };
}
