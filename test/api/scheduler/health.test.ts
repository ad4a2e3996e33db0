// The health score as pure policy: the share of the last `window` provisionings that count which
// came up, two decimals rounded down; the score quarantine rule; stage durations; and the inventory
// moving a machine to its new shape when its score changes.
import test from 'ava';
import { healthScore, quantizeScore, scoreQuarantines, stageDurations } from '../../../api/scheduler/health.js';
import { Inventory } from '../../../api/scheduler/inventory.js';
import { explainSpec } from '../../../api/scheduler/match.js';
import { parseSpec } from '../../../api/scheduler/spec.js';

const ready = { outcome: 'ready', counted: true };
const broke = { outcome: 'failed', counted: true };
const badImage = { outcome: 'failed', counted: false };

test('the score counts the newest provisionings in the window and leaves the request faults out', (t) => {
  const cases: [string, (typeof ready)[], number, { score: number; samples: number; failures: number }][] = [
    ['no history', [], 20, { score: 1, samples: 0, failures: 0 }],
    ['only request faults', [badImage, badImage], 20, { score: 1, samples: 0, failures: 0 }],
    ['one failure in four', [broke, ready, ready, ready], 20, { score: 0.75, samples: 4, failures: 1 }],
    ['request faults do not take a place in the window', [badImage, broke, badImage, ready, ready], 2, { score: 0.5, samples: 2, failures: 1 }],
    ['older failures leave the window', [ready, ready, broke, broke], 2, { score: 1, samples: 2, failures: 0 }],
  ];
  for (const [what, history, window, expected] of cases) t.deepEqual(healthScore(history, window), expected, what);
});

test('the score is quantized to two decimals rounded down, so 0.949 does not pass health>=0.95', (t) => {
  t.is(quantizeScore(19 / 20), 0.95);
  t.is(quantizeScore(0.29), 0.29, 'no float error takes it under');
  t.is(quantizeScore(0.9499), 0.94);
  t.is(quantizeScore(2 / 3), 0.66);
  t.is(quantizeScore(1), 1);
});

test('a low score quarantines only once the window holds enough provisionings', (t) => {
  const policy = { quarantineAfter: 3, minScore: 0.5, minSamples: 4 };
  t.false(scoreQuarantines(healthScore([broke, broke, broke], 20), policy), 'three samples are too few');
  t.true(scoreQuarantines(healthScore([broke, broke, broke, ready], 20), policy));
  t.false(scoreQuarantines(healthScore([broke, broke, ready, ready], 20), policy), '0.5 is not under 0.5');
  t.true(scoreQuarantines(healthScore([broke, broke, broke, broke, broke], 20), { quarantineAfter: 3 }), 'defaults: 0.5 over 5');
});

test('stage durations run from the start and from each stage reached to the next, in readiness order', (t) => {
  const start = Date.parse('2026-01-01T00:00:00.000Z');
  t.deepEqual(stageDurations({ sshReady: '2026-01-01T00:00:04.500Z', powerConfirmed: '2026-01-01T00:00:01.000Z' }, start), [
    { stage: 'powerConfirmed', at: '2026-01-01T00:00:01.000Z', seconds: 1 },
    { stage: 'sshReady', at: '2026-01-01T00:00:04.500Z', seconds: 3.5 },
  ]);
  t.deepEqual(stageDurations({}, start), []);
});

test('a new score moves the machine to the shape it makes, free or reserved, and a retired machine leaves every shape', (t) => {
  const inventory = new Inventory();
  const add = (name: string, state: 'available' | 'reserved') =>
    inventory.add({
      name,
      kind: 'static',
      labHost: 'local',
      access: 'direct',
      state,
      labels: { type: 'box' },
      capacities: { cpus: 2, health: 1 },
      settings: {},
      failures: 0,
    });
  const a = add('a', 'available');
  const b = add('b', 'reserved');
  inventory.drainGrown();
  const shapes = () => inventory.allShapes().map((shape) => [shape.capacities.health, shape.machines]);
  const free = () => inventory.freeShapes().flatMap((shape) => shape.machines.map((name) => `${name}@${shape.capacities.health}`));
  t.deepEqual(shapes(), [[1, ['a', 'b']]]);

  inventory.setCapacities(b, { cpus: 2, health: 0.5 });
  t.deepEqual(shapes(), [
    [1, ['a']],
    [0.5, ['b']],
  ]);
  t.deepEqual(free(), ['a@1'], 'a reserved machine stays out of the free lists');
  inventory.setCapacities(a, { cpus: 2, health: 0.5 });
  t.deepEqual(shapes(), [[0.5, ['a', 'b']]], 'the emptied shape goes');
  t.deepEqual(free(), ['a@0.5']);
  t.is(inventory.drainGrown().length, 2, 'a free machine in a new shape is room a waiting request may use; those waiting on its old shape look again');
  t.true(inventory.drainNewShapes(), 'a shape new to the inventory wakes every waiting request');
  t.false(inventory.drainNewShapes());

  const matches = (spec: string) => explainSpec(parseSpec(spec), [...inventory.machines.values()]).matches;
  t.deepEqual(matches('health>=0.5 type=box'), ['a', 'b']);
  t.deepEqual(matches('health>=0.9'), []);

  inventory.setState(a, 'retired');
  t.deepEqual(shapes(), [[0.5, ['b']]]);
  t.deepEqual(free(), []);
});
