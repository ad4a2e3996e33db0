// What a configuration reload (SIGHUP to `paddock serve`) may change while the API runs: the
// machine list, and nothing else. This file works out, from the running config and the file read
// again, the machines to hand the scheduler (Scheduler.applyMachines) and the settings that differ
// and wait for a restart. Provider pools (OpenStack) become machines by asking their cloud at
// start: an entry of theirs that changed waits for a restart too, and their machines stay as they are.
import type { Config, MachineConfig } from './config.js';
import { getKind } from '../provisioners/registry.js';

/** A pool entry of a provider (its machines are made at start by asking the cloud), before or after expansion. */
export const isProviderPool = (machine: Pick<MachineConfig, 'kind'>) => getKind(machine.kind).pool !== undefined;

export interface ReloadPlan {
  /**
   * Every machine the reloaded file names: as the file has it when it is new, as it runs now when
   * it was named before (a changed definition waits for a restart); provider pools' machines as they run now.
   */
  definitions: MachineConfig[];
  /** Machines named before whose definition changed (labels, capacities, settings, lab host, …): applied at the next start. */
  changed: string[];
  /** The top-level settings that differ from the running ones (`quotas`, `lease`, …; `machines (provider pools)`): applied at the next start. */
  restartNeeded: string[];
}

/**
 * `running`: the config the API runs (provider pools expanded); `startPools`: the provider pool
 * entries of the file as it was at start, before expansion; `next`: the file read again, with the
 * command line's overrides applied as at start.
 */
export function planReload(running: Config, startPools: readonly MachineConfig[], next: Config): ReloadPlan {
  const restartNeeded: string[] = [];
  for (const key of Object.keys({ ...running, ...next }) as (keyof Config)[]) {
    if (key !== 'machines' && canonical(running[key]) !== canonical(next[key])) restartNeeded.push(key);
  }
  const nextPools = next.machines.filter(isProviderPool);
  if (canonical(nextPools) !== canonical(startPools)) restartNeeded.push('machines (provider pools)');
  const runningNow = new Map(running.machines.map((machine) => [machine.name, machine]));
  const changed: string[] = [];
  const definitions = next.machines
    .filter((machine) => !isProviderPool(machine))
    .map((machine) => {
      const before = runningNow.get(machine.name);
      if (before === undefined || isProviderPool(before)) return machine;
      if (canonical(before) !== canonical(machine)) changed.push(machine.name);
      return before;
    });
  const named = new Set(definitions.map((machine) => machine.name));
  const pools = running.machines.filter((machine) => isProviderPool(machine) && !named.has(machine.name));
  return { definitions: [...definitions, ...pools], changed, restartNeeded };
}

/** A value as text, object keys sorted at every level: equal values give the same text whatever their order in the file. */
export function canonical(value: unknown): string {
  return JSON.stringify(value ?? null, (_key, inner: unknown) =>
    inner !== null && typeof inner === 'object' && !Array.isArray(inner)
      ? Object.fromEntries(Object.entries(inner as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
      : inner,
  );
}
