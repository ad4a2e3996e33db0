// A hostile tenant on a static host, through the real API, agent and sshd: logged in with her
// reservation's key over the real OpenSSH client, she tries to keep access after her release (a key
// of her own, a replaced key file, a forced command on Paddock's admin key, processes that detach);
// after the release nothing of it is left, the admin login still works, and the next user's
// reservation of the same host is fine. And the leak sweep never touches a live reservation.
import { execFile } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import test from 'ava';
import type { ExecutionContext } from 'ava';
import type { ReservationView } from '../../protocol/api.js';
import { generateKeyPair, knownHostsLine } from '../../protocol/ssh.js';
import { taggedKeyLine } from '../../provisioners/static/adapter.js';
import { startApi, staticMachinesYaml, testConfig, type TestApi } from '../helpers/api.js';
import { runSsh, type TestSshd } from '../helpers/sshd.js';
import { host } from '../helpers/static-host.js';

const run = promisify(execFile);

async function lab(t: ExecutionContext, extra = ''): Promise<{ sshd: TestSshd; api: TestApi; user: (name: string) => Promise<Tenant> }> {
  const sshd = await host(t);
  const api = await startApi(
    testConfig(
      `${extra}\n${staticMachinesYaml([{ name: 'shared-1', port: sshd.port, adminKeyPath: sshd.adminKey.path, authorizedKeysFile: sshd.authorizedKeysFile }])}`,
    ),
  );
  t.teardown(() => api.close());
  const user = async (name: string) => {
    const { token } = (await api.http().post('v1/tokens', { json: { name, role: 'user' } })).body as { token: string };
    return tenant(sshd, api, token);
  };
  return { sshd, api, user };
}

interface Tenant {
  reserve(): Promise<{ id: string; privateKey: string; knownHosts: string }>;
  release(id: string): Promise<ReservationView>;
  ssh(reservation: { privateKey: string; knownHosts: string }, command: string): ReturnType<typeof runSsh>;
}

function tenant(sshd: TestSshd, api: TestApi, token: string): Tenant {
  const http = api.http(token);
  const view = async (id: string, wait?: string) =>
    (await http.get(`v1/reservations/${id}`, { searchParams: wait ? { wait, timeout: 300 } : {} })).body as ReservationView;
  return {
    async reserve() {
      const created = await http.post('v1/reservations', { json: { members: [{ role: 'main', spec: 'static-host' }], lease: 600 } });
      const { id } = created.body as ReservationView;
      let ready = await view(id, 'ready');
      while (ready.state !== 'ready' && !['failed', 'expired', 'cancelled', 'released'].includes(ready.state)) ready = await view(id, 'ready');
      if (ready.state !== 'ready') throw new Error(`reservation ${id} is ${ready.state}: ${ready.reason ?? ''}`);
      const credentials = (await http.get(`v1/reservations/${id}/credentials`)).body as { privateKey: string; knownHosts: string };
      return { id, ...credentials };
    },
    async release(id: string) {
      await http.delete(`v1/reservations/${id}`);
      let released = await view(id);
      for (let polls = 0; released.state !== 'released' && polls < 600; polls++) {
        await new Promise((resolve) => setTimeout(resolve, 100));
        released = await view(id);
      }
      return released;
    },
    ssh: (reservation, command) => runSsh(sshd, { privateKey: reservation.privateKey, knownHosts: reservation.knownHosts, user: sshd.tenant, command }),
  };
}

/** The tenant's processes that still run (zombies aside), as `pid command` lines. */
async function processesOf(user: string): Promise<string[]> {
  const { stdout } = await run('ps', ['-U', user, '-u', user, '-o', 'stat=', '-o', 'pid=', '-o', 'args=']).catch((error: { stdout?: string }) => ({
    stdout: error.stdout ?? '',
  }));
  return stdout
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '' && !line.startsWith('Z'));
}

