// What an agent keeps warm, read from its own files: the provisioning records of its warm machines
// (`warm-…` beside the reservations') and the key pair only it holds.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';

export interface WarmRecord {
  machine: string;
  /** The warm boot's id (a new one for every boot). */
  id: string;
  port: number;
  hostKey: string;
  /** How long the warm boot took to be ready (seconds). */
  bootSeconds: number;
}

/** The machines with a warm boot that is ready. */
export function warmRecords(dataDir: string): WarmRecord[] {
  const root = path.join(dataDir, 'agent', 'provisioning');
  const found: WarmRecord[] = [];
  if (!existsSync(root)) return found;
  for (const machine of readdirSync(root, { withFileTypes: true }).filter((entry) => entry.isDirectory())) {
    for (const file of readdirSync(path.join(root, machine.name)).filter((name) => name.startsWith('warm-') && name.endsWith('.json'))) {
      const record = JSON.parse(readFileSync(path.join(root, machine.name, file), 'utf8')) as {
        ready: boolean;
        readiness?: { port: number; hostKey: string };
        startedAt: string;
        readyAt?: string;
      };
      if (!record.ready || !record.readiness) continue;
      const { port, hostKey } = record.readiness;
      const bootSeconds = (Date.parse(record.readyAt ?? record.startedAt) - Date.parse(record.startedAt)) / 1000;
      found.push({ machine: machine.name, id: file.replace(/\.json$/, ''), port, hostKey, bootSeconds });
    }
  }
  return found;
}

/** The agent's own private key for its warm machines. */
export const warmKey = (dataDir: string) =>
  (JSON.parse(readFileSync(path.join(dataDir, 'agent', 'warm', 'key.json'), 'utf8')) as { privateKey: string }).privateKey;
