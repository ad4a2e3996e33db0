// Queue policy: in which order waiting requests are served, and what one scheduling pass grants.
// Pure functions of (queue, free machines, now, policy, room left in limited pools); nothing here
// mutates its inputs.
import { allocateFree, matchShape, type FreeShape, type GangMember, type Shape } from './allocate.js';

export interface QueuePolicy {
  /** One step of priority per this many seconds waited (0 or less: no aging). */
  agingSeconds: number;
  /** After waiting this long a request is starving and holds back the machines it could use. */
  starvationSeconds: number;
}

export interface QueuedRequest {
  id: string;
  priority: number;
  createdAtMs: number;
  members: readonly GangMember[];
}

export interface Grant {
  id: string;
  /** Per member, in request order, the machine names it gets. */
  machines: string[][];
}

/**
 * The queue rule.
 *
 * - Effective priority = priority + floor(seconds waited / agingSeconds): a request gains one step
 *   of priority for every agingSeconds it waits, so a low-priority request is not passed over
 *   forever by a steady flow of higher ones.
 * - The queue is ordered by effective priority, highest first; then the request made earlier goes
 *   first; then the lower id (so the order is total and never depends on input order).
 * - A scheduling pass walks the queue in that order and grants each request that the still-free
 *   machines can satisfy in full. A request that cannot be granted lets later ones through
 *   (backfill), until it has waited starvationSeconds. From then on it is starving: the free
 *   machines that match any of its members are held back from every request after it in the
 *   order, so the machines it needs pile up for it and a large gang is not starved forever by a
 *   stream of small requests. Held machines stay free (no request holds machines while it waits),
 *   so gangs cannot deadlock one another.
 */
export function effectivePriority(request: QueuedRequest, nowMs: number, policy: QueuePolicy): number {
  if (!(policy.agingSeconds > 0)) return request.priority;
  return request.priority + Math.floor(waitedMs(request, nowMs) / (policy.agingSeconds * 1000));
}

/** Whether the request has waited starvationSeconds or more (see effectivePriority). */
export function isStarving(request: QueuedRequest, nowMs: number, policy: QueuePolicy): boolean {
  return waitedMs(request, nowMs) >= policy.starvationSeconds * 1000;
}

const waitedMs = (request: QueuedRequest, nowMs: number) => Math.max(0, nowMs - request.createdAtMs);

/** A new array of the requests in queue order (see effectivePriority for the rule). */
export function queueOrder<T extends QueuedRequest>(requests: readonly T[], nowMs: number, policy: QueuePolicy): T[] {
  return requests
    .map((request) => ({ request, effective: effectivePriority(request, nowMs, policy) }))
    .sort((a, b) => b.effective - a.effective || byAgeThenId(a.request, b.request))
    .map((entry) => entry.request);
}

/** Whether `a` is served before `b`: the order of queueOrder, for one pair (no sort of the queue). */
export function comesBefore(a: QueuedRequest, b: QueuedRequest, nowMs: number, policy: QueuePolicy): boolean {
  return (effectivePriority(b, nowMs, policy) - effectivePriority(a, nowMs, policy) || byAgeThenId(a, b)) < 0;
}

const byAgeThenId = (a: QueuedRequest, b: QueuedRequest) => a.createdAtMs - b.createdAtMs || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);

/**
 * One pass over the queue (see effectivePriority for the rule): the requests granted, in the order
 * they were granted, each with its machines. Machines granted to one request are not offered to
 * the ones after it.
 */
export function schedulePass(
  queue: readonly QueuedRequest[],
  shapes: readonly Shape[],
  nowMs: number,
  policy: QueuePolicy,
  room?: ReadonlyMap<string, number>,
): { grants: Grant[] } {
  return { grants: scheduleQueue(queue, shapes, nowMs, policy, { room }).grants };
}

/**
 * schedulePass, told which requests are known not to fit and telling which do not.
 *
 * `unfit`: requests known not to fit in the free machines given (they failed against these same
 * free machines and pool room, or more, in an earlier pass): their gang allocation is not run
 * again; a starving one still holds back the machines it could use. The answer's `unfit` lists
 * those and every request that failed with nothing held back from it: none of them fits in what
 * is left free after the grants either, since a pass only ever takes machines away. Feed them back
 * while the free machines and pool room stay as they are after this pass, or shrink.
 */
export function scheduleQueue(
  queue: readonly QueuedRequest[],
  shapes: readonly Shape[],
  nowMs: number,
  policy: QueuePolicy,
  options: { room?: ReadonlyMap<string, number> | undefined; unfit?: ReadonlySet<string> } = {},
): { grants: Grant[]; unfit: string[] } {
  const { room, unfit = new Set<string>() } = options;
  const grants: Grant[] = [];
  const stillUnfit: string[] = [];
  const pool = new Map<string, FreeShape>(shapes.map((shape) => [shape.key, { shape, from: 0 }]));
  const held = new Set<string>();
  const left = new Map(room ?? []);
  const hasRoom = (shape: Shape) => {
    const name = poolOf(shape, left);
    return name === undefined || left.get(name)! > 0;
  };
  const offeredNow = () => [...pool.values()].filter((entry) => !held.has(entry.shape.key) && entry.from < entry.shape.machines.length && hasRoom(entry.shape));
  for (const request of queueOrder(queue, nowMs, policy)) {
    const known = unfit.has(request.id);
    const starving = isStarving(request, nowMs, policy);
    if (known && !starving) {
      stillUnfit.push(request.id);
      continue;
    }
    const offered = offeredNow();
    let granted = known || offered.length === 0 ? null : allocateFree(request.members, offered);
    if (granted && room) {
      const wanted = poolUse(granted.taken, pool, left);
      if ([...wanted].some(([name, count]) => count > left.get(name)!)) granted = null;
      else for (const [name, count] of wanted) left.set(name, left.get(name)! - count);
    }
    if (granted) {
      for (const [key, count] of granted.taken) {
        const entry = pool.get(key)!;
        pool.set(key, { shape: entry.shape, from: entry.from + count });
      }
      grants.push({ id: request.id, machines: granted.machines });
      continue;
    }
    if (known || held.size === 0) stillUnfit.push(request.id);
    if (starving) {
      for (const entry of offered) {
        if (request.members.some((member) => matchShape(member.spec, entry.shape).ok)) held.add(entry.shape.key);
      }
    }
  }
  return { grants, unfit: stillUnfit };
}

/** The limited pool a shape belongs to (its `pool` label), if any. */
export function poolOf(shape: Shape, limits: ReadonlyMap<string, number>): string | undefined {
  const name = shape.labels.pool;
  return name !== undefined && limits.has(name) ? name : undefined;
}

/** Machines taken per limited pool. */
function poolUse(taken: ReadonlyMap<string, number>, shapes: ReadonlyMap<string, FreeShape>, limits: ReadonlyMap<string, number>): Map<string, number> {
  const use = new Map<string, number>();
  for (const [key, count] of taken) {
    const name = poolOf(shapes.get(key)!.shape, limits);
    if (name !== undefined) use.set(name, (use.get(name) ?? 0) + count);
  }
  return use;
}
