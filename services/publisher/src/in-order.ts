/**
 * Runs tasks of the same key one at a time, in the order they were asked for; tasks of other keys
 * run beside them. A task that fails lets the next one run.
 */
export interface InOrder {
  <T>(key: string, task: () => Promise<T>): Promise<T>;
  /**
   * As a call, but waits at most `waitMs` for the task's turn: undefined, the task not run, when the tasks
   * before it are not done by then (the tasks asked for after it still wait for those). Taking a place in
   * line, not only looking whether the key is free: a key whose tasks follow each other without a gap (a
   * backlog of them, two at a time) still gets its turn after the ones under way.
   */
  within<T>(key: string, waitMs: number, task: () => Promise<T>): Promise<T | undefined>;
}

/** Whether `previous` settles within `waitMs`. */
function settlesWithin(previous: Promise<void>, waitMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), waitMs);
    void previous.then(() => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

export function createInOrder(): InOrder {
  const tails = new Map<string, Promise<void>>();
  /** Takes the key's next place: `previous` settles once the tasks before are done, `leave` lets the next go. */
  const place = (key: string): { previous: Promise<void> | undefined; leave: () => void } => {
    const previous = tails.get(key);
    let release!: () => void;
    const tail = new Promise<void>((resolve) => (release = resolve));
    tails.set(key, tail);
    const leave = (): void => {
      release();
      if (tails.get(key) === tail) tails.delete(key);
    };
    return { previous, leave };
  };
  const inOrder = async <T>(key: string, task: () => Promise<T>): Promise<T> => {
    const { previous, leave } = place(key);
    try {
      if (previous) await previous;
      return await task();
    } finally {
      leave();
    }
  };
  const within = async <T>(key: string, waitMs: number, task: () => Promise<T>): Promise<T | undefined> => {
    const { previous, leave } = place(key);
    if (previous && !(await settlesWithin(previous, waitMs))) {
      // Given up: the place is left once the tasks before it are done, so the ones after it still wait for them.
      void previous.then(leave);
      return undefined;
    }
    try {
      return await task();
    } finally {
      leave();
    }
  };
  return Object.assign(inOrder, { within });
}
