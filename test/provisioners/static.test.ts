// The static kind against real sshd hosts: keys go in tagged, logins work with the real OpenSSH
// client, release removes only what belongs to the reservation, failures are the infrastructure's.
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import test from 'ava';
import type { ExecutionContext } from 'ava';
import { getKind, provisionerKinds } from '../../provisioners/registry.js';
import { generateKeyPair, knownHostsLine, sshConnect } from '../../provisioners/ssh.js';
import { addReservationKey, listReservations, removeReservationKeys } from '../../provisioners/static/adapter.js';
import { staticKind, staticSettingsSchema, type StaticProvisioner, type StaticSettings } from '../../provisioners/static/index.js';
import type { Stage } from '../../provisioners/protocol.js';
import { ProvisionError, type MachineRecord, type ProvisionRequest } from '../../provisioners/types.js';
import { runSsh, startSshd, type TestSshd } from '../helpers/sshd.js';
import { assertNoKeyMaterial } from '../helpers/secrets.js';
import { testKindContext } from '../helpers/kind-context.js';
import { configProblems } from '../helpers/config.js';
import { parseConfig } from '../../api/config.js';

const provisioner = staticKind.create(testKindContext(os.tmpdir())) as StaticProvisioner;

async function host(t: ExecutionContext, authorizedKeys: string[] = []): Promise<TestSshd> {
  const sshd = await startSshd({ authorizedKeys });
  t.teardown(() => sshd.stop());
  return sshd;
}

function machineFor(sshd: TestSshd, overrides: Partial<StaticSettings> = {}): MachineRecord<StaticSettings> {
  const settings = staticSettingsSchema.parse({
    address: sshd.host,
    port: sshd.port,
    user: sshd.user,
    adminKey: sshd.adminKey.path,
    authorizedKeys: sshd.authorizedKeysFile,
    connectTimeout: 5,
    ...overrides,
  });
  return { name: `static-${sshd.port}`, kind: 'static', labels: {}, capacities: {}, settings };
}

let reservations = 0;
function requestFor(machine: MachineRecord<StaticSettings>, options: { withPrivateKey?: boolean } = {}) {
  const reservationId = `r-${process.pid}x${++reservations}`;
  const keys = generateKeyPair(`paddock:${reservationId}`);
  const request: ProvisionRequest<StaticSettings> = {
    reservationId,
    allocationId: `${reservationId}.0`,
    machine,
    publicKey: keys.publicKey,
    ...(options.withPrivateKey === false ? {} : { privateKey: keys.privateKey }),
  };
  return { request, keys };
}

function recorder() {
  const stages: Stage[] = [];
  return { stages, report: { stage: async (stage: Stage) => void stages.push(stage) } };
}

const signal = () => AbortSignal.timeout(30_000);
const linesTagged = (text: string, reservationId: string) => text.split('\n').filter((line) => line.endsWith(` paddock:${reservationId}`));


test('provision installs the tagged key, reports stages, returns the real host key; the key logs in', async (t) => {
  const sshd = await host(t);
  const { request, keys } = requestFor(machineFor(sshd));
  const { stages, report } = recorder();
  const readiness = await provisioner.provision(request, report, signal());

  t.deepEqual(readiness, { host: '127.0.0.1', port: sshd.port, user: sshd.user, hostKey: sshd.hostKey });
  t.deepEqual(stages, ['addressKnown', 'sshReady']);
  const file = await readFile(sshd.authorizedKeysFile, 'utf8');
  t.deepEqual(linesTagged(file, request.reservationId), [`${keys.publicKey.split(' ').slice(0, 2).join(' ')} paddock:${request.reservationId}`]);

  const login = await runSsh(sshd, { privateKey: keys.privateKey, knownHosts: knownHostsLine(readiness.host, readiness.port, readiness.hostKey!), command: 'echo hi' });
  t.is(login.code, 0, login.stderr);
  t.is(login.stdout, 'hi\n');
});

test('provisioning twice adds the key once; without the private key it still installs it', async (t) => {
  const sshd = await host(t);
  const { request } = requestFor(machineFor(sshd), { withPrivateKey: false });
  await provisioner.provision(request, recorder().report, signal());
  await provisioner.provision(request, recorder().report, signal());
  t.is(linesTagged(await readFile(sshd.authorizedKeysFile, 'utf8'), request.reservationId).length, 1);
});

