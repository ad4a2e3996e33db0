// The spec parser: every operator, units, the type-name rule, and each error with its position.
import test from 'ava';
import { formatTerm, parseSpec, parseSpecCached, SpecError, type Term } from '../../../api/scheduler/spec.js';

const GiB = 1024 ** 3;

const parsed: [string, Partial<Term>[]][] = [
  ['panda', [{ text: 'panda', start: 0, key: 'type', op: 'eq', values: ['panda'] }]],
  ['  panda  ', [{ text: 'panda', start: 2, key: 'type', op: 'eq', values: ['panda'] }]],
  ['96boards-hikey', [{ key: 'type', op: 'eq', values: ['96boards-hikey'] }]],
  ['arch=x86_64', [{ text: 'arch=x86_64', start: 0, key: 'arch', op: 'eq', values: ['x86_64'] }]],
  ['type=panda', [{ key: 'type', op: 'eq', values: ['panda'] }]],
  ['!flaky', [{ text: '!flaky', start: 0, key: 'flaky', op: 'absent' }]],
  [
    'kvm arch=x86_64',
    [
      { text: 'kvm', start: 0, key: 'kvm', op: 'present' },
      { start: 4, key: 'arch', op: 'eq', values: ['x86_64'] },
    ],
  ],
  ['arch=armv7|arm64', [{ key: 'arch', op: 'eq', values: ['armv7', 'arm64'] }]],
  ['arch!=armv7', [{ key: 'arch', op: 'ne', values: ['armv7'] }]],
  ['arch!=armv7|arm64', [{ key: 'arch', op: 'ne', values: ['armv7', 'arm64'] }]],
  ['ram>=1GiB', [{ key: 'ram', op: 'ge', number: GiB }]],
  ['ram>=1024MiB', [{ key: 'ram', op: 'ge', number: GiB }]],
  ['disk>1GB', [{ key: 'disk', op: 'gt', number: 1e9 }]],
  ['cpus<=4', [{ key: 'cpus', op: 'le', number: 4 }]],
  ['load<0.5', [{ key: 'load', op: 'lt', number: 0.5 }]],
  ['ram>=2Gi', [{ key: 'ram', op: 'ge', number: 2 * GiB }]],
  ['soc.rev_2-a=b=c', [{ key: 'soc.rev_2-a', op: 'eq', values: ['b=c'] }]],
  ['_x=1', [{ key: '_x', op: 'eq', values: ['1'] }]],
  [
    'arch=armv7 subarch=neon\tram>=1GiB  cpus>=2 !flaky',
    [
      { text: 'arch=armv7', start: 0, key: 'arch', op: 'eq', values: ['armv7'] },
      { text: 'subarch=neon', start: 11, key: 'subarch', op: 'eq', values: ['neon'] },
      { text: 'ram>=1GiB', start: 24, key: 'ram', op: 'ge', number: GiB },
      { text: 'cpus>=2', start: 35, key: 'cpus', op: 'ge', number: 2 },
      { text: '!flaky', start: 43, key: 'flaky', op: 'absent' },
    ],
  ],
];

for (const [text, expected] of parsed) {
  test(`parses ${JSON.stringify(text)}`, (t) => {
    const spec = parseSpec(text);
    t.is(spec.text, text);
    t.is(spec.terms.length, expected.length);
    expected.forEach((want, index) => {
      const term = spec.terms[index];
      t.like(term, want as Record<string, unknown>);
      t.is(text.slice(term.start, term.start + term.text.length), term.text, 'start points at the term');
      if (term.op === 'eq' || term.op === 'ne') t.is(term.number, undefined);
    });
  });
}

test('a single bare word is a type name; among other terms it means present', (t) => {
  t.deepEqual(parseSpec('panda').terms[0], parseSpec('type=panda').terms.map((term) => ({ ...term, text: 'panda' }))[0]);
  t.is(parseSpec('panda !flaky').terms[0].op, 'present');
  t.is(parseSpec('panda !flaky').terms[0].key, 'panda');
});

