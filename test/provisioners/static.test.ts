// The static kind against real sshd hosts: keys go in tagged, restricted and expiring, logins to the
// tenant work with the real OpenSSH client, release removes only what belongs to the reservation,
// failures are the infrastructure's; the config refuses machines that would share a login.
// (The hostile tenant: static-tenant.test.ts.)
import { chmod, chown, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import test from 'ava';
import { createProvisioner, getKind, machineKinds } from '../../provisioners/registry.js';
import { generateKeyPair, knownHostsLine, sshConnect } from '../../protocol/ssh.js';
import { addReservationKey, expiryTime, listReservations } from '../../provisioners/static/adapter.js';
import { staticKind, staticSettingsSchema } from '../../provisioners/static/index.js';
import { ProvisionError } from '../../provisioners/types.js';
import { testKindContext } from '../helpers/kind-context.js';
import { runSsh, startSshd } from '../helpers/sshd.js';
import { assertNoKeyMaterial } from '../helpers/secrets.js';
import { host, linesTagged, loggingProvisioner, machineFor, recorder, requestFor, signal } from '../helpers/static-host.js';
import { configProblems } from '../helpers/config.js';
import { parseConfig } from '../../api/config.js';

const { provisioner, logs } = loggingProvisioner();
const keyOf = (publicKey: string) => publicKey.split(' ').slice(0, 2).join(' ');

test('provision installs a restricted key expiring at the hard cap for the tenant, reports stages, returns the real host key; the key logs in as the tenant', async (t) => {
  const sshd = await host(t);
  const hardCapAt = Date.parse('2099-03-04T05:06:07.890Z');
  const { request, keys } = requestFor(machineFor(sshd), { hardCapAt });
  const { stages, report } = recorder();
  const readiness = await provisioner.provision(request, report, signal());

  t.deepEqual(readiness, { host: '127.0.0.1', port: sshd.port, user: sshd.tenant, hostKey: sshd.hostKey });
  t.deepEqual(stages, ['addressKnown', 'sshReady']);
  const file = await readFile(sshd.authorizedKeysFile, 'utf8');
  t.deepEqual(linesTagged(file, request.reservationId), [
    `expiry-time="20990304050607Z",restrict,pty ${keyOf(keys.publicKey)} paddock:${request.reservationId}`,
  ]);
  const modes = await stat(sshd.authorizedKeysFile);
  t.is(modes.uid, 0, 'the file is root’s');
  t.is(modes.mode & 0o777, 0o644, 'sshd reads it as the tenant; only root writes it');
  t.false((await readFile(sshd.adminAuthorizedKeysFile, 'utf8')).includes(keyOf(keys.publicKey)), 'nothing goes to the admin’s file');

  const knownHosts = knownHostsLine(readiness.host, readiness.port, readiness.hostKey!);
  const login = await runSsh(sshd, { privateKey: keys.privateKey, knownHosts, user: sshd.tenant, command: 'id -un' });
  t.is(login.code, 0, login.stderr);
  t.is(login.stdout, `${sshd.tenant}\n`);
  const asAdmin = await runSsh(sshd, { privateKey: keys.privateKey, knownHosts, command: 'true' });
  t.not(asAdmin.code, 0, 'the reservation key does not log in as the admin');
  await provisioner.release(request);
});

test('the expiry is written in UTC, and sshd refuses a key past it: a provisioning after the hard cap fails at sshReady', async (t) => {
  t.is(expiryTime(new Date('2026-12-02T23:59:58.999Z')), '20261202235958Z');
  const sshd = await host(t);
  const { request } = requestFor(machineFor(sshd), { hardCapAt: Date.now() - 120_000 });
  const error = await t.throwsAsync(provisioner.provision(request, recorder().report, signal()), { instanceOf: ProvisionError });
  t.is(error?.stage, 'sshReady');
  t.regex(error?.message ?? '', /login with the reservation's key failed/);
  const { request: capless } = requestFor(machineFor(sshd));
  delete capless.hardCapAt;
  await t.throwsAsync(provisioner.provision(capless, recorder().report, signal()), { message: /no hard cap/ });
  t.deepEqual(linesTagged(await readFile(sshd.authorizedKeysFile, 'utf8'), capless.reservationId), [], 'no key without an expiry');
});

test('provisioning twice adds the key once; without the private key it still installs it', async (t) => {
  const sshd = await host(t);
  const { request } = requestFor(machineFor(sshd), { withPrivateKey: false });
  await provisioner.provision(request, recorder().report, signal());
  await provisioner.provision(request, recorder().report, signal());
  t.is(linesTagged(await readFile(sshd.authorizedKeysFile, 'utf8'), request.reservationId).length, 1);
});

test('release removes that reservation’s line and any line Paddock did not write (with an alert); another reservation’s key and the admin’s file stay', async (t) => {
  const sshd = await host(t);
  const machine = machineFor(sshd);
  const first = requestFor(machine);
  const second = requestFor(machine);
  await provisioner.provision(first.request, recorder().report, signal());
  await provisioner.provision(second.request, recorder().report, signal());
  t.deepEqual(await provisioner.owned(machine), [first.request.reservationId, second.request.reservationId].sort());
  // Lines Paddock never writes: a hand-added key, and a forced command on a tagged key.
  const handAdded = generateKeyPair('someone@laptop');
  const forced = `command="nc -l 4444" ${keyOf(generateKeyPair('x').publicKey)} paddock:${second.request.reservationId}`;
  await writeFile(sshd.authorizedKeysFile, `${await readFile(sshd.authorizedKeysFile, 'utf8')}${handAdded.publicKey}\n# a comment\n${forced}\n`);
  const adminFile = await readFile(sshd.adminAuthorizedKeysFile, 'utf8');
  const knownHosts = knownHostsLine(sshd.host, sshd.port, sshd.hostKey);
  const login = (privateKey: string) => runSsh(sshd, { privateKey, knownHosts, user: sshd.tenant, command: 'true' });
  t.is((await login(handAdded.privateKey)).code, 0, 'the planted key worked before the release');

  logs.length = 0;
  await provisioner.release(first.request);
  const after = await readFile(sshd.authorizedKeysFile, 'utf8');
  t.deepEqual(after.split('\n').filter(Boolean), linesTagged(after, second.request.reservationId), 'only the other reservation’s line is left');
  t.is(linesTagged(after, second.request.reservationId).length, 1);
  t.false(after.includes('command='));
  t.is(await readFile(sshd.adminAuthorizedKeysFile, 'utf8'), adminFile);
  t.true(
    logs.some((line) => /^ALERT static-\d+ .*removed 2 line\(s\) Paddock did not write/.test(line) && line.includes('command="nc -l 4444"')),
    logs.join('\n'),
  );
  t.true(
    logs.some((line) => line.includes('1 other reservation key(s) present')),
    'the tenant’s processes were left to the other reservation',
  );
  t.is((await stat(sshd.authorizedKeysFile)).mode & 0o777, 0o644, 'the file keeps its mode');
  t.deepEqual(await provisioner.owned(machine), [second.request.reservationId]);

  t.not((await login(first.keys.privateKey)).code, 0, 'the released key no longer logs in');
  t.not((await login(handAdded.privateKey)).code, 0, 'nor does the planted one');
  t.is((await login(second.keys.privateKey)).code, 0, 'the other reservation’s still does');

  await t.notThrowsAsync(provisioner.release(first.request), 'releasing twice is fine');
  await provisioner.release({ ...second.request, publicKey: '' }); // the leak sweep knows only the id
  t.deepEqual(await provisioner.owned(machine), []);
  t.is(await readFile(sshd.authorizedKeysFile, 'utf8'), '');
});

test('release of a reservation never provisioned, or with no file at all, succeeds', async (t) => {
  const sshd = await host(t);
  const missing = path.join(sshd.dir, 'nowhere', 'authorized_keys');
  const machine = machineFor(sshd, { authorizedKeys: missing });
  const { request } = requestFor(machine);
  await t.notThrowsAsync(provisioner.release(request));
  t.deepEqual(await provisioner.owned(machine), []);
});

test('a missing file is created root’s and readable; odd paths are quoted; %u is the tenant', async (t) => {
  const sshd = await host(t);
  const { client } = await sshConnect({ host: sshd.host, port: sshd.port, user: sshd.user, privateKey: sshd.adminKey.privateKey, timeoutMs: 5000 });
  t.teardown(() => client.end());
  const key = generateKeyPair('k').publicKey;
  const tenant = { user: sshd.tenant, file: path.join(sshd.dir, "it's a $(touch pwned) dir", 'keys') };
  await addReservationKey(client, tenant, 'r-odd', key, new Date(Date.now() + 60_000));
  t.is(linesTagged(await readFile(tenant.file, 'utf8'), 'r-odd').length, 1);
  t.is((await stat(tenant.file)).mode & 0o777, 0o644);
  t.is((await stat(path.dirname(tenant.file))).mode & 0o777, 0o755);
  await t.throwsAsync(stat(path.join(sshd.dir, 'pwned')), undefined, 'nothing in the path ran');
  t.deepEqual(await listReservations(client, tenant.file), ['r-odd']);

  const perUser = machineFor(sshd, { authorizedKeys: path.join(sshd.dir, 'per-user', '%u') });
  const { request } = requestFor(perUser, { withPrivateKey: false });
  await provisioner.provision(request, recorder().report, signal());
  t.is(linesTagged(await readFile(path.join(sshd.dir, 'per-user', sshd.tenant), 'utf8'), request.reservationId).length, 1);
});

test('a key file the tenant could change is refused before any key goes in: her folder, a group-writable folder, her file', async (t) => {
  const sshd = await host(t);
  const hers = path.join(sshd.tenantHome, 'keys');
  const groupWritable = path.join(sshd.dir, 'shared');
  await mkdir(groupWritable);
  await chmod(groupWritable, 0o775); // not through mkdir: the umask would take the bit away
  const ownedFile = path.join(sshd.dir, 'owned-by-her');
  await writeFile(ownedFile, '', { mode: 0o644 });
  const uid = (await stat(sshd.tenantHome)).uid;
  await chown(ownedFile, uid, uid);
  for (const [file, why] of [
    [hers, /owner uid/],
    [path.join(groupWritable, 'keys'), /mode 775/],
    [ownedFile, /owner uid/],
  ] as const) {
    const { request } = requestFor(machineFor(sshd, { authorizedKeys: file }));
    const error = await t.throwsAsync(provisioner.provision(request, recorder().report, signal()), { instanceOf: ProvisionError });
    t.is(error?.fault, 'infrastructure');
    t.is(error?.stage, 'sshReady');
    t.regex(error?.message ?? '', /could rewrite her own keys/);
    t.regex(error?.message ?? '', why);
    t.false((await readFile(file, 'utf8').catch(() => '')).includes('paddock:'), `no key went into ${file}`);
  }
});

test('a file without a final newline keeps its last line intact', async (t) => {
  const sshd = await host(t);
  const { request: earlier } = requestFor(machineFor(sshd), { withPrivateKey: false });
  await provisioner.provision(earlier, recorder().report, signal());
  const first = (await readFile(sshd.authorizedKeysFile, 'utf8')).trimEnd();
  await writeFile(sshd.authorizedKeysFile, first); // no trailing newline
  const { request } = requestFor(machineFor(sshd));
  await provisioner.provision(request, recorder().report, signal());
  const lines = (await readFile(sshd.authorizedKeysFile, 'utf8')).split('\n');
  t.is(lines[0], first);
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

test('a wrong admin key, a closed port, an unreadable key file, a wrong pinned host key or an admin that is not root are the infrastructure’s fault', async (t) => {
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

  // An admin login that is not root cannot keep the file out of the tenant's reach: refused.
  const tenantKeyPath = path.join(sshd.dir, 'tenant_admin_key');
  const tenantAdmin = generateKeyPair('tenant-as-admin');
  await writeFile(tenantKeyPath, tenantAdmin.privateKey, { mode: 0o600 });
  await writeFile(sshd.authorizedKeysFile, `${tenantAdmin.publicKey}\n`);
  const other = await startSshd();
  t.teardown(() => other.stop());
  const notRoot = machineFor(sshd, { adminUser: sshd.tenant, user: other.tenant, adminKey: tenantKeyPath, authorizedKeys: path.join(sshd.dir, 'k') });
  const refusedAdmin = await t.throwsAsync(provisioner.provision(requestFor(notRoot).request, recorder().report, signal()), { instanceOf: ProvisionError });
  t.regex(refusedAdmin?.message ?? '', /the admin login is not root/);

  const closed = await startSshd();
  const closedMachine = machineFor(closed);
  await closed.stop();
  await writeFile(strangerPath, closed.adminKey.privateKey, { mode: 0o600 });
  const refused = await t.throwsAsync(
    provisioner.provision(
      requestFor({ ...closedMachine, settings: { ...closedMachine.settings, adminKey: strangerPath } }).request,
      recorder().report,
      signal(),
    ),
    {
      instanceOf: ProvisionError,
    },
  );
  t.is(refused?.fault, 'infrastructure');
  t.regex(refused?.message ?? '', /ECONNREFUSED/);
  assertNoKeyMaterial(t, refused?.message ?? '', closed.adminKey.privateKey);
});

test('the settings schema applies defaults and rejects unknown keys, bad values, a root or admin tenant and a key file by ~', (t) => {
  t.deepEqual(staticSettingsSchema.parse({ address: 'lab-1', user: 'ci', adminKey: '/etc/paddock/key' }), {
    address: 'lab-1',
    port: 22,
    user: 'ci',
    adminUser: 'root',
    adminKey: '/etc/paddock/key',
    authorizedKeys: '/etc/ssh/authorized_keys/%u',
    connectTimeout: 10,
  });
  const base = { address: 'a', user: 'ci', adminKey: '/k' };
  const problems = (settings: object) => {
    const parsed = staticSettingsSchema.safeParse(settings);
    return parsed.success ? 'accepted' : JSON.stringify(parsed.error.issues);
  };
  t.regex(problems({ ...base, adminKee: '/k' }), /adminKee/);
  t.regex(problems({ address: 'a', adminKey: '/k' }), /"user"/, 'the tenant login is required');
  t.regex(problems({ ...base, user: 'root' }), /root cannot be a reservation login/);
  t.regex(problems({ ...base, adminUser: 'ci' }), /must be another account than adminUser/);
  t.regex(problems({ ...base, authorizedKeys: '~/.ssh/authorized_keys' }), /absolute path/);
  t.regex(problems({ ...base, authorizedKeys: 'keys/%u' }), /absolute path/);
  t.not(problems({ ...base, port: 70000 }), 'accepted');
  t.not(problems({ ...base, hostKey: 'not a key' }), 'accepted');
});

test('the registry knows static and names the known kinds for an unknown one', (t) => {
  t.is(getKind('static'), staticKind);
  t.is(machineKinds.static.kind, 'static');
  t.throws(() => getKind('qemu-nope'), { message: /unknown machine kind "qemu-nope".*static/ });
  t.throws(() => getKind('toString'), { message: /unknown machine kind/ });
});

test('a provisioner made from the descriptor loads the static provisioner on its first call', async (t) => {
  const provisioner = createProvisioner(staticKind, testKindContext(t.title));
  const machine = {
    name: 'nokey',
    kind: 'static',
    labels: {},
    capacities: {},
    settings: staticSettingsSchema.parse({ address: '127.0.0.1', user: 'ci', adminKey: '/nonexistent/key' }),
  };
  const error = await t.throwsAsync(provisioner.owned(machine), { instanceOf: ProvisionError });
  t.regex(error.message, /^nokey: cannot read the admin key \/nonexistent\/key \(ENOENT\)/);
  await provisioner.close?.();
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
  t.regex(
    configProblems(`machines:${staticEntry('a', 'address: Build.lab, user: ci')}${staticEntry('b', 'address: build.LAB, user: ci')}\n`),
    /machines\[1\]\.settings: b is ci@build\.lab:22, the same as a/,
  );

  // Two logins whose keys would go to one file share it all the same.
  const oneFile = 'authorizedKeys: /etc/paddock/keys';
  t.regex(
    configProblems(`machines:${staticEntry('c', `address: h, user: ci, ${oneFile}`)}${staticEntry('d', `address: h, user: ci2, ${oneFile}`)}\n`),
    /line 7: machines\[1\]\.settings: d is the key file \/etc\/paddock\/keys on h:22, the same as c/,
  );

  const distinct = parseConfig(
    `machines:${first}${staticEntry('build-2', 'address: 10.0.0.5, user: ci2')}${staticEntry('build-3', 'address: 10.0.0.5, port: 2222, user: ci')}\n`,
  );
  t.deepEqual(
    distinct.machines.map((machine) => machine.name),
    ['build-1', 'build-2', 'build-3'],
  );
});