test('release removes only that reservation; admin, hand-added and other reservation keys stay', async (t) => {
  const handAdded = generateKeyPair('someone@laptop');
  const sshd = await host(t, [handAdded.publicKey]);
  const machine = machineFor(sshd);
  const first = requestFor(machine);
  const second = requestFor(machine);
  await provisioner.provision(first.request, recorder().report, signal());
  await provisioner.provision(second.request, recorder().report, signal());
  t.deepEqual(await provisioner.owned(machine), [first.request.reservationId, second.request.reservationId].sort());
  const before = await stat(sshd.authorizedKeysFile);

  await provisioner.release(first.request);
  const after = await readFile(sshd.authorizedKeysFile, 'utf8');
  t.deepEqual(linesTagged(after, first.request.reservationId), []);
  t.is(linesTagged(after, second.request.reservationId).length, 1);
  t.true(after.includes(sshd.adminKey.publicKey));
  t.true(after.includes(handAdded.publicKey));
  t.is((await stat(sshd.authorizedKeysFile)).mode & 0o777, before.mode & 0o777, 'the file keeps its mode');
  t.deepEqual(await provisioner.owned(machine), [second.request.reservationId]);

  // The released key no longer logs in; the other reservation's still does.
  const knownHosts = knownHostsLine(sshd.host, sshd.port, sshd.hostKey);
  t.not((await runSsh(sshd, { privateKey: first.keys.privateKey, knownHosts, command: 'true' })).code, 0);
  t.is((await runSsh(sshd, { privateKey: second.keys.privateKey, knownHosts, command: 'true' })).code, 0);

  await t.notThrowsAsync(provisioner.release(first.request), 'releasing twice is fine');
  await provisioner.release({ ...second.request, publicKey: '' }); // the leak sweep knows only the id
  t.deepEqual(await provisioner.owned(machine), []);
  t.true((await readFile(sshd.authorizedKeysFile, 'utf8')).includes(sshd.adminKey.publicKey));
});

test('release of a reservation never provisioned, or with no file at all, succeeds', async (t) => {
  const sshd = await host(t);
  const missing = path.join(sshd.dir, 'nowhere', 'authorized_keys');
  const machine = machineFor(sshd, { authorizedKeys: missing });
  const { request } = requestFor(machine);
  await t.notThrowsAsync(provisioner.release(request));
  t.deepEqual(await provisioner.owned(machine), []);
});

test('a missing file is created with safe modes; odd paths are quoted; ~/ expands to the home', async (t) => {
  const sshd = await host(t);
  const { client } = await sshConnect({ host: sshd.host, port: sshd.port, user: sshd.user, privateKey: sshd.adminKey.privateKey, timeoutMs: 5000 });
  t.teardown(() => client.end());
  const key = generateKeyPair('k').publicKey;

  const odd = path.join(sshd.dir, "it's a $(touch pwned) dir", 'keys');
  await addReservationKey(client, odd, 'r-odd', key);
  t.is(linesTagged(await readFile(odd, 'utf8'), 'r-odd').length, 1);
  t.is((await stat(odd)).mode & 0o777, 0o600);
  t.is((await stat(path.dirname(odd))).mode & 0o777, 0o700);
  await t.throwsAsync(stat(path.join(sshd.dir, 'pwned')), undefined, 'nothing in the path ran');

  // The login user is the test user, so ~/ on the host is our home directory.
  const home = await mkdtemp(path.join(os.homedir(), '.paddock-test-'));
  t.teardown(() => rm(home, { recursive: true, force: true }));
  const relative = `~/${path.relative(os.homedir(), home)}/sub/authorized_keys`;
  await addReservationKey(client, relative, 'r-home', key);
  t.deepEqual(await listReservations(client, relative), ['r-home']);
  t.is(await removeReservationKeys(client, relative, 'r-home'), 1);
  t.is(await readFile(path.join(home, 'sub', 'authorized_keys'), 'utf8'), '');
});

test('a file without a final newline keeps its last line intact', async (t) => {
  const sshd = await host(t);
  await writeFile(sshd.authorizedKeysFile, sshd.adminKey.publicKey); // no trailing newline
  const { request } = requestFor(machineFor(sshd));
  await provisioner.provision(request, recorder().report, signal());
  const lines = (await readFile(sshd.authorizedKeysFile, 'utf8')).split('\n');
  t.is(lines[0], sshd.adminKey.publicKey);
  t.true(lines[1].endsWith(`paddock:${request.reservationId}`));
});

test('readiness uses the reservation key: a private key that does not match fails at sshReady', async (t) => {
  const sshd = await host(t);
  const { request } = requestFor(machineFor(sshd));
  const mismatched = { ...request, privateKey: generateKeyPair('other').privateKey };
  const { stages, report } = recorder();
  const error = await t.throwsAsync(provisioner.provision(mismatched, report, signal()), { instanceOf: ProvisionError });
  t.is(error?.fault, 'infrastructure');
  t.is(error?.stage, 'sshReady');
  t.deepEqual(stages, ['addressKnown']);
  assertNoKeyMaterial(t, error?.message ?? '', mismatched.privateKey);
});