const errors: [string, number, string][] = [
  ['', 0, 'expected a type name or terms like key=value at position 0'],
  ['   ', 3, 'expected a type name or terms like key=value at position 3'],
  ['arch=x86 =v', 9, "expected a key before '=' at position 9"],
  ['>=2', 0, "expected a key before '>=' at position 0"],
  ['arch=x86 4cpus>=2', 9, "expected a key (a letter or _, then letters, digits, _ . -), not '4' at position 9"],
  ['!', 1, "expected a key after '!' at position 1"],
  ['a !', 3, "expected a key after '!' at position 3"],
  ['!flaky=1', 6, "unexpected '=' after '!flaky' (an absent key takes no value) at position 6"],
  ['arch=', 5, "expected a value after '=' at position 5"],
  ['kvm arch!= x', 10, "expected a value after '!=' at position 10"],
  ['ram>=lots', 5, "expected a number after '>=' at position 5"],
  ['arch=x86_64 ram>=lots', 17, "expected a number after '>=' at position 17"],
  ['ram>=', 5, "expected a number after '>=' at position 5"],
  ['cpus>2x', 5, "expected a number after '>' at position 5"],
  ['ram<=-1', 5, "expected a number after '<=' at position 5"],
  ['ram>=1|2', 6, "unexpected '|' after a number (alternatives go with = and != only) at position 6"],
  ['arch=a||b', 7, "expected a value after '|' at position 7"],
  ['arch=a|', 7, "expected a value after '|' at position 7"],
  ['arch=|a', 5, "expected a value after '=' at position 5"],
  ['arch=a|>b', 7, "expected a value after '|', not '>' at position 7"],
  ['ram=>1', 3, "unknown operator '=>' (expected one of =, !=, >=, <=, >, <) at position 3"],
  ['key==v', 3, "unknown operator '==' (expected one of =, !=, >=, <=, >, <) at position 3"],
  ['x=1 key!v', 7, "unknown operator '!' (expected one of =, !=, >=, <=, >, <) at position 7"],
  ['arch=x86 ram@4', 12, "unexpected '@' after 'ram' (expected an operator: =, !=, >=, <=, >, <) at position 12"],
];

for (const [text, position, message] of errors) {
  test(`refuses ${JSON.stringify(text)} at ${position}`, (t) => {
    const error = t.throws(() => parseSpec(text), { instanceOf: SpecError });
    t.is(error?.position, position);
    t.is(error?.spec, text);
    t.is(error?.message, message);
    t.is(error?.name, 'SpecError');
  });
}

const formatted: [string, string[]][] = [
  ['panda', ['type=panda']],
  ['kvm !flaky', ['kvm', '!flaky']],
  ['arch=a|b arch!=c', ['arch=a|b', 'arch!=c']],
  ['ram>=1GiB cpus<=4 disk>1GB load<0.5', ['ram>=1GiB', 'cpus<=4', 'disk>1GB', 'load<0.5']],
];

for (const [text, expected] of formatted) {
  test(`formatTerm of ${JSON.stringify(text)}`, (t) => {
    t.deepEqual(parseSpec(text).terms.map(formatTerm), expected);
  });
}

test('formatTerm of a term built by hand falls back to the plain number', (t) => {
  t.is(formatTerm({ text: '', start: 0, key: 'ram', op: 'gt', number: 2048 }), 'ram>2048');
  t.is(formatTerm({ text: 'ram>=1GiB', start: 0, key: 'ram', op: 'ge', number: 5 }), 'ram>=5');
});

test('parsed specs are frozen so a cached one can be shared', (t) => {
  const spec = parseSpec('arch=a|b ram>=1GiB');
  t.true(Object.isFrozen(spec));
  t.true(Object.isFrozen(spec.terms));
  t.true(Object.isFrozen(spec.terms[0]));
  t.true(Object.isFrozen(spec.terms[0].values));
});

test('parseSpecCached returns the same spec for the same text and forgets the least recently used', (t) => {
  const first = parseSpecCached('cache-test-a arch=x86_64');
  t.is(parseSpecCached('cache-test-a arch=x86_64'), first);
  t.deepEqual(first, parseSpec('cache-test-a arch=x86_64'));
  const kept = parseSpecCached('cache-test-b');
  for (let index = 0; index < 999; index++) {
    parseSpecCached(`cache-filler-${index}`);
    if (index % 100 === 0) t.is(parseSpecCached('cache-test-b'), kept, 'a recently used spec stays');
  }
  t.is(parseSpecCached('cache-test-b'), kept);
  t.not(parseSpecCached('cache-test-a arch=x86_64'), first, 'the oldest entry was evicted');
});

test('parseSpecCached throws for a malformed spec every time', (t) => {
  for (let attempt = 0; attempt < 2; attempt++) {
    t.throws(() => parseSpecCached('ram>=lots'), { instanceOf: SpecError, message: /position 5/ });
  }
});
