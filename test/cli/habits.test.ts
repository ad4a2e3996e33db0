// The command line's habits, tried as a newcomer would: --version, profiles from
// ~/.config/paddock/config.yaml (a token file others can read is refused, as ssh refuses a key),
// --output on listings, durations with units, usage errors that say what to do, and shell
// completion made from the command tree and run by bash itself (zsh and fish check its syntax,
// and fish completes with it).
import { execFile } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import test from 'ava';
import { parse as parseYaml } from 'yaml';
import { version } from '../../protocol/version.js';
import { startApi, testConfig, type TestApi } from '../helpers/api.js';

let api: TestApi;
let scratch: string;
let config: string;
let userToken: string;

const bin = path.resolve('bin/paddock.js');

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

/** `paddock ARGS` with only the given PADDOCK_* variables, and profiles under `config` (XDG_CONFIG_HOME). */
function paddock(args: string[], env: NodeJS.ProcessEnv = { PADDOCK_URL: api.url, PADDOCK_TOKEN: api.adminToken }): Promise<Result> {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('PADDOCK_')));
  return new Promise((resolve) => {
    execFile(process.execPath, [bin, ...args], { env: { ...clean, XDG_CONFIG_HOME: config, ...env }, timeout: 60_000 }, (error, stdout, stderr) => {
      resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

function shell(program: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<Result> {
  return new Promise((resolve) => {
    execFile(program, args, { env: { ...process.env, XDG_CONFIG_HOME: config, ...env }, timeout: 60_000 }, (error, stdout, stderr) => {
      resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

test.before(async () => {
  scratch = mkdtempSync(path.join(os.tmpdir(), 'paddock-habits-'));
  config = path.join(scratch, 'config');
  api = await startApi(testConfig('agent: { enabled: false }\nmachines: []\n'));
  const created = await paddock(['token', 'create', 'judy']);
  if (created.code !== 0) throw new Error(created.stderr);
  userToken = created.stdout.trim();
});

test.after.always(async () => {
  await api?.close();
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

test('--version prints the version', async (t) => {
  for (const flag of ['--version', '-V']) {
    const answer = await paddock([flag], {});
    t.is(answer.code, 0);
    t.is(answer.stdout, `paddock ${version}\n`);
  }
});

test.serial('profiles: named servers with a token file, chosen by --profile, PADDOCK_PROFILE or the default; the environment wins', async (t) => {
  const dir = path.join(config, 'paddock');
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, 'judy.token'), `${userToken}\n`, { mode: 0o644 });
  chmodSync(path.join(dir, 'judy.token'), 0o644);
  writeFileSync(path.join(dir, 'admin.token'), `${api.adminToken}\n`, { mode: 0o600 });
  writeFileSync(
    path.join(dir, 'config.yaml'),
    [
      'profiles:',
      `  lab: { url: ${api.url}, tokenFile: judy.token }`,
      `  ops: { url: ${api.url}, tokenFile: ${path.join(dir, 'admin.token')} }`,
      '  nowhere: { url: http://127.0.0.1:9, tokenFile: admin.token }',
      'default: lab',
      '',
    ].join('\n'),
  );

  const open = await paddock(['whoami'], {});
  t.is(open.code, 1);
  t.is(
    open.stderr,
    `paddock: profile lab: permissions 0644 for the token file ${path.join(dir, 'judy.token')} are too open: it must not be readable by group or others (chmod 600 ${path.join(dir, 'judy.token')}); the token is not used (configuration)\n`,
  );
  chmodSync(path.join(dir, 'judy.token'), 0o600);

  const byDefault = await paddock(['whoami'], {});
  t.is(byDefault.code, 0, byDefault.stderr);
  t.is(byDefault.stdout, `judy (user)\nserver ${api.url} (profile lab, from default in ${path.join(dir, 'config.yaml')})\n`);
  t.regex((await paddock(['--profile', 'ops', 'whoami'], {})).stdout, /^admin \(admin\)\nserver \S+ \(profile ops, from --profile\)/);
  t.regex((await paddock(['whoami', '--profile', 'ops'], {})).stdout, /^admin \(admin\)/, '--profile after the command too');
  t.regex((await paddock(['whoami'], { PADDOCK_PROFILE: 'ops' })).stdout, /^admin \(admin\)\nserver \S+ \(profile ops, from PADDOCK_PROFILE\)/);
  t.regex((await paddock(['whoami'], { PADDOCK_TOKEN: api.adminToken })).stdout, /^admin \(admin\)/, 'PADDOCK_TOKEN wins over the profile');
  const envUrl = await paddock(['--profile', 'nowhere', 'whoami'], { PADDOCK_URL: api.url });
  t.is(envUrl.code, 0, `PADDOCK_URL wins over the profile: ${envUrl.stderr}`);
  t.regex((await paddock(['--profile', 'nowhere', 'whoami'], {})).stderr, /cannot reach Paddock at http:\/\/127\.0\.0\.1:9/);

  const missing = await paddock(['--profile', 'nope', 'ls'], {});
  t.is(missing.code, 1);
  t.is(missing.stderr, `paddock: no profile nope (--profile) in ${path.join(dir, 'config.yaml')}; the profiles are lab, ops, nowhere (configuration)\n`);

  const listed = await paddock(['profiles', 'ls'], {});
  t.regex(listed.stdout, /^\*\s+lab \(default\)\s+http:\S+\s+\S+judy\.token$/m);
  t.regex(listed.stdout, /^\s+ops\s+http:\S+/m);
  t.is((await paddock(['profiles', 'ls', '-o', 'name'], {})).stdout, 'lab\nops\nnowhere\n');

  writeFileSync(path.join(dir, 'config.yaml'), 'profiles:\n  lab: { url: 127.0.0.1:7300, tokenfile: x }\n');
  t.regex((await paddock(['ls'], {})).stderr, /profile lab: unknown key tokenfile \(a profile has url and tokenFile\) \(configuration\)/);
  rmSync(path.join(dir, 'config.yaml'));

  const nothing = await paddock(['ls'], {});
  t.is(nothing.code, 1);
  t.is(
    nothing.stderr,
    'paddock: no Paddock server: set PADDOCK_URL (e.g. http://127.0.0.1:7300), or choose a profile with --profile NAME (paddock profiles --help) (configuration)\n',
  );
});

test('--output json|yaml|name on listings and shows; --json stays', async (t) => {
  const listed = await paddock(['machines', 'ls', '--json']);
  t.deepEqual(JSON.parse(listed.stdout), []);
  t.is((await paddock(['machines', 'ls', '-o', 'name'])).stdout, '', 'no names, no line (for xargs -r)');
  const me = parseYaml((await paddock(['whoami', '-o', 'yaml'])).stdout) as { name: string; role: string };
  t.like(me, { name: 'admin', role: 'admin' });
  t.is((await paddock(['whoami', '-o', 'name'])).stdout, 'admin\n');
  const both = await paddock(['token', 'ls', '--json', '-o', 'yaml']);
  t.is(both.code, 2);
  t.is(both.stderr, 'paddock: --json is --output json: give one of --json and --output yaml (usage)\n');
  const wrong = await paddock(['ls', '-o', 'xml']);
  t.is(wrong.stderr, 'paddock: --output: "xml" is not one of json, yaml, name (usage)\n');
});

test('durations take units everywhere, and a wrong one says what it takes', async (t) => {
  const unit = await paddock(['reserve', 'arch=x86_64', '--lease', '5x']);
  t.is(unit.code, 2);
  t.is(unit.stderr, 'paddock: --lease: "5x": unknown unit "x" (the units are ms, s, m, h and d) (usage)\n');
  const word = await paddock(['reserve', 'arch=x86_64', '--wait', '--timeout', 'soon']);
  t.is(word.stderr, 'paddock: --timeout: "soon" is not a duration: a number of seconds or a number and a unit: 30s, 5m, 2h, 30d (usage)\n');
  // Read as durations, the requests reach the server (which has no machine for them).
  for (const args of [
    ['reserve', 'arch=x86_64', '--lease', '30m', '--queue-timeout', '1h', '--wait', '--timeout', '5m'],
    ['reserve', 'arch=x86_64', '--lease', '1800', '--wait', '--timeout', '90'],
  ]) {
    const answer = await paddock(args, { PADDOCK_URL: api.url, PADDOCK_TOKEN: userToken });
    t.is(answer.code, 1, args.join(' '));
    t.regex(answer.stderr, /\(unsatisfiable\)\n$/, args.join(' '));
  }
});

test('usage errors say what is missing or wrong, on one line, with exit 2', async (t) => {
  const cases: [string[], string][] = [
    [['machines', 'show'], 'paddock: missing <name>; usage: paddock machines show [options] <name> (usage)\n'],
    [['tokn'], "paddock: there is no command 'tokn'; did you mean token? (usage)\n"],
    [['token', 'lss'], "paddock: token has no command 'lss'; did you mean ls? (usage)\n"],
    [['ls', '--jsn'], 'paddock: ls has no option --jsn; did you mean --json? (usage)\n'],
    [['ls', 'extra'], 'paddock: too many arguments (paddock ls takes none); usage: paddock ls [options] (usage)\n'],
    [['token', 'create', 'kim', '--role', 'root'], 'paddock: --role: "root" is not one of user, admin, agent, runner (usage)\n'],
    [['images', 'upload', 'disk.qcow2'], 'paddock: images upload needs --name <name>; usage: paddock images upload [options] <file> (usage)\n'],
    [['power'], 'paddock: missing <action...>; usage: paddock power [options] [ID] [MEMBER] on|off|cycle (usage)\n'],
    [['completion', 'ksh'], 'paddock: <shell>: "ksh" is not one of bash, zsh, fish (usage)\n'],
    [['reserve', 'x86', '--timeout'], 'paddock: --timeout needs a value: --timeout <duration> (usage)\n'],
  ];
  for (const [args, stderr] of cases) {
    const answer = await paddock(args);
    t.is(answer.stderr, stderr, args.join(' '));
    t.is(answer.code, 2, args.join(' '));
  }
  // A reservation is asked for before the server is: no PADDOCK_URL needed to learn that.
  const show = await paddock(['show'], { XDG_CONFIG_HOME: path.join(scratch, 'no-config') });
  t.is(show.stderr, 'paddock: which reservation? give its ID or set PADDOCK_RESERVATION (no_reservation)\n');
  const help = await paddock(['--help']);
  t.regex(help.stdout, /^Reserve and release:\n {2}reserve /m, 'the commands of a day come first');
  t.regex(help.stdout, /PADDOCK_PROFILE/);
  t.notRegex((await paddock(['reserve', '--help'])).stdout, /default: \[\]/);
});

test('completion scripts come from the command tree: bash completes with them, zsh and fish accept them', async (t) => {
  const dir = path.join(scratch, 'completion');
  const xdg = path.join(dir, 'config');
  mkdirSync(path.join(xdg, 'paddock'), { recursive: true });
  for (const name of ['bash', 'zsh', 'fish']) {
    const made = await paddock(['completion', name], {});
    t.is(made.code, 0, made.stderr);
    writeFileSync(path.join(dir, `paddock.${name}`), made.stdout);
  }
  writeFileSync(path.join(dir, 'disk.qcow2'), '');
  writeFileSync(path.join(xdg, 'paddock', 'config.yaml'), `profiles:\n  lab: { url: ${api.url} }\n  staging: { url: ${api.url} }\n`);

  // bash: the real `complete` registration and the function it names, word by word.
  const harness = `
source ${path.join(dir, 'paddock.bash')}
paddock() { ${JSON.stringify(process.execPath)} ${JSON.stringify(bin)} "$@"; }
complete -p paddock
try() { COMP_WORDS=("$@"); COMP_CWORD=$(( \${#COMP_WORDS[@]} - 1 )); COMPREPLY=(); "$(complete -p paddock | sed -E 's/.*-F ([^ ]+) .*/\\1/')"; echo "$*|\${COMPREPLY[*]}"; }
try paddock tok
try paddock token ''
try paddock token create kim --role ''
try paddock token create kim --r
try paddock ls -o ''
try paddock ls --output = y
try paddock --profile ''
try paddock whoami --profile st
try paddock completion ''
try paddock images upload ${path.join(dir, 'disk')}
try paddock images upload --name x --tag ''
try paddock machines ''
`;
  const bash = await shell('bash', ['-c', harness], { XDG_CONFIG_HOME: xdg });
  t.is(bash.code, 0, bash.stderr);
  const lines = bash.stdout.trim().split('\n');
  t.is(lines[0], 'complete -F _paddock_complete paddock');
  t.deepEqual(lines.slice(1), [
    'paddock tok|token',
    'paddock token |ls create revoke rotate',
    'paddock token create kim --role |user admin agent runner',
    'paddock token create kim --r|--role',
    'paddock ls -o |json yaml name',
    'paddock ls --output = y|yaml',
    'paddock --profile |lab staging',
    'paddock whoami --profile st|staging',
    'paddock completion |bash zsh fish',
    `paddock images upload ${path.join(dir, 'disk')}|${path.join(dir, 'disk.qcow2')}`,
    'paddock images upload --name x --tag |',
    'paddock machines |ls show maintenance activate retire',
  ]);

  const zsh = await shell('zsh', ['-n', path.join(dir, 'paddock.zsh')]);
  t.is(zsh.code, 0, zsh.stderr);
  const fishSyntax = await shell('fish', ['-n', path.join(dir, 'paddock.fish')]);
  t.is(fishSyntax.code, 0, fishSyntax.stderr);
  const fish = await shell('fish', [
    '-c',
    `source ${path.join(dir, 'paddock.fish')}
for line in 'paddock tok' 'paddock token create kim --role ' 'paddock ls -o '
  echo (string join ' ' -- (complete -C"$line" | string replace -r '\\t.*' '' | sort))
end`,
  ]);
  t.is(fish.code, 0, fish.stderr);
  t.deepEqual(fish.stdout.trim().split('\n'), ['token', 'admin agent runner user', 'json name yaml']);
});
