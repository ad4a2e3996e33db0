// Loaded with --import into each `paddock serve` the simlab benchmark starts, before the server's
// own modules: puts the sim kind's descriptor into that server's registry of kinds, so its config
// may name kind sim. The server runs compiled (dist/), so the benchmark bundles this file with
// esbuild and names the compiled registry's URL in PADDOCK_SIMLAB_REGISTRY; nothing of the product
// loads it.
import { registerSimKind } from './kind.js';

const registryUrl = process.env.PADDOCK_SIMLAB_REGISTRY;
if (!registryUrl) throw new Error('PADDOCK_SIMLAB_REGISTRY names no registry module');
const registry = (await import(registryUrl)) as typeof import('../../provisioners/registry.js');
registerSimKind(registry.machineKinds);
