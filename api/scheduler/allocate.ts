// Gang allocation: every member of a request gets its machines, or the request gets nothing.
//
// Machines with identical labels and capacities form a shape, and a spec either matches every
// machine of a shape or none, so allocation works on shapes: a small transportation problem from
// members (demand = count) to shapes (supply = free machines), solved as a max-flow. Its cost is
// O(members × shapes) per augmentation plus the names handed out, never O(machines).
//
// Best fit: a member prefers the shapes that fewer members of this request match (so it does not
// take what another member needs), then shapes with a smaller total of capacities (so big machines
// stay free for requests that need them), then the healthier shape, then the lower shape key; within a shape it takes the
// lowest names. Members are served in request order, each from its preferred shapes first; when a
// member's shapes run dry, an augmenting path moves earlier members to other shapes they match, so
// an assignment is found whenever one exists (greedy alone fails on overlapping members).
//
// The answer does not depend on the order of the shapes given. Each shape's `machines` must be
// sorted (groupShapes and the Inventory keep them so): sorting or scanning them here would cost
// O(machines) on every request.
import { matchSpec, type MatchResult } from './match.js';
import { formatTerm, type Spec, type Term } from './spec.js';

export interface Shape {
  /** shapeKey(labels, capacities): equal keys mean equal labels and capacities. */
  key: string;
  labels: Record<string, string>;
  capacities: Record<string, number>;
  /** Names of this shape's free machines, sorted ascending. */
  machines: string[];
}

export interface GangMember {
  role: string;
  spec: Spec;
  count: number;
}

/** A shape during a scheduling pass: its names before `from` are already handed out. */
export interface FreeShape {
  shape: Shape;
  from: number;
}

export type Verdict = { ok: true } | { ok: false; reasons: { role: string; reason: string }[] };

export const byText = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

const sortedEntries = <T>(record: Record<string, T>) => Object.entries(record).sort(([a], [b]) => byText(a, b));

/** A canonical string for labels plus capacities: the same whatever order the keys were given in. */
export function shapeKey(labels: Record<string, string>, capacities: Record<string, number>): string {
  return JSON.stringify([sortedEntries(labels), sortedEntries(capacities)]);
}

/** Groups machines into shapes, sorted by key, each with its names sorted. */
export function groupShapes(machines: readonly { name: string; labels: Record<string, string>; capacities: Record<string, number> }[]): Shape[] {
  const shapes = new Map<string, Shape>();
  for (const machine of machines) {
    const key = shapeKey(machine.labels, machine.capacities);
    let shape = shapes.get(key);
    if (!shape) {
      shape = {
        key,
        labels: Object.fromEntries(sortedEntries(machine.labels)),
        capacities: Object.fromEntries(sortedEntries(machine.capacities)),
        machines: [],
      };
      shapes.set(key, shape);
    }
    shape.machines.push(machine.name);
  }
  for (const shape of shapes.values()) shape.machines.sort(byText);
  return [...shapes.values()].sort((a, b) => byText(a.key, b.key));
}

// Spec against shape, remembered per spec object (parseSpecCached shares them) and shape key.
const matchCache = new WeakMap<Spec, Map<string, MatchResult>>();
const matchCacheLimit = 1000;

export function matchShape(spec: Spec, shape: Shape): MatchResult {
  let results = matchCache.get(spec);
  if (!results) matchCache.set(spec, (results = new Map()));
  let result = results.get(shape.key);
  if (!result) {
    if (results.size >= matchCacheLimit) results.clear();
    result = matchSpec(spec, shape);
    results.set(shape.key, result);
  }
  return result;
}

/**
 * The machine names per member (exactly `count` each, sorted, no machine twice), or null when the
 * gang cannot be granted in full.
 */
export function allocate(members: readonly GangMember[], shapes: readonly Shape[]): string[][] | null {
  return (
    allocateFree(
      members,
      shapes.map((shape) => ({ shape, from: 0 })),
    )?.machines ?? null
  );
}

