// Member arguments of `paddock reserve`: roles, counts, specs with spaces and `=` inside, errors.
import test from 'ava';
import { membersFromArguments, MemberSyntaxError, parseMemberArgument } from '../../client/cli-members.js';

test('ROLE=SPEC and ROLE:COUNT=SPEC, split at the first =', (t) => {
  t.deepEqual(parseMemberArgument('build=x86'), { role: 'build', spec: 'x86', count: 1 });
  t.deepEqual(parseMemberArgument('test:3=arch=armv7 ram>=1GiB'), { role: 'test', spec: 'arch=armv7 ram>=1GiB', count: 3 });
  t.deepEqual(parseMemberArgument('db-1=type=x86|arm64'), { role: 'db-1', spec: 'type=x86|arm64', count: 1 });
});

test('malformed members say what is expected', (t) => {
  for (const bad of ['build', '=x86', 'build:=x86', 'build:0=x86', '3build=x86', 'build=', 'build:two=x86']) {
    t.throws(() => parseMemberArgument(bad), { instanceOf: MemberSyntaxError }, bad);
  }
  t.throws(() => parseMemberArgument('build'), { message: /ROLE\[:COUNT\]=SPEC/ });
});

test('a positional spec is role main; roles cannot repeat; an image applies to all', (t) => {
  t.deepEqual(membersFromArguments('panda', 2, ['build=x86']), [
    { role: 'main', spec: 'panda', count: 2 },
    { role: 'build', spec: 'x86', count: 1 },
  ]);
  t.deepEqual(membersFromArguments(undefined, undefined, ['a=x'], 'img'), [{ role: 'a', spec: 'x', count: 1, image: 'img' }]);
  t.throws(() => membersFromArguments(undefined, undefined, ['a=x', 'a:2=y']), { message: /twice/ });
  t.throws(() => membersFromArguments(undefined, undefined, []), { message: /nothing to reserve/ });
  t.throws(() => membersFromArguments(undefined, 2, ['a=x']), { message: /positional SPEC/ });
});