test('a hostile tenant keeps nothing after her release: no key of hers, no replaced file, no forced command on the admin key, no process; the admin and the next user are fine', async (t) => {
  const { sshd, api, user } = await lab(t);
  const alice = await user('alice');
  const bob = await user('bob');
  const adminFileBefore = await readFile(sshd.adminAuthorizedKeysFile, 'utf8');
  const mine = generateKeyPair('alice@laptop');
  const keys = sshd.authorizedKeysFile;

  const reservation = await alice.reserve();
  const attempts = {
    append: await alice.ssh(reservation, `printf '%s\\n' '${mine.publicKey}' >> ${keys}`),
    replace: await alice.ssh(reservation, `printf '%s\\n' '${mine.publicKey}' > /tmp/k-$$ && mv -f /tmp/k-$$ ${keys}`),
    remove: await alice.ssh(reservation, `rm -f ${keys} && printf '%s\\n' '${mine.publicKey}' > ${keys}`),
    forcedCommand: await alice.ssh(reservation, `sed -i '1s/^/command="touch /tmp/pwned-${sshd.port}" /' ${sshd.adminAuthorizedKeysFile}`),
    adminFile: await alice.ssh(reservation, `printf '%s\\n' '${mine.publicKey}' >> ${sshd.adminAuthorizedKeysFile}`),
  };
  for (const [what, attempt] of Object.entries(attempts)) t.not(attempt.code, 0, `${what} must fail: ${attempt.stdout}${attempt.stderr}`);
  // Her own home is hers: the write works, but sshd never reads keys from there.
  const home = await alice.ssh(reservation, `mkdir -p ~/.ssh && printf '%s\\n' '${mine.publicKey}' > ~/.ssh/authorized_keys && echo planted`);
  t.is(home.stdout.trim(), 'planted');
  // Processes that detach from her session, and one that keeps making more.
  const left = await alice.ssh(
    reservation,
    `setsid -f sleep 1001 < /dev/null > /dev/null 2>&1; nohup sleep 1002 < /dev/null > /dev/null 2>&1 &
     setsid -f sh -c 'while :; do (sleep 1003 &); sleep 0.2; done' < /dev/null > /dev/null 2>&1; echo left`,
  );
  t.is(left.stdout.trim(), 'left', left.stderr);
  const session = alice.ssh(reservation, 'sleep 600'); // a login still open at the release
  await new Promise((resolve) => setTimeout(resolve, 1000));
  t.true(
    (await processesOf(sshd.tenant)).some((line) => line.includes('sleep 1001')),
    'her processes run before the release',
  );

  const released = await alice.release(reservation.id);
  t.is(released.state, 'released', released.reason);
  t.deepEqual(await processesOf(sshd.tenant), [], 'none of her processes survives the release');
  t.not((await session).code, 0, 'her open login was ended');
  t.is(await readFile(keys, 'utf8'), '', 'her key file holds nothing');
  const knownHosts = knownHostsLine(sshd.host, sshd.port, sshd.hostKey);
  for (const privateKey of [mine.privateKey, reservation.privateKey]) {
    t.not((await runSsh(sshd, { privateKey, knownHosts, user: sshd.tenant, command: 'true' })).code, 0, 'no key of hers logs in');
    t.not((await runSsh(sshd, { privateKey, knownHosts, command: 'true' })).code, 0, 'nor as the admin');
  }
  t.is(await readFile(sshd.adminAuthorizedKeysFile, 'utf8'), adminFileBefore, 'the admin key file is untouched');
  const admin = await runSsh(sshd, { privateKey: sshd.adminKey.privateKey, knownHosts, command: 'id -u' });
  t.is(admin.stdout.trim(), '0', `the admin login still works: ${admin.stderr}`);
  t.false(
    await readFile(`/tmp/pwned-${sshd.port}`).then(
      () => true,
      () => false,
    ),
    'no forced command ran',
  );
  t.true(
    api.logs.some((line) => /ended \d+ process\(es\) of pdkt\d+ at the release/.test(line)),
    api.logs.join('\n'),
  );

  // The next user of the host finds it clean, and only her own key works.
  const next = await bob.reserve();
  const who = await bob.ssh(next, 'id -un; ps -o args= -u "$(id -u)" | grep -c "^sleep 100" || true');
  t.deepEqual(who.stdout.trim().split('\n'), [sshd.tenant, '0'], who.stderr);
  t.not((await alice.ssh(reservation, 'true')).code, 0, 'alice’s old key does not reach bob’s session');
  t.is((await bob.release(next.id)).state, 'released');
});

test('the leak sweep removes an ended reservation’s key and never a live one’s, nor its processes', async (t) => {
  const { sshd, api, user } = await lab(t, 'agent: { sweepInterval: 1s }');
  const carol = await user('carol');
  const live = await carol.reserve();
  t.is((await carol.ssh(live, 'setsid -f sleep 1004 < /dev/null > /dev/null 2>&1; echo ok')).stdout.trim(), 'ok');
  // What a crash could leave: the line of a reservation that ended, in Paddock's own shape.
  const orphan = taggedKeyLine(generateKeyPair('gone').publicKey, 'r-ended0000001', new Date(Date.now() + 3600_000));
  await writeFile(sshd.authorizedKeysFile, `${await readFile(sshd.authorizedKeysFile, 'utf8')}${orphan}\n`);

  let file = await readFile(sshd.authorizedKeysFile, 'utf8');
  for (let polls = 0; file.includes('r-ended0000001') && polls < 1200; polls++) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    file = await readFile(sshd.authorizedKeysFile, 'utf8');
  }
  t.false(file.includes('r-ended0000001'), `the orphan is swept: ${api.logs.join('\n')}`);
  t.true(file.includes(`paddock:${live.id}`), 'the live key stays');
  t.is((await carol.ssh(live, 'echo still')).stdout.trim(), 'still');
  t.true(
    (await processesOf(sshd.tenant)).some((line) => line.includes('sleep 1004')),
    'the live reservation’s processes run on',
  );
  t.true(
    api.logs.some((line) => line.includes('other reservation key(s) present at the release of r-ended0000001')),
    api.logs.join('\n'),
  );
  t.is((await carol.release(live.id)).state, 'released');
  t.deepEqual(await processesOf(sshd.tenant), []);
});
