// How `paddock scp` reads its operands: `[ID:]MEMBER:PATH` where a colon comes before any slash,
// else a local path; a member is only ever a checked ROLE, ROLE.N or ROLE[N].
import test from 'ava';
import { MemberSyntaxError } from '../../client/members.js';
import { copyEnd } from '../../cli/run.js';

test('remote ends, with and without a reservation id', (t) => {
  t.deepEqual(copyEnd('build:/tmp/out'), { member: 'build.0', path: '/tmp/out' });
  t.deepEqual(copyEnd('test[2]:a:b'), { member: 'test.2', path: 'a:b' }, 'the path keeps its colons');
  t.deepEqual(copyEnd('r-0123456789ab:test.1:log.txt'), { id: 'r-0123456789ab', member: 'test.1', path: 'log.txt' });
  t.deepEqual(copyEnd('build:'), { member: 'build.0', path: '' }, "the member's home");
});

test('local ends: no colon, or a slash before it', (t) => {
  for (const local of ['out.txt', './a:b', '/tmp/x:y', ':odd', '-rf']) t.deepEqual(copyEnd(local), { local }, local);
});

test('a member that is not a ROLE, ROLE.N or ROLE[N] is a usage error, path tricks included', (t) => {
  for (const bad of ['r-0123456789ab:../x:/etc/passwd', 'r-0123456789ab:a b:x', '1x:y', 'r-0123456789ab:nomember', 'a.b.c:x']) {
    t.throws(() => copyEnd(bad), { instanceOf: MemberSyntaxError }, bad);
  }
});
