// Provisioning records (lab-host/journal.ts) as an agent that crashed would have left them, for
// tests that start an agent over leftovers.
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { recordVersion, type ProvisioningRecord } from '../../lab-host/journal.js';

/** The record of a QEMU VM made ready for the reservation on the machine, with the kind's detail. */
export function readyVmRecord(machine: string, reservationId: string, detail: unknown): ProvisioningRecord {
  const at = new Date().toISOString();
  return {
    version: recordVersion,
    kind: 'qemu',
    machine,
    reservationId,
    allocationId: `${reservationId}.0`,
    stage: 'sshReady',
    ready: true,
    readiness: { host: '127.0.0.1', port: 1, user: 'root' },
    startedAt: at,
    updatedAt: at,
    readyAt: at,
    detail,
  };
}

/** Writes a record file's text where the agent with this data directory keeps it. */
export function writeRecordFile(dataDir: string, machine: string, reservationId: string, text: string): void {
  const folder = path.join(dataDir, 'agent', 'provisioning', machine);
  mkdirSync(folder, { recursive: true });
  writeFileSync(path.join(folder, `${reservationId}.json`), text);
}
