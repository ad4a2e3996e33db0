// The `paddock` command against a real API and real sshd hosts, run as a user would run it.
import { execFile } from 'node:child_process';
import path from 'node:path';
import test from 'ava';
import { startApi, staticHostOn, staticMachinesYaml, testConfig, type TestApi } from '../helpers/api.js';
import { startSshd, type TestSshd } from '../helpers/sshd.js';

let api: TestApi;
let hosts: TestSshd[];
let userToken: string;

const bin = path.resolve('bin/paddock.js');

function paddock(args: string[], token: string | null = userToken): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const env: NodeJS.ProcessEnv = { ...process.env, PADDOCK_URL: api.url };
    if (token === null) delete env.PADDOCK_TOKEN;
    else env.PADDOCK_TOKEN = token;
    execFile(process.execPath, [bin, ...args], { env, timeout: 300_000 }, (error, stdout, stderr) => {
      resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

test.before(async () => {
  hosts = await Promise.all([startSshd(), startSshd()]);
  api = await startApi(
    testConfig(
      staticMachinesYaml(
        hosts.map((host, index) => staticHostOn(host, `host-${index + 1}`, { type: 'static-host', arch: 'x86_64', role: index === 0 ? 'builder' : 'tester' })),
      ),
    ),
  );
  const created = await paddock(['token', 'create', 'carol', '--json'], api.adminToken);
  if (created.code !== 0) throw new Error(`token create failed: ${created.stderr}`);
  userToken = (JSON.parse(created.stdout) as { token: string }).token;
});

test.after.always(async () => {
  await api?.close();
  await Promise.all((hosts ?? []).map((host) => host.stop()));
});

test.serial('reserve a gang with --wait --json, ssh into a member, list, show, release', async (t) => {
  const reserved = await paddock(['reserve', '-m', 'build=role=builder', '-m', 'test:1=arch=x86_64 role=tester', '--lease', '5m', '--wait', '--json']);
  t.is(reserved.code, 0, reserved.stderr);
  const summary = JSON.parse(reserved.stdout) as {
    id: string;
    state: string;
    members: { role: string; machine: string; host: string; port: number; user: string; hostKey: string }[];
  };
  t.is(summary.state, 'ready');
  t.deepEqual(
    summary.members.map((member) => [member.role, member.machine]),
    [
      ['build', 'host-1'],
      ['test', 'host-2'],
    ],
  );
  t.is(summary.members[1].hostKey, hosts[1].hostKey);
  t.is(summary.members[0].port, hosts[0].port);
  t.regex(reserved.stderr, /sshReady/, '--wait shows progress on stderr');

  const ssh = await paddock(['ssh', summary.id, 'test', '--', 'echo', 'hello-from-test']);
  t.is(ssh.code, 0, ssh.stderr);
  t.is(ssh.stdout.trim(), 'hello-from-test');
  const failing = await paddock(['ssh', summary.id, 'build.0', '--', 'exit 7']);
  t.is(failing.code, 7, 'the remote exit code comes through');

  const listed = await paddock(['ls', '--json']);
  t.deepEqual(
    (JSON.parse(listed.stdout) as { id: string }[]).map((entry) => entry.id),
    [summary.id],
  );
  const shown = await paddock(['show', summary.id]);
  t.regex(shown.stdout, new RegExp(`${summary.id}\\s+ready`));
  t.regex(shown.stdout, /build\.0 host-1 ready/);

  const released = await paddock(['release', summary.id]);
  t.is(released.code, 0);
  t.regex(released.stdout, new RegExp(`${summary.id}: (releasing|released)`));
  const again = await paddock(['release', summary.id]);
  t.is(again.code, 0, 'release is idempotent');
});

test.serial('explain, machines and maintenance', async (t) => {
  const explained = await paddock(['explain', 'role=builder', '--json']);
  const explanation = JSON.parse(explained.stdout) as { matches: string[]; rejected: { machine: string; term: string }[] };
  t.deepEqual(explanation.matches, ['host-1']);
  t.deepEqual(
    explanation.rejected.map((entry) => [entry.machine, entry.term]),
    [['host-2', 'role=builder']],
  );
  const denied = await paddock(['machines', 'maintenance', 'host-2']);
  t.is(denied.code, 1);
  t.regex(denied.stderr, /\(forbidden\)/);
  const maintenance = await paddock(['machines', 'maintenance', 'host-2', '--reason', 'cable'], api.adminToken);
  t.is(maintenance.stdout.trim(), 'host-2: maintenance');
  const listing = await paddock(['machines', 'ls']);
  t.regex(listing.stdout, /host-2\s+static\s+maintenance/);
  const activated = await paddock(['machines', 'activate', 'host-2'], api.adminToken);
  t.is(activated.stdout.trim(), 'host-2: available');
});

test.serial('errors are one clear line with a stable code, and usage errors exit 2', async (t) => {
  const badSpec = await paddock(['reserve', 'arch=x86_64 ram>=lots']);
  t.is(badSpec.code, 1);
  t.regex(badSpec.stderr, /^paddock: .*position \d+.*\(invalid_spec\)\n$/);
  t.notRegex(badSpec.stderr, /\n\s+at /, 'no stack trace');
  const noMatch = await paddock(['reserve', 'arch=armv7']);
  t.regex(noMatch.stderr, /\(unsatisfiable\)/);
  const noToken = await paddock(['ls'], null);
  t.is(noToken.code, 1);
  t.regex(noToken.stderr, /PADDOCK_TOKEN/);
  const wrongToken = await paddock(['ls'], 'pdk_guessed-token-1234');
  t.regex(wrongToken.stderr, /\(unauthorized\)/);
  t.false(wrongToken.stderr.includes('guessed-token-1234'));
  const usage = await paddock(['reserve', '-m', 'oops']);
  t.is(usage.code, 2);
  const unknown = await paddock(['frobnicate']);
  t.is(unknown.code, 2);
});
