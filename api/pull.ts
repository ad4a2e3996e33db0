// The server half of the pull protocol (the worker half is in protocol/): lab-host agents and runner
// hosts dial out and long-poll for work, so no inbound connection to them is ever needed. A claim
// takes what there is now; if that is nothing, it waits up to the caller's limit for a wake (new
// work) and takes once more. Stopping wakes every waiter, and no later claim waits.
export class LongPoll {
  private readonly waiters = new Set<() => void>();
  private stopped = false;

  /**
   * `take` now; when it found nothing, waits up to `waitMs` for a wake and takes again, unless
   * `retake` (asked after the wait) says no: the worker went away while it waited, say.
   */
  async claim<T>(take: () => T[] | Promise<T[]>, waitMs: number, retake: () => boolean = () => true): Promise<T[]> {
    const taken = await take();
    if (taken.length > 0 || waitMs <= 0 || this.stopped) return taken;
    await this.wait(waitMs);
    return retake() ? take() : [];
  }

  /** How many claims are waiting now. */
  get waiting(): number {
    return this.waiters.size;
  }

  /** New work: every waiting claim takes again. */
  wake(): void {
    for (const wake of [...this.waiters]) wake();
  }

  stop(): void {
    this.stopped = true;
    this.wake();
  }

  /** Resolves on a wake or after `ms`; either way the waiter is gone from the set. */
  private wait(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.waiters.add(done);
    });
  }
}
