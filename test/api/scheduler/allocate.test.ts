// Gang allocation: shapes, overlapping members, all-or-nothing, best fit, order independence,
// and the reasons a request could never be granted.
import test from 'ava';
import { allocate, canEverSatisfy, groupShapes, shapeKey, type GangMember, type Shape } from '../../../api/scheduler/allocate.js';
import { matchSpec } from '../../../api/scheduler/match.js';
import { parseSpec } from '../../../api/scheduler/spec.js';

const GiB = 1024 ** 3;

type Machine = { name: string; labels: Record<string, string>; capacities: Record<string, number> };

const machines = (prefix: string, count: number, labels: Record<string, string>, capacities: Record<string, number>): Machine[] =>
  Array.from({ length: count }, (_, index) => ({ name: `${prefix}-${index}`, labels, capacities }));

const gang = (...members: [string, string, number][]): GangMember[] => members.map(([role, spec, count]) => ({ role, spec: parseSpec(spec), count }));

/** A seeded generator (mulberry32), so every run sees the same permutations. */
function random(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let value = state;
    value = Math.imul(value ^ (value >>> 15), value | 1);
    value ^= value + Math.imul(value ^ (value >>> 7), value | 61);
    return ((value ^ (value >>> 14)) >>> 0) / 4294967296;
  };
}

function shuffle<T>(items: readonly T[], next: () => number): T[] {
  const copy = [...items];
  for (let index = copy.length - 1; index > 0; index--) {
    const other = Math.floor(next() * (index + 1));
    [copy[index], copy[other]] = [copy[other], copy[index]];
  }
  return copy;
}

/** Checks a grant against the request: exact counts, no machine twice, every machine matches. */
function assertValid(t: import('ava').ExecutionContext, members: GangMember[], fleet: Machine[], granted: string[][]): void {
  const byName = new Map(fleet.map((machine) => [machine.name, machine]));
  t.is(granted.length, members.length);
  members.forEach((member, index) => {
    t.is(granted[index].length, member.count, `${member.role} gets its count`);
    for (const name of granted[index]) t.true(matchSpec(member.spec, byName.get(name)!).ok, `${name} matches ${member.spec.text}`);
  });
  const all = granted.flat();
  t.is(new Set(all).size, all.length, 'no machine twice');
}

test('shapeKey does not depend on key order and tells labels from capacities', (t) => {
  t.is(shapeKey({ a: '1', b: '2' }, { ram: 4, cpus: 2 }), shapeKey({ b: '2', a: '1' }, { cpus: 2, ram: 4 }));
  t.not(shapeKey({ ram: '4' }, {}), shapeKey({}, { ram: 4 }));
  t.not(shapeKey({ a: '1' }, {}), shapeKey({ a: '2' }, {}));
});

test('groupShapes groups identical machines, sorts shapes by key and names within them', (t) => {
  const fleet: Machine[] = [
    { name: 'b', labels: { arch: 'x86_64' }, capacities: { ram: GiB } },
    { name: 'c', labels: { arch: 'armv7' }, capacities: {} },
    { name: 'a', labels: { arch: 'x86_64' }, capacities: { ram: GiB } },
    { name: 'd', labels: { arch: 'x86_64' }, capacities: { ram: 2 * GiB } },
  ];
  const shapes = groupShapes(fleet);
  t.is(shapes.length, 3);
  t.deepEqual([...shapes.map((shape) => shape.key)], shapes.map((shape) => shape.key).sort());
  t.deepEqual(shapes.find((shape) => shape.machines.includes('a'))?.machines, ['a', 'b']);
  t.deepEqual(groupShapes([...fleet].reverse()), shapes);
});

