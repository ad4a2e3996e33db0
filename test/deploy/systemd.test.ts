// The example systemd units (deploy/systemd/): systemd-analyze verify accepts each without a word
// (an unknown key or a bad value is only a warning to it, so a warning fails here), their exposure
// (systemd-analyze security --offline) stays at what their hardening gives, each ExecStart is a
// command line this Paddock takes, and each capability bounding set is enough: the runner host's
// isolation check and the agent's TFTP server pass under exactly that set with no_new_privs, and
// fail without the capability they need. No systemd runs here: the units' sandboxing (namespaces,
// read-only paths, device policy) is not exercised, only checked.
import { execFile, spawn } from 'node:child_process';
import { chmodSync, cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import test from 'ava';

const run = promisify(execFile);
const units = path.resolve(import.meta.dirname, '../../deploy/systemd');
const bin = path.resolve(import.meta.dirname, '../../bin/paddock.js');
const names = ['paddock-serve.service', 'paddock-agent.service', 'paddock-runner.service'];

/** The unit's settings, by key (a key given twice keeps both values). */
function settings(unit: string): Map<string, string[]> {
  const found = new Map<string, string[]>();
  for (const line of readFileSync(path.join(units, unit), 'utf8').split('\n')) {
    const match = /^([A-Za-z]+)=(.*)$/.exec(line);
    if (match) found.set(match[1], [...(found.get(match[1]) ?? []), match[2]]);
  }
  return found;
}
const one = (unit: string, key: string) => settings(unit).get(key)?.at(-1);

/**
 * A root for systemd-analyze: the system's own units (targets the units name), the units, and an
 * executable where their ExecStart and ExecReload point, so that only the units are judged.
 */
function analyzeRoot(): string {
  const root = mkdtempSync(path.join(os.tmpdir(), 'paddock-systemd-'));
  const systemUnits = ['/usr/lib/systemd/system', '/lib/systemd/system'].find((dir) => existsSync(dir))!;
  mkdirSync(path.join(root, 'usr/lib/systemd'), { recursive: true });
  cpSync(systemUnits, path.join(root, 'usr/lib/systemd/system'), { recursive: true, dereference: false, verbatimSymlinks: true });
  mkdirSync(path.join(root, 'etc/systemd/system'), { recursive: true });
  for (const name of names) cpSync(path.join(units, name), path.join(root, 'etc/systemd/system', name));
  mkdirSync(path.join(root, 'usr/local/bin'), { recursive: true });
  mkdirSync(path.join(root, 'usr/bin'), { recursive: true });
  symlinkSync('usr/bin', path.join(root, 'bin'));
  for (const file of ['usr/local/bin/paddock', 'usr/bin/kill']) {
    writeFileSync(path.join(root, file), '#!/bin/sh\n');
    chmodSync(path.join(root, file), 0o755);
  }
  return root;
}

test('systemd-analyze verify accepts every unit without a warning', async (t) => {
  const root = analyzeRoot();
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  for (const name of names) {
    const { stdout, stderr } = await run('systemd-analyze', ['verify', '--man=no', `--root=${root}`, name]);
    t.is(`${stdout}${stderr}`, '', name);
  }
  // The check itself catches a mistake: a misspelt key and a bad value.
  writeFileSync(
    path.join(root, 'etc/systemd/system/bad.service'),
    '[Service]\nExecStart=/usr/local/bin/paddock serve\nProtectSystem=sometimes\nNoNewPrivilege=yes\n',
  );
  const { stderr } = await run('systemd-analyze', ['verify', '--man=no', `--root=${root}`, 'bad.service']);
  t.regex(stderr, /Failed to parse protect system value/);
  t.regex(stderr, /Unknown key 'NoNewPrivilege'/);
});

test('their exposure stays at what their hardening gives', async (t) => {
  const root = analyzeRoot();
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  // The API is an unprivileged Node process; the agent and the runner host run as root (see their units).
  const most: Record<string, number> = { 'paddock-serve.service': 2, 'paddock-agent.service': 4, 'paddock-runner.service': 4.5 };
  for (const name of names) {
    const { stdout } = await run('systemd-analyze', ['security', '--offline=true', `--root=${root}`, '--no-pager', name]);
    const exposure = Number(/Overall exposure level for \S+: ([\d.]+)/.exec(stdout)?.[1]);
    t.true(exposure <= most[name], `${name}: exposure ${exposure}, at most ${most[name]}`);
  }
});

test('each unit runs what it should, with the hardening that fits it', async (t) => {
  for (const name of names) {
    t.is(one(name, 'NoNewPrivileges'), 'yes', name);
    t.is(one(name, 'ProtectSystem'), 'strict', name);
    t.is(one(name, 'PrivateTmp'), 'yes', name);
    t.true(one(name, 'ExecStart')!.startsWith('/usr/local/bin/paddock '), name);
  }
  // The API: its own user, no capability, a config checked at start (2) and a downgrade (3) are not retried; reload is SIGHUP.
  t.is(one('paddock-serve.service', 'User'), 'paddock');
  t.is(one('paddock-serve.service', 'CapabilityBoundingSet'), '');
  t.is(one('paddock-serve.service', 'PrivateDevices'), 'yes');
  t.is(one('paddock-serve.service', 'RestartPreventExitStatus'), '2 3');
  t.is(one('paddock-serve.service', 'ExecReload'), '/bin/kill -HUP $MAINPID');
  t.is(one('paddock-serve.service', 'StateDirectory'), 'paddock');
  // The agent: root, /dev/kvm and serial lines only, and its VMs and TFTP server outlive a restart.
  t.is(one('paddock-agent.service', 'User'), undefined);
  t.is(one('paddock-agent.service', 'DevicePolicy'), 'closed');
  t.deepEqual(settings('paddock-agent.service').get('DeviceAllow'), ['/dev/kvm rw', 'char-ttyUSB rw', 'char-ttyACM rw', 'char-ttyS rw']);
  t.is(one('paddock-agent.service', 'KillMode'), 'process');
  // The runner host: root, and the namespaces its runs need and no other.
  t.is(one('paddock-runner.service', 'RestrictNamespaces'), 'pid ipc mnt');
  t.is(one('paddock-runner.service', 'StateDirectoryMode'), '0711');
  t.is(one('paddock-runner.service', 'RuntimeDirectory'), 'paddock-runner');

  // Every option of every ExecStart is one its command takes.
  for (const name of names) {
    const words = one(name, 'ExecStart')!.split(/\s+/).slice(1);
    const { stdout } = await run(process.execPath, [bin, words[0], '--help']);
    for (const option of words.filter((word) => word.startsWith('--'))) t.true(stdout.includes(option), `${name}: paddock ${words[0]} ${option}`);
  }
});

/** The capability bounding set of a unit, as setpriv takes it: `-all,+sys_admin,…`. */
const boundingSet = (name: string) =>
  `-all,${one(name, 'CapabilityBoundingSet')!
    .split(/\s+/)
    .map((capability) => `+${capability.replace(/^CAP_/, '').toLowerCase()}`)
    .join(',')}`;

/** Runs a command under a capability bounding set and no_new_privs, as the unit's process would start; never throws. */
function capped(set: string, command: string[], env: NodeJS.ProcessEnv = process.env): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    execFile('setpriv', ['--no-new-privs', `--bounding-set=${set}`, '--', ...command], { env, timeout: 120_000 }, (error, stdout, stderr) =>
      resolve({ code: error ? ((error as { code?: number }).code ?? null) : 0, output: `${stdout}${stderr}` }),
    );
  });
}

