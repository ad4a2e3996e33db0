// The server half of the pull protocol (the worker half is in protocol/): lab-host agents and runner
// hosts dial out and long-poll for work, so no inbound connection to them is ever needed. A claim
// takes what there is now; if that is nothing, it waits up to the caller's limit for a wake (new
// work) and takes once more. A claim may name whose work it waits for (an agent's lab host): a wake
// for that name wakes only such claims and those that named none, so new work for one of 100 lab
// hosts does not send the 99 others back empty-handed to claim again. Stopping wakes every waiter,
// and no later claim waits.
export class LongPoll {
  /** Each waiting claim's wake, with the name it waits for work of (none: any work). */
  private readonly waiters = new Map<() => void, string | undefined>();
  private stopped = false;

  /**
   * `take` now; when it found nothing, waits up to `waitMs` for a wake (of work for `name`, when
   * given) and takes again, unless `retake` (asked after the wait) says no: the worker went away
   * while it waited, say.
   */
  async claim<T>(take: () => T[] | Promise<T[]>, waitMs: number, retake: () => boolean = () => true, name?: string): Promise<T[]> {
    const taken = await take();
    if (taken.length > 0 || waitMs <= 0 || this.stopped) return taken;
    await this.wait(waitMs, name);
    return retake() ? take() : [];
  }

  /** How many claims are waiting now. */
  get waiting(): number {
    return this.waiters.size;
  }

  /** New work (for `name` only, when given): the waiting claims it may be for take again. */
  wake(name?: string): void {
    for (const [wake, waitsFor] of [...this.waiters]) if (name === undefined || waitsFor === undefined || waitsFor === name) wake();
  }

  stop(): void {
    this.stopped = true;
    this.wake();
  }

  /** Resolves on a wake or after `ms`; either way the waiter is gone from the set. */
  private wait(ms: number, name: string | undefined): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.waiters.set(done, name);
    });
  }
}
