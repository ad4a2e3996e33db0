// The sim kind's provisioner: a board's power, boot and readiness as timers. A boot takes a time
// drawn from a log-normal around the board's median (times the time scale), reports the stages a
// real board's console and network show, and either comes up (an address, a login, a host key) or,
// at the board's failure rate, never shows a boot, which the agent reports as the infrastructure's
// fault, so it counts against the board's health as a real boot timeout does.
import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { ProvisionError, parseSettings, type ProvisionerFactory, type ProvisionRequest, type Readiness, type StageReporter } from '../../provisioners/types.js';
import { simSettingsSchema, type SimSettings } from './settings.js';

const simKind = { kind: 'sim', settingsSchema: simSettingsSchema };

/** A standard normal draw (Box-Muller). */
function normal(): number {
  return Math.sqrt(-2 * Math.log(1 - Math.random())) * Math.cos(2 * Math.PI * Math.random());
}

/** Milliseconds of one boot of the board, scaled. */
export function bootMs(settings: SimSettings): number {
  return settings.bootSeconds * Math.exp(settings.bootSpread * normal()) * settings.timeScale * 1000;
}

/** A host key line that stays the same for a board across boots, as a real board's does. */
function hostKey(machine: string): string {
  const key = Buffer.concat([
    Buffer.from([0, 0, 0, 11]),
    Buffer.from('ssh-ed25519'),
    Buffer.from([0, 0, 0, 32]),
    createHash('sha256').update(machine).digest(),
  ]);
  return `ssh-ed25519 ${key.toString('base64')}`;
}

async function boot(request: ProvisionRequest<SimSettings>, report: StageReporter, signal: AbortSignal): Promise<Readiness> {
  const settings = parseSettings(simKind, request.machine);
  const name = request.machine.name;
  await sleep(settings.powerSeconds * settings.timeScale * 1000, undefined, { signal });
  await report.stage('powerConfirmed');
  const total = bootMs(settings);
  // The console shows the kernel a third of the way in; DHCP answers near the end.
  await sleep(total / 3, undefined, { signal });
  if (Math.random() < settings.failureRate) {
    throw new ProvisionError(`${name}: no boot seen on the console (simulated failure)`, 'infrastructure', 'bootSeen', { code: 'boot_timeout' });
  }
  await report.stage('bootSeen');
  await sleep(total / 2, undefined, { signal });
  await report.stage('addressKnown');
  await sleep(total / 6, undefined, { signal });
  await report.stage('sshReady');
  return { host: `${name}.sim.invalid`, port: 22, user: 'root', hostKey: hostKey(name) };
}

export const createSimProvisioner: ProvisionerFactory<SimSettings> = () => ({
  provision: boot,
  // Power off; nothing else stays on a board between reservations.
  release: async (request) => {
    const settings = parseSettings(simKind, request.machine);
    await sleep(settings.powerSeconds * settings.timeScale * 1000);
  },
  power: async (request, action, report, signal) => {
    const settings = parseSettings(simKind, request.machine);
    if (action === 'off') {
      await sleep(settings.powerSeconds * settings.timeScale * 1000, undefined, { signal });
      return undefined;
    }
    return boot(request, report, signal);
  },
});
