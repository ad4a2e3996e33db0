// Queue policy: effective priority with aging, queue order, one scheduling pass with backfill and
// the starvation hold.
import test from 'ava';
import { groupShapes, type Shape } from '../../../api/scheduler/allocate.js';
import { effectivePriority, isStarving, queueOrder, schedulePass, type QueuePolicy, type QueuedRequest } from '../../../api/scheduler/queue.js';
import { parseSpec } from '../../../api/scheduler/spec.js';

const policy: QueuePolicy = { agingSeconds: 60, starvationSeconds: 300 };
const s = 1000;

const request = (id: string, priority: number, createdAtMs: number, ...members: [string, number][]): QueuedRequest => ({
  id,
  priority,
  createdAtMs,
  members: members.map(([spec, count], index) => ({ role: `r${index}`, spec: parseSpec(spec), count })),
});

const lab = (...groups: [string, number, Record<string, string>][]): Shape[] =>
  groupShapes(
    groups.flatMap(([prefix, count, labels]) => Array.from({ length: count }, (_, index) => ({ name: `${prefix}-${index}`, labels, capacities: {} }))),
  );

const priorities: [number, number, QueuePolicy, number][] = [
  // [priority, seconds waited, policy, effective priority]
  [0, 0, policy, 0],
  [0, 59.999, policy, 0],
  [0, 60, policy, 1],
  [3, 150, policy, 5],
  [-2, 600, policy, 8],
  [5, -30, policy, 5],
  [5, 600, { agingSeconds: 0, starvationSeconds: 300 }, 5],
  [5, 600, { agingSeconds: Infinity, starvationSeconds: 300 }, 5],
];

for (const [priority, waited, rule, expected] of priorities) {
  test(`priority ${priority} after ${waited}s with aging ${rule.agingSeconds}s is ${expected}`, (t) => {
    t.is(effectivePriority(request('a', priority, 1_000_000), 1_000_000 + waited * s, rule), expected);
  });
}

test('a request starves once it has waited starvationSeconds', (t) => {
  t.false(isStarving(request('a', 0, 0), 299.999 * s, policy));
  t.true(isStarving(request('a', 0, 0), 300 * s, policy));
  t.false(isStarving(request('a', 0, 0), 1e12, { agingSeconds: 60, starvationSeconds: Infinity }));
});

test('queue order: effective priority, then older first, then id; independent of input order', (t) => {
  const now = 1000 * s;
  const requests = [
    request('new-high', 5, now),
    request('old-low', 0, now - 600 * s), // 0 + 10 steps of aging
    request('b-tie', 2, now - 30 * s),
    request('a-tie', 2, now - 30 * s),
    request('older-tie', 2, now - 59 * s),
    request('low', -1, now),
  ];
  const expected = ['old-low', 'new-high', 'older-tie', 'a-tie', 'b-tie', 'low'];
  t.deepEqual(
    queueOrder(requests, now, policy).map((entry) => entry.id),
    expected,
  );
  t.deepEqual(
    queueOrder([...requests].reverse(), now, policy).map((entry) => entry.id),
    expected,
  );
  t.is(requests[0].id, 'new-high', 'the input is not reordered');
  t.deepEqual(queueOrder(requests, now, { agingSeconds: 0, starvationSeconds: 300 })[0].id, 'new-high', 'without aging priority alone decides');
});

test('a pass grants in queue order and never hands a machine out twice', (t) => {
  const shapes = lab(['p', 3, { type: 'panda' }]);
  const queue = [request('second', 0, 2 * s, ['panda', 2]), request('first', 1, 3 * s, ['panda', 2]), request('third', 0, 4 * s, ['panda', 1])];
  t.deepEqual(schedulePass(queue, shapes, 5 * s, policy), {
    grants: [
      { id: 'first', machines: [['p-0', 'p-1']] },
      { id: 'third', machines: [['p-2']] },
    ],
  });
});

test('aging lets a long-waiting low priority request take the machine', (t) => {
  const shapes = lab(['p', 1, { type: 'panda' }]);
  const at = (now: number) => [request('urgent', 3, now - 10 * s, ['panda', 1]), request('patient', 0, 0, ['panda', 1])];
  t.is(schedulePass(at(120 * s), shapes, 120 * s, policy).grants[0].id, 'urgent', 'patient has aged to 2 of 3');
  t.is(schedulePass(at(240 * s), shapes, 240 * s, policy).grants[0].id, 'patient', 'patient has aged to 4 of 3');
});

test('backfill: a request that cannot be granted lets later ones through until it starves', (t) => {
  const shapes = lab(['p', 2, { type: 'panda' }]);
  const queue = [request('gang', 0, 0, ['panda', 3]), request('single', 0, 10 * s, ['panda', 1])];
  t.deepEqual(schedulePass(queue, shapes, 100 * s, policy).grants, [{ id: 'single', machines: [['p-0']] }]);
  t.deepEqual(schedulePass(queue, shapes, 300 * s, policy).grants, [], 'the starving gang holds the pandas back');
});

