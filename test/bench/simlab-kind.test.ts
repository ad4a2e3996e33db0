// The sim kind is the simlab benchmark's alone: a config that names it without the benchmark is
// refused as any unknown kind is, and its provisioner behaves as a board: stages in readiness
// order, then an address and a host key; at its failure rate, a boot that is never seen, which is
// the infrastructure's fault.
import test from 'ava';
import { ConfigError, parseConfig } from '../../api/config.js';
import { machineKinds } from '../../provisioners/registry.js';
import { ProvisionError, type ProvisionRequest, type StageReporter } from '../../provisioners/types.js';
import type { Stage } from '../../protocol/agent.js';
import { simKind } from '../../bench/simlab/kind.js';
import type { SimSettings } from '../../bench/simlab/settings.js';

test('a config naming kind sim without the benchmark gets the unknown kind error', (t) => {
  const config = `machines:\n  - { name: sim-1, kind: sim, count: 2, settings: { timeScale: 0.01 } }\n`;
  const error = t.throws(() => parseConfig(config, 'paddock.yaml'), { instanceOf: ConfigError });
  t.regex(error.message, /line 2: machines\[0\]\.kind: unknown machine kind "sim" \(known kinds: board, openstack, qemu, static\)/);
  t.false(Object.hasOwn(machineKinds, 'sim'));
});

function request(settings: Partial<SimSettings>): ProvisionRequest<SimSettings> {
  let detail: unknown;
  return {
    reservationId: 'r-1',
    allocationId: 'r-1.0',
    machine: { name: 'sim-1-1', kind: 'sim', labels: {}, capacities: {}, settings: settings as SimSettings },
    publicKey: 'ssh-ed25519 AAAA test',
    state: { read: async () => detail as never, save: async (next) => void (detail = next) },
  };
}

function recorder(): StageReporter & { stages: Stage[] } {
  const stages: Stage[] = [];
  return { stages, stage: async (stage) => void stages.push(stage) };
}

test('a sim board reports its stages in readiness order and comes up with an address and the same host key each time', async (t) => {
  const provisioner = (await simKind.load())({} as never);
  const settings = { bootSeconds: 1, failureRate: 0, timeScale: 0.001 };
  const first = recorder();
  const readiness = await provisioner.provision(request(settings), first, new AbortController().signal);
  t.deepEqual(first.stages, ['powerConfirmed', 'bootSeen', 'addressKnown', 'sshReady']);
  t.like(readiness, { host: 'sim-1-1.sim.invalid', port: 22, user: 'root' });
  t.regex((readiness as { hostKey: string }).hostKey, /^ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI[A-Za-z0-9+/]+=*$/);
  const again = await provisioner.provision(request(settings), recorder(), new AbortController().signal);
  t.is((again as { hostKey: string }).hostKey, (readiness as { hostKey: string }).hostKey);
  t.is(await provisioner.power!(request(settings), 'off', recorder(), new AbortController().signal), undefined);
  await t.notThrowsAsync(provisioner.release(request(settings)));
});

test('a sim board that fails never shows a boot: the infrastructure is at fault, with boot_timeout', async (t) => {
  const provisioner = (await simKind.load())({} as never);
  const reporter = recorder();
  const error = await t.throwsAsync(provisioner.provision(request({ failureRate: 1, timeScale: 0.001 }), reporter, new AbortController().signal), {
    instanceOf: ProvisionError,
  });
  t.like(error, { fault: 'infrastructure', code: 'boot_timeout', stage: 'bootSeen' });
  t.deepEqual(reporter.stages, ['powerConfirmed']);
});

test('a release during a sim boot aborts it', async (t) => {
  const provisioner = (await simKind.load())({} as never);
  const controller = new AbortController();
  const reporter = recorder();
  const booting = provisioner.provision(request({ bootSeconds: 3600, failureRate: 0, timeScale: 1, powerSeconds: 0 }), reporter, controller.signal);
  while (reporter.stages.length === 0) await new Promise((resolve) => setTimeout(resolve, 5));
  controller.abort(new Error('released while provisioning'));
  await t.throwsAsync(booting, { name: 'AbortError' });
  t.deepEqual(reporter.stages, ['powerConfirmed']);
});

test('sim settings are checked strictly: an unknown key or a failure rate above 1 is refused', (t) => {
  t.false(simKind.settingsSchema.safeParse({ bootSecond: 20 }).success);
  t.false(simKind.settingsSchema.safeParse({ failureRate: 1.5 }).success);
  t.like(simKind.settingsSchema.parse({}), { bootSeconds: 20, bootSpread: 0.5, failureRate: 0.02, powerSeconds: 1, timeScale: 1 });
});
