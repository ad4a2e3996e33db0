// The matcher: each operator against labels and capacities, the first failing term, its reason.
import test from 'ava';
import { explainSpec, formatQuantity, matchSpec, type MachineTraits } from '../../../api/scheduler/match.js';
import { parseSpec } from '../../../api/scheduler/spec.js';

const GiB = 1024 ** 3;

const panda: MachineTraits = {
  labels: { type: 'panda', arch: 'armv7', subarch: 'neon', flaky: 'yes', slots: '4', version: 'v2' },
  capacities: { ram: 1 * GiB, cpus: 2, disk: 1e9 },
};

// [spec, true when it matches, else [failing term text, reason]]
const cases: [string, true | [string, string]][] = [
  ['panda', true],
  ['beagle', ['beagle', 'type is panda, needs beagle']],
  ['type=panda', true],
  ['arch=armv7', true],
  ['arch=x86_64', ['arch=x86_64', 'arch is armv7, needs x86_64']],
  ['arch=x86_64|armv7', true],
  ['arch=x86_64|arm64', ['arch=x86_64|arm64', 'arch is armv7, needs one of x86_64, arm64']],
  ['gpu=nvidia', ['gpu=nvidia', 'gpu is missing, needs nvidia']],
  // eq on a capacity compares numbers, with units
  ['ram=1GiB', true],
  ['ram=1024MiB', true],
  ['cpus=2|4', true],
  ['cpus=4', ['cpus=4', 'cpus is 2, needs 4']],
  ['ram=2GiB', ['ram=2GiB', 'ram is 1GiB, needs 2GiB']],
  ['cpus=two', ['cpus=two', 'cpus is 2, needs two']],
  // eq on a label compares strings, even when they read as numbers
  ['slots=4', true],
  ['slots=4.0', ['slots=4.0', 'slots is 4, needs 4.0']],
  // ne: absent key holds, any alternative equal fails
  ['arch!=x86_64', true],
  ['gpu!=nvidia', true],
  ['arch!=armv7', ['arch!=armv7', 'arch is armv7, must not be armv7']],
  ['arch!=x86_64|armv7', ['arch!=x86_64|armv7', 'arch is armv7, must not be one of x86_64, armv7']],
  ['cpus!=2', ['cpus!=2', 'cpus is 2, must not be 2']],
  // numeric operators on capacities
  ['ram>=1GiB', true],
  ['ram>=1024MiB', true],
  ['ram>=2GiB', ['ram>=2GiB', 'ram is 1GiB, needs >= 2GiB']],
  ['ram<=1GiB', true],
  ['ram<=512MiB', ['ram<=512MiB', 'ram is 1GiB, needs <= 512MiB']],
  ['ram>1GiB', ['ram>1GiB', 'ram is 1GiB, needs > 1GiB']],
  ['ram<1GiB', ['ram<1GiB', 'ram is 1GiB, needs < 1GiB']],
  ['ram<2GiB', true],
  ['cpus>1', true],
  ['disk>=1GB', true],
  ['disk>1GB', ['disk>1GB', 'disk is 1000000000, needs > 1000000000']],
  // numeric operators on a label that reads as a quantity, or not
  ['slots>=4', true],
  ['slots>4', ['slots>4', 'slots is 4, needs > 4']],
  ['arch>=2', ['arch>=2', 'arch is armv7, not a number, needs >= 2']],
  ['gpus>=1', ['gpus>=1', 'gpus is missing, needs >= 1']],
  // present / absent, in either map
  ['panda arch', ['panda', 'panda is missing']],
  ['type=panda flaky', true],
  ['type=panda ram', true],
  ['type=panda kvm', ['kvm', 'kvm is missing']],
  ['type=panda !kvm', true],
  ['type=panda !flaky', ['!flaky', 'flaky is yes, must be absent']],
  ['type=panda !ram', ['!ram', 'ram is 1GiB, must be absent']],
  // the first failing term in spec order, not the worst one
  ['arch=armv7 ram>=2GiB cpus>=4', ['ram>=2GiB', 'ram is 1GiB, needs >= 2GiB']],
  ['cpus>=4 ram>=2GiB', ['cpus>=4', 'cpus is 2, needs >= 4']],
  ['ram>=1GiB !flaky arch=x86_64', ['!flaky', 'flaky is yes, must be absent']],
];

for (const [text, expected] of cases) {
  test(`${text} against the panda`, (t) => {
    const result = matchSpec(parseSpec(text), panda);
    if (expected === true) {
      t.deepEqual(result, { ok: true });
      return;
    }
    t.false(result.ok);
    if (result.ok) return;
    t.is(result.term.text, expected[0]);
    t.is(result.reason, expected[1]);
  });
}

test('a key inherited from Object.prototype is not a label', (t) => {
  t.false(matchSpec(parseSpec('constructor x=1'), { labels: { x: '1' }, capacities: {} }).ok);
  t.true(matchSpec(parseSpec('!toString x=1'), { labels: { x: '1' }, capacities: {} }).ok);
});

const quantities: [number, string][] = [
  [2, '2'],
  [1000, '1000'],
  [1024, '1024'],
  [1024 ** 2, '1MiB'],
  [1.5 * GiB, '1.5GiB'],
  [16 * GiB, '16GiB'],
  [2 * 1024 ** 4, '2TiB'],
  [512 * GiB, '512GiB'],
  [1e9, '1000000000'],
  [GiB + 1, String(GiB + 1)],
];

for (const [value, text] of quantities) {
  test(`formatQuantity(${value}) is ${text}`, (t) => {
    t.is(formatQuantity(value), text);
  });
}

const fleet: (MachineTraits & { name: string })[] = [
  { name: 'x86-b', labels: { arch: 'x86_64' }, capacities: { ram: 8 * GiB } },
  { name: 'arm-1', labels: { arch: 'armv7' }, capacities: { ram: 1 * GiB } },
  { name: 'x86-a', labels: { arch: 'x86_64' }, capacities: { ram: 2 * GiB } },
  { name: 'arm-0', labels: { arch: 'armv7', flaky: 'yes' }, capacities: { ram: 2 * GiB } },
];

test('explainSpec lists matches and rejections sorted by name, each with its first failing term', (t) => {
  t.deepEqual(explainSpec(parseSpec('ram>=2GiB !flaky'), fleet), {
    matches: ['x86-a', 'x86-b'],
    rejected: [
      { machine: 'arm-0', term: '!flaky', reason: 'flaky is yes, must be absent' },
      { machine: 'arm-1', term: 'ram>=2GiB', reason: 'ram is 1GiB, needs >= 2GiB' },
    ],
  });
  t.deepEqual(
    explainSpec(parseSpec('armv7'), fleet).rejected.map((entry) => entry.term),
    ['type=armv7', 'type=armv7', 'type=armv7', 'type=armv7'],
  );
  t.deepEqual(explainSpec(parseSpec('arch'), []), { matches: [], rejected: [] });
});

test('explainSpec does not depend on the order of machines and does not reorder its input', (t) => {
  const spec = parseSpec('arch=x86_64');
  const reversed = [...fleet].reverse();
  const names = reversed.map((machine) => machine.name);
  t.deepEqual(explainSpec(spec, reversed), explainSpec(spec, fleet));
  t.deepEqual(
    reversed.map((machine) => machine.name),
    names,
  );
});
