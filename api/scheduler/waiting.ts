// Which queued requests a scheduling pass must look at. A request is "untried" until a pass finds
// that it does not fit; then it waits on the shapes its members match, and only a machine of one of
// those shapes becoming free (or room opening in its pool) makes it untried again. A pass therefore
// tries the untried requests (new ones, woken ones), and of the starving ones that wait only those
// that can hold machines back from the rest (grants.ts), not the whole queue: a long queue of
// requests that cannot fit costs a pass nothing while nothing they could use frees up.
export class WaitingRequests {
  /** Requests a pass should try. */
  readonly untried = new Set<string>();
  /** Per request found unfit, the shape keys it waits on. */
  private readonly waitsOn = new Map<string, readonly string[]>();
  /** Per shape key, the unfit requests waiting on it. */
  private readonly byShape = new Map<string, Set<string>>();

  /** A new request, or one back in the queue: the next pass tries it. */
  add(id: string): void {
    this.unwait(id);
    this.untried.add(id);
  }

  /** The request left the queue (granted, cancelled, expired). */
  delete(id: string): void {
    this.unwait(id);
    this.untried.delete(id);
  }

  /** Everything forgotten (after a rollback, before the queue is put back). */
  clear(): void {
    this.untried.clear();
    this.waitsOn.clear();
    this.byShape.clear();
  }

  isUnfit(id: string): boolean {
    return this.waitsOn.has(id);
  }

  /** A pass found the request does not fit: it waits until one of `shapes` gains a free machine. */
  unfit(id: string, shapes: readonly string[]): void {
    this.untried.delete(id);
    this.unwait(id);
    this.waitsOn.set(id, shapes);
    for (const key of shapes) {
      let waiting = this.byShape.get(key);
      if (!waiting) this.byShape.set(key, (waiting = new Set()));
      waiting.add(id);
    }
  }

  /** The requests found unfit that wait on the shape. */
  waitingOn(shape: string): ReadonlySet<string> {
    return this.byShape.get(shape) ?? noRequests;
  }

  /** These shapes gained a free machine (or pool room): every request waiting on one is untried again. */
  wake(shapes: Iterable<string>): void {
    for (const key of shapes) {
      for (const id of [...(this.byShape.get(key) ?? [])]) this.add(id);
    }
  }

  /** Every request found unfit is untried again (a shape appeared that they may match). */
  wakeAll(): void {
    for (const id of [...this.waitsOn.keys()]) this.add(id);
  }

  private unwait(id: string): void {
    for (const key of this.waitsOn.get(id) ?? []) {
      const waiting = this.byShape.get(key);
      waiting?.delete(id);
      if (waiting?.size === 0) this.byShape.delete(key);
    }
    this.waitsOn.delete(id);
  }
}

const noRequests: ReadonlySet<string> = new Set();