/** allocate() over shapes part-used in a pass; also says how many names it took per shape key. */
export function allocateFree(members: readonly GangMember[], free: readonly FreeShape[]): { machines: string[][]; taken: Map<string, number> } | null {
  const gang = prepare(members, free);
  const solution = solve(gang);
  if (!solution.ok) return null;
  const cursor = gang.shapes.map((entry) => entry.from);
  const machines = members.map((_, member) => {
    const names: string[] = [];
    solution.flow[member].forEach((count, index) => {
      if (count === 0) return;
      names.push(...gang.shapes[index].shape.machines.slice(cursor[index], cursor[index] + count));
      cursor[index] += count;
    });
    return names.sort(byText);
  });
  const taken = new Map<string, number>();
  gang.shapes.forEach((entry, index) => {
    if (cursor[index] > entry.from) taken.set(entry.shape.key, cursor[index] - entry.from);
  });
  return { machines, taken };
}

/**
 * Could the whole inventory (every machine free) ever grant this request? If not, why, per member:
 * no machine matches (with the most common first failing term), fewer match than the count, or
 * some members together need more machines than match any of them.
 */
export function canEverSatisfy(members: readonly GangMember[], allShapes: readonly Shape[]): Verdict {
  const shapes = [...allShapes].sort((a, b) => byText(a.key, b.key));
  const total = shapes.reduce((sum, shape) => sum + shape.machines.length, 0);
  const reasons: { role: string; reason: string }[] = [];
  for (const member of members) {
    let matching = 0;
    const failing = new Map<Term, { machines: number; example: string }>();
    for (const shape of shapes) {
      if (shape.machines.length === 0) continue;
      const result = matchShape(member.spec, shape);
      if (result.ok) {
        matching += shape.machines.length;
        continue;
      }
      const tally = failing.get(result.term) ?? { machines: 0, example: result.reason };
      tally.machines += shape.machines.length;
      failing.set(result.term, tally);
    }
    if (matching === 0) reasons.push({ role: member.role, reason: noMatchReason(member.spec, failing, total) });
    else if (matching < member.count) {
      reasons.push({ role: member.role, reason: `only ${machines(matching)} match '${member.spec.text}', needs ${member.count}` });
    }
  }
  if (reasons.length > 0) return { ok: false, reasons };

  const solution = solve(
    prepare(
      members,
      shapes.map((shape) => ({ shape, from: 0 })),
    ),
  );
  if (solution.ok) return { ok: true };
  const roles = solution.members.map((index) => members[index].role);
  const demand = solution.members.reduce((sum, index) => sum + members[index].count, 0);
  const reason = `${roles.join(', ')} together need ${machines(demand)}, but only ${machines(solution.supply)} match any of them`;
  return { ok: false, reasons: roles.map((role) => ({ role, reason })) };
}

const machines = (count: number) => `${count} machine${count === 1 ? '' : 's'}`;

function noMatchReason(spec: Spec, failing: Map<Term, { machines: number; example: string }>, total: number): string {
  if (total === 0) return 'there are no machines in the inventory';
  let worst: [Term, { machines: number; example: string }] | undefined;
  for (const term of spec.terms) {
    const tally = failing.get(term);
    if (tally && (!worst || tally.machines > worst[1].machines)) worst = [term, tally];
  }
  const [term, tally] = worst!;
  const share = tally.machines === total ? `all ${machines(total)}` : `${tally.machines} of ${machines(total)}`;
  return `no machine matches '${spec.text}': ${share} fail ${formatTerm(term)} (e.g. ${tally.example})`;
}

interface Gang {
  members: readonly GangMember[];
  /** The shapes with free machines that some member matches, sorted by key. */
  shapes: FreeShape[];
  /** Free machines per shape. */
  free: number[];
  /** Per member, the indices of the shapes it matches, best fit first. */
  preference: number[][];
}