test('a wrong admin key, a closed port, an unreadable key file or a wrong pinned host key are the infrastructure’s fault', async (t) => {
  const sshd = await host(t);
  const stranger = generateKeyPair('stranger');
  const strangerPath = path.join(sshd.dir, 'stranger_key');
  await writeFile(strangerPath, stranger.privateKey, { mode: 0o600 });

  const wrongKey = await t.throwsAsync(provisioner.provision(requestFor(machineFor(sshd, { adminKey: strangerPath })).request, recorder().report, signal()), {
    instanceOf: ProvisionError,
  });
  t.is(wrongKey?.fault, 'infrastructure');
  t.is(wrongKey?.stage, 'sshReady');
  t.regex(wrongKey?.message ?? '', /authentication/);
  assertNoKeyMaterial(t, wrongKey?.message ?? '', stranger.privateKey);

  const missingPath = path.join(sshd.dir, 'no-such-key');
  const unreadable = await t.throwsAsync(provisioner.release(requestFor(machineFor(sshd, { adminKey: missingPath })).request), { instanceOf: ProvisionError });
  t.is(unreadable?.fault, 'infrastructure');
  t.true(unreadable?.message.includes(missingPath));
  t.regex(unreadable?.message ?? '', /ENOENT/);

  const pinned = await t.throwsAsync(provisioner.owned(machineFor(sshd, { hostKey: generateKeyPair('impostor').publicKey })), { instanceOf: ProvisionError });
  t.regex(pinned?.message ?? '', /does not match the pinned/);
  t.deepEqual(await provisioner.owned(machineFor(sshd, { hostKey: sshd.hostKey })), [], 'the right pin works');

  const closed = await startSshd();
  const closedMachine = machineFor(closed);
  await closed.stop();
  await writeFile(strangerPath, closed.adminKey.privateKey, { mode: 0o600 });
  const refused = await t.throwsAsync(provisioner.provision(requestFor({ ...closedMachine, settings: { ...closedMachine.settings, adminKey: strangerPath } }).request, recorder().report, signal()), {
    instanceOf: ProvisionError,
  });
  t.is(refused?.fault, 'infrastructure');
  t.regex(refused?.message ?? '', /ECONNREFUSED/);
  assertNoKeyMaterial(t, refused?.message ?? '', closed.adminKey.privateKey);
});

test('the settings schema applies defaults and rejects unknown keys and bad values', (t) => {
  t.deepEqual(staticSettingsSchema.parse({ address: 'lab-1', adminKey: '/etc/paddock/key' }), {
    address: 'lab-1',
    port: 22,
    user: 'root',
    adminKey: '/etc/paddock/key',
    authorizedKeys: '~/.ssh/authorized_keys',
    connectTimeout: 10,
  });
  const unknown = staticSettingsSchema.safeParse({ address: 'lab-1', adminKey: '/k', adminKee: '/k' });
  t.false(unknown.success);
  t.regex(JSON.stringify(unknown.error?.issues), /adminKee/);
  t.false(staticSettingsSchema.safeParse({ adminKey: '/k' }).success, 'address is required');
  t.false(staticSettingsSchema.safeParse({ address: 'a', adminKey: '/k', port: 70000 }).success);
  t.false(staticSettingsSchema.safeParse({ address: 'a', adminKey: '/k', hostKey: 'not a key' }).success);
  t.false(staticSettingsSchema.safeParse({ address: 'a', adminKey: '/k', authorizedKeys: '~bob/keys' }).success);
});

test('the registry knows static and names the known kinds for an unknown one', (t) => {
  t.is(getKind('static'), staticKind);
  t.is(provisionerKinds.static.kind, 'static');
  t.throws(() => getKind('qemu-nope'), { message: /unknown machine kind "qemu-nope".*static/ });
  t.throws(() => getKind('toString'), { message: /unknown machine kind/ });
});

const staticEntry = (name: string, settings: string, extra = '') => `
  - name: ${name}
    kind: static${extra}
    settings: { ${settings}, adminKey: /etc/paddock/key }`;

test('count on a static machine is refused with the file, line and path: the copies would share one login', (t) => {
  const message = configProblems(`machines:${staticEntry('build', 'address: 10.0.0.5, user: ci', '\n    count: 3')}\n`);
  t.regex(message, /^lab\.yaml: invalid configuration/);
  t.regex(message, /line 4: machines\[0\]\.count: a static machine is one ci@10\.0\.0\.5:22; count would give it to 3 reservations at once/);
});

test('two static machines with the same address, port and user are refused; another user or port is another machine', (t) => {
  const first = staticEntry('build-1', 'address: 10.0.0.5, user: ci');
  const message = configProblems(`machines:${first}${staticEntry('build-2', 'address: 10.0.0.5, port: 22, user: ci')}\n`);
  t.regex(message, /^lab\.yaml: invalid configuration/);
  t.regex(message, /line 7: machines\[1\]\.settings: build-2 is ci@10\.0\.0\.5:22, the same as build-1/);
  // Host names are compared without case: BUILD.lab and build.lab are one host.
  t.regex(configProblems(`machines:${staticEntry('a', 'address: Build.lab, user: ci')}${staticEntry('b', 'address: build.LAB, user: ci')}\n`), /machines\[1\]\.settings: b is ci@build\.lab:22, the same as a/);

  const distinct = parseConfig(`machines:${first}${staticEntry('build-2', 'address: 10.0.0.5, user: ci2')}${staticEntry('build-3', 'address: 10.0.0.5, port: 2222, user: ci')}\n`);
  t.deepEqual(distinct.machines.map((machine) => machine.name), ['build-1', 'build-2', 'build-3']);
});
