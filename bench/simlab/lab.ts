// The simulated lab: lab-host agents, the product's own (lab-host/agent.ts), run in the
// benchmark's process with the sim kind put into its registry of kinds, one agent per lab host,
// each with a token of its own and a data directory on tmpfs where there is one (an agent syncs
// every provisioning record it writes; a disk's flushes would measure the disk, not Paddock).
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Agent } from '../../lab-host/agent.js';
import { machineKinds } from '../../provisioners/registry.js';
import { registerSimKind } from './kind.js';

export interface LabOptions {
  /** The API URL each agent dials, by agent index (several servers share the agents out). */
  url: (index: number) => string;
  /** The agent token of each lab host, by index. */
  tokens: string[];
  /** The names of the lab hosts, by index. */
  names: string[];
  /** Boards per lab host: every provisioning of them may run at once (a sim board is timers only). */
  boards: number;
}

export interface Lab {
  agents: Agent[];
  stop(): Promise<void>;
}

export function startLab(options: LabOptions): Lab {
  registerSimKind(machineKinds);
  const base = existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir();
  const dataDir = mkdtempSync(path.join(base, 'paddock-simlab-'));
  const agents = options.names.map(
    (name, index) =>
      new Agent({
        url: options.url(index),
        token: options.tokens[index],
        name,
        dataDir: path.join(dataDir, name),
        kinds: ['sim'],
        concurrency: Math.min(256, Math.max(1, options.boards)),
      }),
  );
  for (const agent of agents) agent.start();
  return {
    agents,
    stop: async () => {
      await Promise.all(agents.map((agent) => agent.stop()));
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
