// The machine kinds this build knows, by the `kind:` name used in the machine inventory. The config
// loader validates each machine's settings with its kind's schema and the API expands provider
// pools with it; both see only the kinds' descriptors, so the API process never loads a
// provisioner. Agents make provisioners from the same descriptors, each imported on first use.
import { boardKind } from './board/index.js';
import { openstackKind } from './openstack/index.js';
import { qemuKind } from './qemu/index.js';
import { staticKind } from './static/index.js';
import { ProvisionError, type KindContext, type KindDescriptor, type Provisioner } from './types.js';

// Each kind has its own settings type; the map holds them with settings erased (`unknown`): callers
// validate settings with the kind's own schema before handing them back to that kind.
export const machineKinds: Record<string, KindDescriptor> = {
  static: staticKind,
  qemu: qemuKind,
  board: boardKind,
  openstack: openstackKind,
};

/** The kind named `kind`, or an error listing the kinds there are. */
export function getKind(kind: string): KindDescriptor {
  const descriptor = Object.hasOwn(machineKinds, kind) ? machineKinds[kind] : undefined;
  if (!descriptor) {
    throw new Error(`unknown machine kind ${JSON.stringify(kind)} (known kinds: ${Object.keys(machineKinds).sort().join(', ')})`);
  }
  return descriptor;
}

/**
 * A provisioner of the kind, made at once; the kind's implementation is imported in the background
 * from now on and awaited by the first call, so a lab host loads only the kinds it provisions. A
 * failed import is tried again by the next call. Its optional methods are always there: for a kind
 * without them they do nothing (`owned` lists no reservation, `check` finds no problem), or refuse (`power`).
 */
export function createProvisioner(kind: KindDescriptor, context: KindContext): Required<Provisioner> {
  let loading: Promise<Provisioner> | undefined;
  const loaded = () =>
    (loading ??= kind.load().then(
      (factory) => factory(context),
      (error: unknown) => {
        loading = undefined;
        throw error;
      },
    ));
  void loaded().catch(() => undefined);
  return {
    provision: async (request, report, signal) => (await loaded()).provision(request, report, signal),
    release: async (request) => (await loaded()).release(request),
    power: async (request, action, report, signal) => {
      const provisioner = await loaded();
      if (!provisioner.power)
        throw new ProvisionError(`${request.machine.name}: a ${kind.kind} machine cannot be powered during a lease`, 'request', undefined, {
          code: 'power_not_supported',
        });
      return provisioner.power(request, action, report, signal);
    },
    adopt: async (request) => (await loaded()).adopt?.(request),
    handOver: async (warm, request) => {
      const provisioner = await loaded();
      if (!provisioner.handOver) throw new ProvisionError(`${request.machine.name}: a ${kind.kind} machine is never kept warm`, 'infrastructure');
      return provisioner.handOver(warm, request);
    },
    owned: async (machine) => (await loaded()).owned?.(machine) ?? [],
    sweep: async (machines) => (await loaded()).sweep?.(machines),
    check: async (machine, signal) => (await loaded()).check?.(machine, signal) ?? [],
    close: async () => {
      const provisioner = await loading?.catch(() => undefined);
      await provisioner?.close?.();
    },
  };
}
