/**
 * Runs tasks of the same key one at a time, in the order they were asked for; tasks of other keys
 * run beside them. A task that fails lets the next one run.
 */
export type InOrder = <T>(key: string, task: () => Promise<T>) => Promise<T>;

export function createInOrder(): InOrder {
  const tails = new Map<string, Promise<void>>();
  return async (key, task) => {
    const previous = tails.get(key);
    let release!: () => void;
    const tail = new Promise<void>((resolve) => (release = resolve));
    tails.set(key, tail);
    try {
      if (previous) await previous;
      return await task();
    } finally {
      release();
      if (tails.get(key) === tail) tails.delete(key);
    }
  };
}