test('a single member gets the lowest names of the best-fitting shape', (t) => {
  const fleet: Machine[] = [
    ...machines('big', 3, { arch: 'x86_64' }, { ram: 16 * GiB, cpus: 8 }),
    ...machines('small', 3, { arch: 'x86_64' }, { ram: 2 * GiB, cpus: 2 }),
  ];
  t.deepEqual(allocate(gang(['main', 'arch=x86_64', 2]), groupShapes(fleet)), [['small-0', 'small-1']]);
  t.deepEqual(allocate(gang(['main', 'arch=x86_64', 4]), groupShapes(fleet)), [['big-0', 'small-0', 'small-1', 'small-2']]);
  t.deepEqual(allocate(gang(['main', 'ram>=4GiB', 1]), groupShapes(fleet)), [['big-0']]);
});

test('a member prefers the shapes fewer members of the request match', (t) => {
  // The small shape has more capacity than needed by `test`, but `build` can only use it: best fit
  // by matchers first keeps it for build even though `test` is served first.
  const fleet = [...machines('lean', 1, { arch: 'x86_64', kvm: 'yes' }, { ram: 2 * GiB }), ...machines('wide', 1, { arch: 'x86_64' }, { ram: 8 * GiB })];
  t.deepEqual(allocate(gang(['test', 'arch=x86_64', 1], ['build', 'kvm=yes', 1]), groupShapes(fleet)), [['wide-0'], ['lean-0']]);
});

test('overlapping members: an earlier member moves over so a later one fits', (t) => {
  // `any` matches both shapes and prefers the smaller `x` (a tie on matchers); greedy would give it
  // x-0 and leave nothing for `needs-x`. The augmenting path moves `any` to y.
  const fleet = [...machines('x', 1, { arch: 'x86_64', pool: 'x' }, { ram: 2 * GiB }), ...machines('y', 2, { arch: 'x86_64', gpu: 'yes' }, { ram: 4 * GiB })];
  const members = gang(['any', 'arch=x86_64', 1], ['needs-x', 'pool=x', 1], ['needs-gpu', 'gpu=yes', 1]);
  const granted = allocate(members, groupShapes(fleet));
  t.deepEqual(granted, [['y-0'], ['x-0'], ['y-1']]);
  assertValid(t, members, fleet, granted!);
});

test('the brief example: x86 count 2 and ram>=4GiB count 1, in either member order', (t) => {
  const fleet = [...machines('small', 1, { arch: 'x86_64' }, { ram: 2 * GiB }), ...machines('big', 2, { arch: 'x86_64' }, { ram: 8 * GiB })];
  t.deepEqual(allocate(gang(['x86', 'arch=x86_64', 2], ['ram', 'ram>=4GiB', 1]), groupShapes(fleet)), [['big-0', 'small-0'], ['big-1']]);
  t.deepEqual(allocate(gang(['ram', 'ram>=4GiB', 1], ['x86', 'arch=x86_64', 2]), groupShapes(fleet)), [['big-0'], ['big-1', 'small-0']]);
});

test('all or nothing: null when any member cannot be served, and the shapes are untouched', (t) => {
  const fleet = [...machines('x86', 2, { arch: 'x86_64' }, {}), ...machines('arm', 1, { arch: 'armv7' }, {})];
  const shapes = groupShapes(fleet);
  const before = JSON.stringify(shapes);
  t.is(allocate(gang(['a', 'arch=x86_64', 1], ['b', 'arch=armv7', 2]), shapes), null);
  t.is(allocate(gang(['a', 'arch=x86_64', 2], ['b', 'arch=x86_64|armv7', 2]), shapes), null, 'together they need 4 of 3');
  t.is(allocate(gang(['a', 'arch=riscv', 1]), shapes), null);
  t.deepEqual(allocate(gang(['a', 'arch=x86_64', 1], ['b', 'arch=x86_64|armv7', 2]), shapes), [['x86-0'], ['arm-0', 'x86-1']]);
  t.is(JSON.stringify(shapes), before);
  t.deepEqual(allocate([], shapes), []);
  t.deepEqual(allocate(gang(['a', 'arch', 1]), []), null);
});