test("the runner host's capabilities are enough to isolate runs, and SYS_ADMIN is needed", async (t) => {
  t.timeout(300_000);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'paddock-systemd-runner-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  chmodSync(dir, 0o755);
  writeFileSync(path.join(dir, 'token'), 'pdk_not-a-token\n', { mode: 0o600 });
  // It checks isolation (a test script as a run user in namespaces of its own) before it calls the API, which is not there.
  const env: NodeJS.ProcessEnv = { ...process.env, PADDOCK_URL: 'http://127.0.0.1:1' };
  delete env.PADDOCK_TOKEN;
  const start = (set: string, work: string) =>
    capped(
      set,
      [process.execPath, bin, 'runner', '--token-file', path.join(dir, 'token'), '--work', path.join(dir, work), '--slots', '1', '--run-uids', '61950-61959'],
      env,
    );
  const enough = await start(boundingSet('paddock-runner.service'), 'a');
  t.regex(enough.output, /cannot reach Paddock at http:\/\/127\.0\.0\.1:1/, 'isolation checked, then the API asked');
  const without = await start(boundingSet('paddock-runner.service').replace(',+sys_admin', ''), 'b');
  t.regex(without.output, /runs cannot be isolated/);
});

test("the agent's capabilities are enough for the TFTP server it starts, and SYS_CHROOT is needed", async (t) => {
  if (!existsSync('/usr/sbin/in.tftpd')) return t.fail('tftpd-hpa is not installed (bash scripts/setup.sh)');
  const root = mkdtempSync(path.join(os.tmpdir(), 'paddock-systemd-tftp-'));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  chmodSync(root, 0o755);
  writeFileSync(path.join(root, 'kernel'), 'a kernel\n');
  // Port 69 (a privileged port) on a loopback address of its own, as boards/boot/tftpd.ts starts it.
  const serve = async (set: string) => {
    const address = `127.${1 + Math.floor(Math.random() * 250)}.${Math.floor(Math.random() * 250)}.${2 + Math.floor(Math.random() * 250)}`;
    const server = spawn(
      'setpriv',
      ['--no-new-privs', `--bounding-set=${set}`, '--', '/usr/sbin/in.tftpd', '--foreground', '--secure', '--user', 'root', '--address', `${address}:69`, root],
      {
        stdio: 'ignore',
      },
    );
    try {
      await new Promise((resolve) => setTimeout(resolve, 500));
      return await run('curl', ['-s', '-m', '5', `tftp://${address}/kernel`]).then(
        ({ stdout }) => stdout,
        () => undefined,
      );
    } finally {
      server.kill();
    }
  };
  t.is(await serve(boundingSet('paddock-agent.service')), 'a kernel\n');
  t.is(await serve(boundingSet('paddock-agent.service').replace(',+sys_chroot', '')), undefined);
});