function prepare(members: readonly GangMember[], free: readonly FreeShape[]): Gang {
  const candidates = free.filter((entry) => entry.shape.machines.length > entry.from).sort((a, b) => byText(a.shape.key, b.shape.key));
  const shapes: FreeShape[] = [];
  const matchedBy: boolean[][] = [];
  for (const entry of candidates) {
    const row = members.map((member) => matchShape(member.spec, entry.shape).ok);
    if (!row.includes(true)) continue;
    shapes.push(entry);
    matchedBy.push(row);
  }
  const matchers = matchedBy.map((row) => row.filter(Boolean).length);
  // The health score (a capacity the scheduler sets, health.ts) is no size: of two shapes alike but
  // for it, the healthier goes first.
  const size = shapes.map((entry) => Object.entries(entry.shape.capacities).reduce((sum, [key, value]) => (key === 'health' ? sum : sum + value), 0));
  const health = shapes.map((entry) => entry.shape.capacities.health ?? 1);
  const order = shapes
    .map((_, index) => index)
    .sort((a, b) => matchers[a] - matchers[b] || size[a] - size[b] || health[b] - health[a] || byText(shapes[a].shape.key, shapes[b].shape.key));
  return {
    members,
    shapes,
    free: shapes.map((entry) => entry.shape.machines.length - entry.from),
    preference: members.map((_, member) => order.filter((shape) => matchedBy[shape][member])),
  };
}

type Solution = { ok: true; flow: number[][] } | { ok: false; members: number[]; supply: number };

/**
 * flow[member][shape] = machines the member takes from the shape. On failure, `members` is a set
 * of members (including the one that could not be served) whose demand exceeds `supply`, all the
 * free machines that match any of them: the reason no assignment exists.
 */
function solve(gang: Gang): Solution {
  const flow = gang.members.map(() => new Array<number>(gang.shapes.length).fill(0));
  const left = gang.free.slice();
  for (let member = 0; member < gang.members.length; member++) {
    let need = gang.members[member].count;
    for (const shape of gang.preference[member]) {
      if (need <= 0) break;
      const take = Math.min(need, left[shape]);
      flow[member][shape] += take;
      left[shape] -= take;
      need -= take;
    }
    while (need > 0) {
      const path = findPath(gang, flow, left, member);
      if (!path.found) {
        const supply = path.shapes.reduce((sum, shape) => sum + gang.free[shape], 0);
        return { ok: false, members: path.members, supply };
      }
      need -= push(path, flow, left, member, need);
    }
  }
  return { ok: true, flow };
}

type Path = { found: true; end: number; reachedBy: number[]; cameFrom: number[] } | { found: false; members: number[]; shapes: number[] };

/**
 * Breadth-first search for an augmenting path from `start`: start → shape A (held by member B) →
 * B moves to shape C … → a shape with a free machine. `reachedBy[shape]` is the member that reaches
 * the shape; `cameFrom[member]` the shape that member gives machines up from.
 */
function findPath(gang: Gang, flow: number[][], left: number[], start: number): Path {
  const reachedBy = new Array<number>(gang.shapes.length).fill(-1);
  const cameFrom = new Array<number>(gang.members.length).fill(-1);
  const seen = new Array<boolean>(gang.members.length).fill(false);
  seen[start] = true;
  const queue = [start];
  for (let head = 0; head < queue.length; head++) {
    const member = queue[head];
    for (const shape of gang.preference[member]) {
      if (reachedBy[shape] !== -1) continue;
      reachedBy[shape] = member;
      if (left[shape] > 0) return { found: true, end: shape, reachedBy, cameFrom };
      for (let other = 0; other < gang.members.length; other++) {
        if (seen[other] || flow[other][shape] === 0) continue;
        seen[other] = true;
        cameFrom[other] = shape;
        queue.push(other);
      }
    }
  }
  const shapes = reachedBy.flatMap((member, shape) => (member === -1 ? [] : [shape]));
  return { found: false, members: queue.sort((a, b) => a - b), shapes };
}

/** Moves as many machines as the path allows (at most `need`) and returns how many. */
function push(path: Extract<Path, { found: true }>, flow: number[][], left: number[], start: number, need: number): number {
  let amount = Math.min(need, left[path.end]);
  for (let member = path.reachedBy[path.end]; member !== start;) {
    const shape = path.cameFrom[member];
    amount = Math.min(amount, flow[member][shape]);
    member = path.reachedBy[shape];
  }
  left[path.end] -= amount;
  let shape = path.end;
  for (;;) {
    const member = path.reachedBy[shape];
    flow[member][shape] += amount;
    if (member === start) break;
    shape = path.cameFrom[member];
    flow[member][shape] -= amount;
  }
  return amount;
}
