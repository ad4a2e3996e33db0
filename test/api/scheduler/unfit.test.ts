// A scheduling pass does not run the gang allocation again for a request known not to fit (it
// failed against the same free machines, or more): which requests a pass reports unfit, what a
// known-unfit request still does (a starving one holds machines back), and that feeding the
// report back into the next pass never changes what that pass grants.
import test from 'ava';
import { groupShapes, type Shape } from '../../../api/scheduler/allocate.js';
import { scheduleQueue, type QueuePolicy, type QueuedRequest } from '../../../api/scheduler/queue.js';
import { parseSpec } from '../../../api/scheduler/spec.js';

const policy: QueuePolicy = { agingSeconds: 60, starvationSeconds: 300 };
const s = 1000;
const now = 10_000 * s;

const request = (id: string, waitedSeconds: number, ...members: [string, number][]): QueuedRequest => ({
  id,
  priority: 0,
  createdAtMs: now - waitedSeconds * s,
  members: members.map(([spec, count], index) => ({ role: `r${index}`, spec: parseSpec(spec), count })),
});

type Machine = { name: string; labels: Record<string, string>; capacities: Record<string, number> };
const machines = (prefix: string, count: number, labels: Record<string, string>): Machine[] =>
  Array.from({ length: count }, (_, index) => ({ name: `${prefix}-${index}`, labels, capacities: {} }));

interface Case {
  title: string;
  lab: Machine[];
  queue: QueuedRequest[];
  known?: string[];
  room?: Record<string, number>;
  grants: string[];
  unfit: string[];
}

const x86 = { arch: 'x86_64' };
const arm = { arch: 'arm64' };
const cases: Case[] = [
  {
    title: 'a gang larger than the free machines is reported unfit; the single behind it is granted',
    lab: machines('x', 2, x86),
    queue: [request('gang', 10, ['arch=x86_64', 3]), request('single', 5, ['arch=x86_64', 1])],
    grants: ['single'],
    unfit: ['gang'],
  },
  {
    title: 'a request that failed only because a starving one held machines back is not reported unfit',
    lab: [...machines('a', 1, arm), ...machines('x', 1, x86)],
    queue: [request('starving', 400, ['arch=arm64', 2]), request('behind', 10, ['arch=arm64', 1])],
    grants: [],
    unfit: ['starving'],
  },
  {
    title: 'a request known to be unfit is not allocated again (shown here with machines it would get)',
    lab: machines('x', 2, x86),
    queue: [request('known', 10, ['arch=x86_64', 1]), request('other', 5, ['arch=x86_64', 1])],
    known: ['known'],
    grants: ['other'],
    unfit: ['known'],
  },
  {
    title: 'a known-unfit request that is starving still holds back the machines it could use',
    lab: [...machines('a', 1, arm), ...machines('x', 1, x86)],
    queue: [request('starving', 400, ['arch=arm64', 2]), request('arm', 10, ['arch=arm64', 1]), request('x86', 5, ['arch=x86_64', 1])],
    known: ['starving'],
    grants: ['x86'],
    unfit: ['starving'],
  },
  {
    title: 'a request refused for lack of room in a limited pool is unfit',
    lab: machines('c', 4, { ...x86, pool: 'cloud' }),
    queue: [request('two', 10, ['arch=x86_64', 2]), request('three', 5, ['arch=x86_64', 3])],
    room: { cloud: 3 },
    grants: ['two'],
    unfit: ['three'],
  },
  {
    title: 'requests granted are never reported unfit',
    lab: machines('x', 3, x86),
    queue: [request('a', 3, ['arch=x86_64', 1]), request('b', 2, ['arch=x86_64', 2])],
    grants: ['a', 'b'],
    unfit: [],
  },
];

for (const entry of cases) {
  test(entry.title, (t) => {
    const room = entry.room ? new Map(Object.entries(entry.room)) : undefined;
    const result = scheduleQueue(entry.queue, groupShapes(entry.lab), now, policy, { room, unfit: new Set(entry.known ?? []) });
    t.deepEqual(
      result.grants.map((grant) => grant.id),
      entry.grants,
    );
    t.deepEqual([...result.unfit].sort(), [...entry.unfit].sort());
  });
}

/** A small deterministic generator, so a failure can be replayed. */
function random(seed: number) {
  return () => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return seed / 2147483648;
  };
}

const specs = ['arch=x86_64', 'arch=arm64', 'arch=x86_64 ram>=4GiB', 'type=board', 'ram>=8GiB'];

function randomLab(next: () => number): Machine[] {
  return Array.from({ length: 3 + Math.floor(next() * 12) }, (_, index) => {
    const board = next() < 0.3;
    return {
      name: `m${String(index).padStart(2, '0')}`,
      labels: board ? { arch: 'arm64', type: 'board' } : { arch: next() < 0.5 ? 'x86_64' : 'arm64', type: 'vm' },
      capacities: { ram: [2, 4, 8][Math.floor(next() * 3)] * 1024 ** 3 },
    };
  });
}

function randomRequest(next: () => number, id: string): QueuedRequest {
  const members: [string, number][] = Array.from({ length: 1 + Math.floor(next() * 3) }, () => [
    specs[Math.floor(next() * specs.length)],
    1 + Math.floor(next() * 3),
  ]);
  return request(id, Math.floor(next() * 600), ...members);
}

const withoutGranted = (lab: Machine[], grants: { machines: string[][] }[]): Machine[] => {
  const taken = new Set(grants.flatMap((grant) => grant.machines.flat()));
  return lab.filter((machine) => !taken.has(machine.name));
};

test('feeding back what a pass found unfit never changes the grants of the next pass (500 random labs and queues)', (t) => {
  const next = random(11);
  let skipped = 0;
  for (let round = 0; round < 500; round++) {
    const lab = randomLab(next);
    const queue = Array.from({ length: 1 + Math.floor(next() * 8) }, (_, index) => randomRequest(next, `q${round}-${index}`));
    const first = scheduleQueue(queue, groupShapes(lab), now, policy);
    // Nothing freed since: the machines left are those the first pass did not grant; new requests arrive.
    const granted = new Set(first.grants.map((grant) => grant.id));
    const left: Shape[] = groupShapes(withoutGranted(lab, first.grants));
    const queueAfter = [
      ...queue.filter((entry) => !granted.has(entry.id)),
      ...Array.from({ length: Math.floor(next() * 3) }, (_, index) => randomRequest(next, `n${round}-${index}`)),
    ];
    const later = now + Math.floor(next() * 400) * s; // time passes: some requests start starving
    const plain = scheduleQueue(queueAfter, left, later, policy);
    const hinted = scheduleQueue(queueAfter, left, later, policy, { unfit: new Set(first.unfit) });
    t.deepEqual(hinted.grants, plain.grants, `round ${round}`);
    skipped += first.unfit.length;
  }
  t.true(skipped > 100, `the random queues exercise the hint (${skipped} unfit requests fed back)`);
});