test('the answer does not depend on the order of shapes or of machines', (t) => {
  const fleet: Machine[] = [
    ...machines('s', 4, { arch: 'x86_64' }, { ram: 2 * GiB, cpus: 2 }),
    ...machines('m', 3, { arch: 'x86_64', kvm: 'yes' }, { ram: 4 * GiB, cpus: 4 }),
    ...machines('l', 3, { arch: 'x86_64', kvm: 'yes' }, { ram: 16 * GiB, cpus: 8 }),
    ...machines('a', 3, { arch: 'armv7' }, { ram: 1 * GiB, cpus: 2 }),
    ...machines('t', 2, { arch: 'x86_64' }, { ram: 2 * GiB, cpus: 4 }),
  ];
  const requests = [
    gang(['build', 'arch=x86_64', 5], ['vm', 'kvm ram>=4GiB', 2], ['board', 'arch=armv7', 2]),
    gang(['any', 'cpus>=2', 9], ['big', 'ram>=8GiB', 1]),
    gang(['x', 'arch=x86_64 cpus<=4', 3], ['y', 'cpus=4', 3]),
  ];
  const expected = requests.map((members) => allocate(members, groupShapes(fleet)));
  expected.forEach((granted, index) => {
    t.truthy(granted);
    assertValid(t, requests[index], fleet, granted!);
  });
  const next = random(42);
  for (let round = 0; round < 12; round++) {
    const shapes = shuffle(groupShapes(shuffle(fleet, next)), next);
    requests.forEach((members, index) => t.deepEqual(allocate(members, shapes), expected[index], `permutation ${round}`));
  }
});

/** Is there any assignment at all? Tries every split of every member's count, for small cases. */
function feasible(members: GangMember[], shapes: Shape[]): boolean {
  const left = shapes.map((shape) => shape.machines.length);
  const fill = (member: number, shape: number, need: number): boolean => {
    if (member === members.length) return true;
    if (need === 0) return fill(member + 1, 0, members[member + 1]?.count ?? 0);
    if (shape === shapes.length) return false;
    if (!matchSpec(members[member].spec, shapes[shape]).ok) return fill(member, shape + 1, need);
    for (let take = Math.min(need, left[shape]); take >= 0; take--) {
      left[shape] -= take;
      const done = fill(member, shape + 1, need - take);
      left[shape] += take;
      if (done) return true;
    }
    return false;
  };
  return fill(0, 0, members[0]?.count ?? 0);
}

test('on random small cases it grants exactly when some assignment exists', (t) => {
  const next = random(7);
  const pick = <T>(items: readonly T[]) => items[Math.floor(next() * items.length)];
  const specs = ['a', 'b', 'c', 'a b', 'a !c', 'ram>=2', 'ram<=2', 'a|b=1', 'colour=red|blue', 'colour!=red', 'ram>=3 !b'];
  let granted = 0;
  for (let round = 0; round < 400; round++) {
    const fleet: Machine[] = [];
    for (let shape = 0; shape < 1 + Math.floor(next() * 5); shape++) {
      const labels: Record<string, string> = { colour: pick(['red', 'blue', 'green']) };
      for (const key of ['a', 'b', 'c']) if (next() < 0.5) labels[key] = '1';
      fleet.push(...machines(`s${shape}`, 1 + Math.floor(next() * 3), labels, { ram: 1 + Math.floor(next() * 4) }));
    }
    const members = gang(
      ...Array.from({ length: 1 + Math.floor(next() * 4) }, (_, index): [string, string, number] => [
        `m${index}`,
        pick(specs)
          .replace(/^([a-c])$/, '$1 ram>=0')
          .replace(/^a\|b=1$/, 'a=1|2'),
        1 + Math.floor(next() * 3),
      ]),
    );
    const shapes = groupShapes(fleet);
    const result = allocate(members, shapes);
    t.is(result !== null, feasible(members, shapes), `round ${round}: ${members.map((member) => `${member.spec.text}×${member.count}`).join(', ')}`);
    if (result) {
      granted++;
      assertValid(t, members, fleet, result);
    }
  }
  t.true(granted > 50 && granted < 350, `a mix of granted and refused cases (${granted} granted)`);
});

