// One queue per key: tasks for the same key run one at a time, in call order; different keys run
// side by side. Used wherever a shared thing must change one step at a time (an image's bytes, a
// user's quota, a static host's tenant keys). Below the API and the provisioners, so both use it.
/** Runs tasks one at a time per key, in call order; a key's queue is dropped when it empties. */
export class KeyedQueue {
  private readonly tails = new Map<string, Promise<unknown>>();

  run<T>(key: string, task: () => Promise<T>): Promise<T> {
    const result = (this.tails.get(key) ?? Promise.resolve()).then(task, task);
    const tail = result.catch(() => undefined);
    this.tails.set(key, tail);
    void tail.then(() => {
      if (this.tails.get(key) === tail) this.tails.delete(key);
    });
    return result;
  }
}
