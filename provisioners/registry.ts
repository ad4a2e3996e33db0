// The provisioner kinds this build knows, by the `kind:` name used in the machine inventory. The
// config loader validates each machine's settings with its kind's schema; agents create
// provisioners from here.
import { boardKind } from './board/index.js';
import { openstackKind } from './openstack/index.js';
import { qemuKind } from './qemu/index.js';
import { staticKind } from './static/index.js';
import type { ProvisionerKind } from './types.js';

// Each kind has its own settings type; the map holds them with settings erased (`unknown`): callers
// validate settings with the kind's own schema before handing them back to that kind.
export const provisionerKinds: Record<string, ProvisionerKind> = {
  static: staticKind,
  qemu: qemuKind,
  board: boardKind,
  openstack: openstackKind,
};

/** The kind named `kind`, or an error listing the kinds there are. */
export function getKind(kind: string): ProvisionerKind {
  const definition = Object.hasOwn(provisionerKinds, kind) ? provisionerKinds[kind] : undefined;
  if (!definition) {
    throw new Error(`unknown machine kind ${JSON.stringify(kind)} (known kinds: ${Object.keys(provisionerKinds).sort().join(', ')})`);
  }
  return definition;
}