test('a starving request holds back only the machines its members could use', (t) => {
  const shapes = lab(['arm', 1, { arch: 'armv7' }], ['x86', 1, { arch: 'x86_64' }]);
  const queue = [
    request('arm-gang', 0, 0, ['arch=armv7', 2]),
    request('arm-single', 0, 1 * s, ['arch=armv7', 1]),
    request('x86-single', 0, 2 * s, ['arch=x86_64', 1]),
  ];
  t.deepEqual(schedulePass(queue, shapes, 400 * s, policy).grants, [{ id: 'x86-single', machines: [['x86-0']] }]);
  const ahead = [request('urgent-arm', 50, 399 * s, ['arch=armv7', 1]), ...queue];
  t.deepEqual(
    schedulePass(ahead, shapes, 400 * s, policy).grants.map((grant) => grant.id),
    ['urgent-arm', 'x86-single'],
    'requests ahead of the starving one in the order are not held back',
  );
});

test('a pass does not mutate the queue or the shapes', (t) => {
  const shapes = lab(['p', 4, { type: 'panda' }], ['q', 2, { type: 'beagle' }]);
  const queue = [request('a', 0, 0, ['panda', 2], ['beagle', 1]), request('b', 0, 1 * s, ['panda', 3]), request('c', 0, 2 * s, ['panda', 2])];
  const before = JSON.stringify({ queue, shapes });
  const deepFreeze = (value: unknown): unknown => {
    if (value && typeof value === 'object' && !Object.isFrozen(value)) {
      Object.freeze(value);
      for (const inner of Object.values(value)) deepFreeze(inner);
    }
    return value;
  };
  deepFreeze(queue);
  deepFreeze(shapes);
  const { grants } = schedulePass(queue, shapes, 100 * s, policy);
  t.deepEqual(grants, [
    { id: 'a', machines: [['p-0', 'p-1'], ['q-0']] },
    { id: 'c', machines: [['p-2', 'p-3']] },
  ]);
  t.is(JSON.stringify({ queue, shapes }), before);
});

/**
 * Three pandas, all busy. Every 10 s the longest-held one is released and a new single request
 * arrives; a gang of 3 has been waiting since time 0. Returns when (in seconds) the gang is granted.
 */
function simulate(rule: QueuePolicy, ticks: number): { gangGrantedAt?: number; singlesGranted: number } {
  let free: string[] = [];
  const busy = ['p-0', 'p-1', 'p-2'];
  let queue = [request('gang', 0, 0, ['panda', 3])];
  let singlesGranted = 0;
  for (let tick = 1; tick <= ticks; tick++) {
    const now = tick * 10 * s;
    free.push(busy.shift()!);
    queue.push(request(`single-${String(tick).padStart(3, '0')}`, 0, now, ['panda', 1]));
    const shapes = groupShapes(free.map((name) => ({ name, labels: { type: 'panda' }, capacities: {} })));
    for (const grant of schedulePass(queue, shapes, now, rule).grants) {
      const names = grant.machines.flat();
      if (grant.id === 'gang') return { gangGrantedAt: now / s, singlesGranted };
      singlesGranted++;
      queue = queue.filter((entry) => entry.id !== grant.id);
      free = free.filter((name) => !names.includes(name));
      busy.push(...names);
    }
  }
  return { singlesGranted };
}

test('a gang of 3 waiting past starvationSeconds is granted before a stream of singles', (t) => {
  const rule = { agingSeconds: 0, starvationSeconds: 60 };
  const result = simulate(rule, 50);
  // Singles are backfilled for the first 50 s; from 60 s on the freed pandas are held for the gang.
  t.is(result.singlesGranted, 5);
  t.is(result.gangGrantedAt, 80);
  const neverStarving = simulate({ agingSeconds: 0, starvationSeconds: Infinity }, 50);
  t.is(neverStarving.gangGrantedAt, undefined, 'without the hold the singles starve the gang');
  t.is(neverStarving.singlesGranted, 50);
});

test('a limited pool never has more than its room granted across its shapes, in one pass or one gang', (t) => {
  // A cloud pool of two flavors (3 slots each) with room for 3 servers, and a static host outside it.
  const shapes = lab(['small', 3, { pool: 'cloud', flavor: 'small' }], ['large', 3, { pool: 'cloud', flavor: 'large' }], ['host', 1, { type: 'host' }]);
  const room = new Map([['cloud', 3]]);
  const queue = [
    request('two-small', 0, 1 * s, ['flavor=small', 2]),
    request('two-large', 0, 2 * s, ['flavor=large', 2]),
    request('one-large', 0, 3 * s, ['flavor=large', 1]),
    request('host', 0, 4 * s, ['type=host', 1]),
  ];
  const { grants } = schedulePass(queue, shapes, 10 * s, policy, room);
  t.deepEqual(
    grants.map((grant) => grant.id),
    ['two-small', 'one-large', 'host'],
    'two-large would make 4; the smaller one and the host fit',
  );
  t.deepEqual(
    schedulePass(queue, shapes, 10 * s, policy).grants.map((grant) => grant.id),
    ['two-small', 'two-large', 'one-large', 'host'],
    'without a limit all fit',
  );
  t.deepEqual(
    schedulePass([request('gang', 0, 0, ['flavor=small', 2], ['flavor=large', 2])], shapes, 10 * s, policy, room).grants,
    [],
    'a gang of 4 does not fit in 3',
  );
  t.deepEqual(
    schedulePass(queue, shapes, 10 * s, policy, new Map([['cloud', 0]])).grants.map((grant) => grant.id),
    ['host'],
    'a full pool offers nothing',
  );
});
