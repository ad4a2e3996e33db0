// Member arguments of `paddock reserve`, member targets, and the `--` of `paddock ssh`: roles,
// counts, specs with spaces and `=` inside, errors.
import test from 'ava';
import { membersFromArguments, MemberSyntaxError, parseMemberArgument, parseMemberTarget, splitRemoteCommand } from '../../client/members.js';

test('ROLE=SPEC and ROLE:COUNT=SPEC, split at the first =', (t) => {
  t.deepEqual(parseMemberArgument('build=x86'), { role: 'build', spec: 'x86', count: 1 });
  t.deepEqual(parseMemberArgument('test:3=arch=armv7 ram>=1GiB'), { role: 'test', spec: 'arch=armv7 ram>=1GiB', count: 3 });
  t.deepEqual(parseMemberArgument('db-1=type=x86|arm64'), { role: 'db-1', spec: 'type=x86|arm64', count: 1 });
  t.deepEqual(parseMemberArgument('b_2:12=  cpus>=2   !flaky '), { role: 'b_2', spec: 'cpus>=2   !flaky', count: 12 }, 'outer spaces go, inner ones stay');
  t.deepEqual(parseMemberArgument('x=a!=b'), { role: 'x', spec: 'a!=b', count: 1 });
});

test('malformed members say what is expected', (t) => {
  for (const bad of [
    'build',
    '=x86',
    'build:=x86',
    'build:0=x86',
    '3build=x86',
    'build=',
    'build=   ',
    'build:two=x86',
    'bu ild=x86',
    'build:-1=x86',
    'build:99999999999999999999=x',
  ]) {
    const error = t.throws(() => parseMemberArgument(bad), { instanceOf: MemberSyntaxError }, bad);
    t.is(error?.code, 'usage');
    t.true(error?.message.includes(bad), `the message quotes the argument: ${bad}`);
  }
  t.throws(() => parseMemberArgument('build'), { message: /ROLE\[:COUNT\]=SPEC/ });
  t.throws(() => parseMemberArgument('build:0=x86'), { message: /at least 1/ });
  t.throws(() => parseMemberArgument('build='), { message: /spec after = is empty/ });
});

test('a positional spec is role main and comes first; -n counts it; an image applies to all', (t) => {
  t.deepEqual(membersFromArguments('panda', 2, ['build=x86']), [
    { role: 'main', spec: 'panda', count: 2 },
    { role: 'build', spec: 'x86', count: 1 },
  ]);
  t.deepEqual(membersFromArguments('arch=armv7 ram>=1GiB', undefined, []), [{ role: 'main', spec: 'arch=armv7 ram>=1GiB', count: 1 }]);
  t.deepEqual(membersFromArguments(undefined, undefined, ['a=x', 'b:2=y z'], 'img'), [
    { role: 'a', spec: 'x', count: 1, image: 'img' },
    { role: 'b', spec: 'y z', count: 2, image: 'img' },
  ]);
});

test('--image ROLE=IMAGE per role; a bare image is for the members without one of their own', (t) => {
  const gang = ['build=arch=x86_64', 'test:3=type=board'];
  t.deepEqual(membersFromArguments(undefined, undefined, gang, ['build=x86:ci-12', 'test=arm:ci-12']), [
    { role: 'build', spec: 'arch=x86_64', count: 1, image: 'x86:ci-12' },
    { role: 'test', spec: 'type=board', count: 3, image: 'arm:ci-12' },
  ]);
  t.deepEqual(membersFromArguments(undefined, undefined, gang, ['test=arm:1', 'base:2']), [
    { role: 'build', spec: 'arch=x86_64', count: 1, image: 'base:2' },
    { role: 'test', spec: 'type=board', count: 3, image: 'arm:1' },
  ]);
  t.deepEqual(membersFromArguments(undefined, undefined, gang, ['test=arm:1']), [
    { role: 'build', spec: 'arch=x86_64', count: 1 },
    { role: 'test', spec: 'type=board', count: 3, image: 'arm:1' },
  ]);
  const refused: [string[], RegExp][] = [
    [['deploy=x:1'], /no member has role "deploy" \(the roles are build, test\)/],
    [['a:1', 'b:1'], /given twice for every member/],
    [['test=a:1', 'test=b:1'], /given twice for role test/],
    [['test='], /image name is empty/],
    [[''], /image name is empty/],
  ];
  for (const [images, message] of refused) {
    t.throws(() => membersFromArguments(undefined, undefined, gang, images), { instanceOf: MemberSyntaxError, message }, images.join(' '));
  }
});

test('roles cannot repeat, something must be asked for, and -n needs a positional spec', (t) => {
  t.throws(() => membersFromArguments(undefined, undefined, ['a=x', 'a:2=y']), { instanceOf: MemberSyntaxError, message: /role a is given twice/ });
  t.throws(() => membersFromArguments('x', undefined, ['main=y']), { message: /role main is given twice/ });
  t.throws(() => membersFromArguments(undefined, undefined, []), { message: /nothing to reserve/ });
  t.throws(() => membersFromArguments(undefined, 2, ['a=x']), { message: /positional SPEC/ });
  t.throws(() => membersFromArguments('x', 0, []), { message: /at least 1/ });
  t.throws(() => membersFromArguments('  ', undefined, []), { message: /SPEC is empty/ });
});

test('member targets: role, role.N, role[N]', (t) => {
  t.deepEqual(parseMemberTarget('build'), { role: 'build', index: 0 });
  t.deepEqual(parseMemberTarget('test.2'), { role: 'test', index: 2 });
  t.deepEqual(parseMemberTarget('test[10]'), { role: 'test', index: 10 });
  for (const bad of ['', 'test.', 'test[1', 'test[-1]', 'test.x', '1test', 'a b']) {
    t.throws(() => parseMemberTarget(bad), { instanceOf: MemberSyntaxError, message: /ROLE, ROLE\.N or ROLE\[N\]/ }, JSON.stringify(bad));
  }
});

test('ssh and run: everything after the first -- is the command, verbatim', (t) => {
  t.deepEqual(splitRemoteCommand(['ssh', 'r-1', '--', 'uname', '-a']), { args: ['ssh', 'r-1'], command: ['uname', '-a'] });
  t.deepEqual(splitRemoteCommand(['ssh', 'r-1', 'test.1', '--', 'sh', '-c', 'a -- b']), { args: ['ssh', 'r-1', 'test.1'], command: ['sh', '-c', 'a -- b'] });
  t.deepEqual(splitRemoteCommand(['ssh', 'r-1']), { args: ['ssh', 'r-1'], command: [] });
  t.deepEqual(splitRemoteCommand(['ssh', 'r-1', '--']), { args: ['ssh', 'r-1'], command: [] });
  t.deepEqual(splitRemoteCommand(['run', '-m', 'a=x', '--', 'make', '--', 'check']), { args: ['run', '-m', 'a=x'], command: ['make', '--', 'check'] });
  t.deepEqual(splitRemoteCommand(['reserve', '--', '-weird']), { args: ['reserve', '--', '-weird'], command: [] }, 'other commands are left alone');
});
