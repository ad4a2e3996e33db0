// An OpenStack pool as the API sees it: when the server starts, the pool entry becomes one machine
// per allowed flavor and instance slot (see index.ts), and the cloud's images are listed for users.
// Runs in the API process: it reaches the cloud's API only, never a server.
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { ProviderImage } from '../../protocol/api.js';
import type { MachineRecord, PoolContext, PoolEntry } from '../types.js';
import type { Flavor } from './client.js';
import { clientFor } from './cloud.js';
import type { OpenStackSettings } from './settings.js';

const MiB = 1024 ** 2;
const GiB = 1024 ** 3;

/** Machine names keep to letters, digits, `.`, `_`, `-`. */
const safe = (text: string) => text.replace(/[^A-Za-z0-9._-]+/g, '-').replace(/^[^A-Za-z0-9]+/, '');

/**
 * The flavors the pool allows, read from Nova; when the cloud cannot be reached, the copy saved at
 * the last successful start (so a cloud that is down at start does not empty the inventory).
 */
export async function expandPool(entry: PoolEntry<OpenStackSettings>, context: PoolContext) {
  const settings = entry.settings;
  const cache = path.join(context.dataDir, 'openstack', `${entry.name}.flavors.json`);
  let flavors: Flavor[];
  try {
    flavors = await clientFor(settings).flavors();
    await mkdir(path.dirname(cache), { recursive: true });
    await writeFile(`${cache}.new`, JSON.stringify(flavors));
    await rename(`${cache}.new`, cache);
  } catch (error) {
    const saved = await readFile(cache, 'utf8').catch(() => undefined);
    if (saved === undefined) throw new Error(`OpenStack pool ${entry.name}: cannot read its flavors: ${(error as Error).message}`);
    context.log.warn({ pool: entry.name, error: (error as Error).message }, 'cannot read the pool flavors; using the ones saved at the last start');
    flavors = JSON.parse(saved) as Flavor[];
  }
  const machines: Omit<MachineRecord<OpenStackSettings>, 'kind'>[] = [];
  for (const wanted of settings.flavors) {
    const flavor = flavors.find((each) => each.name === wanted) ?? flavors.find((each) => each.id === wanted);
    if (!flavor) {
      throw new Error(
        `OpenStack pool ${entry.name}: no flavor ${JSON.stringify(wanted)} (the cloud has ${flavors
          .map((each) => each.name)
          .sort()
          .join(', ')})`,
      );
    }
    for (let slot = 1; slot <= settings.maxInstances; slot++) {
      machines.push({
        name: `${entry.name}-${safe(flavor.name)}-${slot}`,
        labels: { ...entry.labels, pool: entry.name, flavor: flavor.name },
        capacities: { ...entry.capacities, cpus: flavor.vcpus, ram: flavor.ram * MiB, disk: flavor.disk * GiB },
        settings: { ...settings, flavor: flavor.id, pool: entry.name },
      });
    }
  }
  return { machines, maxInstances: settings.maxInstances };
}

/** The cloud's active images, as `POOL/NAME`, with what Paddock recorded on the copies it uploaded. */
export async function poolImages(entry: PoolEntry<OpenStackSettings>): Promise<ProviderImage[]> {
  const client = clientFor(entry.settings);
  const images = await client.images({ status: 'active' });
  return images
    .map((image): ProviderImage => ({
      ref: `${entry.name}/${image.name}`,
      name: image.name,
      id: image.id,
      pool: entry.name,
      origin: 'openstack',
      status: image.status,
      ...(image.disk_format ? { format: image.disk_format } : {}),
      ...(typeof image.size === 'number' ? { size: image.size } : {}),
      ...(typeof image.created_at === 'string' ? { createdAt: image.created_at } : {}),
      ...(typeof image.paddock_ref === 'string' ? { paddockRef: image.paddock_ref } : {}),
      ...(typeof image.paddock_sha256 === 'string' ? { sha256: image.paddock_sha256 } : {}),
    }))
    .sort((a, b) => (a.ref < b.ref ? -1 : a.ref > b.ref ? 1 : 0));
}
