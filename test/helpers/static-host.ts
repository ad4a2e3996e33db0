// Driving the static kind directly against a real test sshd: a machine record for a server's
// tenant, reservation requests with fresh keys and a hard cap, a stage recorder, and a provisioner
// whose log lines the test can read.
import os from 'node:os';
import path from 'node:path';
import type { ExecutionContext } from 'ava';
import { generateKeyPair } from '../../protocol/ssh.js';
import { staticSettingsSchema, type StaticSettings } from '../../provisioners/static/index.js';
import { createStaticProvisioner, type StaticProvisioner } from '../../provisioners/static/provisioner.js';
import type { Stage } from '../../protocol/agent.js';
import type { MachineRecord, ProvisionRequest } from '../../provisioners/types.js';
import { testKindContext } from './kind-context.js';
import { detailOf, OpenRecord, ProvisioningJournal, recordVersion } from '../../lab-host/journal.js';
import { startSshd, type TestSshd } from './sshd.js';
import { captureMessages } from './log.js';

export async function host(t: ExecutionContext, authorizedKeys: string[] = []): Promise<TestSshd> {
  const sshd = await startSshd({ authorizedKeys });
  t.teardown(() => sshd.stop());
  return sshd;
}

/** A static provisioner and the lines it logged. */
export function loggingProvisioner(): { provisioner: StaticProvisioner; logs: string[] } {
  const logs: string[] = [];
  const provisioner = createStaticProvisioner({ ...testKindContext(os.tmpdir()), log: captureMessages(logs, 'provisioner') }) as StaticProvisioner;
  return { provisioner, logs };
}

export function machineFor(sshd: TestSshd, overrides: Partial<StaticSettings> = {}): MachineRecord<StaticSettings> {
  const settings = staticSettingsSchema.parse({
    address: sshd.host,
    port: sshd.port,
    user: sshd.tenant,
    adminUser: sshd.user,
    adminKey: sshd.adminKey.path,
    authorizedKeys: sshd.authorizedKeysFile,
    connectTimeout: 5,
    ...overrides,
  });
  return { name: `static-${sshd.port}`, kind: 'static', labels: {}, capacities: {}, settings };
}

let reservations = 0;
const journal = new ProvisioningJournal(path.join(os.tmpdir(), `paddock-static-records-${process.pid}`));
/** A reservation of the machine with a fresh key pair and a hard cap an hour away (unless given). */
export function requestFor(machine: MachineRecord<StaticSettings>, options: { withPrivateKey?: boolean; hardCapAt?: number } = {}) {
  const reservationId = `r-${process.pid}x${++reservations}`;
  const keys = generateKeyPair(`paddock:${reservationId}`);
  const request: ProvisionRequest<StaticSettings> = {
    reservationId,
    allocationId: `${reservationId}.0`,
    machine,
    publicKey: keys.publicKey,
    hardCapAt: options.hardCapAt ?? Date.now() + 3600_000,
    // The record the agent's loop would keep, in a journal of the test's own.
    state: detailOf(
      new OpenRecord(journal, {
        version: recordVersion,
        kind: 'static',
        machine: machine.name,
        reservationId,
        allocationId: `${reservationId}.0`,
        ready: false,
        startedAt: new Date().toISOString(),
        updatedAt: new Date().toISOString(),
      }),
    ),
    ...(options.withPrivateKey === false ? {} : { privateKey: keys.privateKey }),
  };
  return { request, keys };
}

export function recorder() {
  const stages: Stage[] = [];
  return { stages, report: { stage: async (stage: Stage) => void stages.push(stage) } };
}

export const signal = () => AbortSignal.timeout(60_000);
export const linesTagged = (text: string, reservationId: string) => text.split('\n').filter((line) => line.endsWith(` paddock:${reservationId}`));