test('it reads only the names it hands out, never the whole inventory', (t) => {
  const fleet = Array.from({ length: 24 }, (_, shape) =>
    machines(`s${String(shape).padStart(2, '0')}`, 500, { arch: ['x86_64', 'armv7', 'arm64'][shape % 3], n: String(shape) }, { ram: (1 + (shape % 4)) * GiB }),
  );
  let reads = 0;
  const shapes = groupShapes(fleet.flat()).map((shape) => ({
    ...shape,
    machines: new Proxy(shape.machines, {
      get(target, property, receiver) {
        if (typeof property === 'string' && /^\d+$/.test(property)) reads++;
        return Reflect.get(target, property, receiver);
      },
    }),
  }));
  const granted = allocate(gang(['build', 'arch=x86_64 ram>=2GiB', 3], ['board', 'arch=armv7', 2]), shapes);
  t.is(granted?.flat().length, 5);
  t.is(reads, 5);
});

test('canEverSatisfy: no machine matches, with the most common first failing term', (t) => {
  const shapes = groupShapes([...machines('x86', 6, { arch: 'x86_64' }, { ram: 8 * GiB }), ...machines('arm', 3, { arch: 'armv7' }, { ram: 1 * GiB })]);
  t.deepEqual(canEverSatisfy(gang(['ok', 'arch=x86_64', 2], ['board', 'arch=armv7 ram>=2GiB', 1], ['gpu', 'gpu', 1]), shapes), {
    ok: false,
    reasons: [
      { role: 'board', reason: "no machine matches 'arch=armv7 ram>=2GiB': 6 of 9 machines fail arch=armv7 (e.g. arch is x86_64, needs armv7)" },
      { role: 'gpu', reason: "no machine matches 'gpu': all 9 machines fail type=gpu (e.g. type is missing, needs gpu)" },
    ],
  });
  t.deepEqual(canEverSatisfy(gang(['a', 'arch', 1]), []), { ok: false, reasons: [{ role: 'a', reason: 'there are no machines in the inventory' }] });
});

test('canEverSatisfy: fewer machines match than the count', (t) => {
  const shapes = groupShapes(machines('arm', 2, { type: 'panda' }, {}));
  t.deepEqual(canEverSatisfy(gang(['many', 'panda', 3]), shapes), {
    ok: false,
    reasons: [{ role: 'many', reason: "only 2 machines match 'panda', needs 3" }],
  });
  t.deepEqual(canEverSatisfy(gang(['two', 'panda', 2]), shapes), { ok: true });
});

test('canEverSatisfy: members that together need more machines than match any of them', (t) => {
  const shapes = groupShapes([...machines('x86', 3, { arch: 'x86_64' }, { ram: 8 * GiB }), ...machines('arm', 4, { arch: 'armv7' }, {})]);
  t.deepEqual(canEverSatisfy(gang(['board', 'arch=armv7', 4], ['build', 'arch=x86_64', 2], ['big', 'ram>=4GiB', 2]), shapes), {
    ok: false,
    reasons: [
      { role: 'build', reason: 'build, big together need 4 machines, but only 3 machines match any of them' },
      { role: 'big', reason: 'build, big together need 4 machines, but only 3 machines match any of them' },
    ],
  });
  t.deepEqual(canEverSatisfy(gang(['board', 'arch=armv7', 4], ['build', 'arch=x86_64', 1], ['big', 'ram>=4GiB', 2]), shapes), { ok: true });
});

test('canEverSatisfy counts busy machines too: it is about the inventory, not what is free now', (t) => {
  const all = groupShapes(machines('m', 3, { type: 'panda' }, {}));
  const free = all.map((shape) => ({ ...shape, machines: [] }));
  t.is(allocate(gang(['a', 'panda', 3]), free), null);
  t.deepEqual(canEverSatisfy(gang(['a', 'panda', 3]), all), { ok: true });
});
