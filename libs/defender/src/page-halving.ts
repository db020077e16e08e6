import { timedOut } from './answers';

/**
 * Reads one page at `pageSize` rows (`read`'s first argument). A page that runs out of time (`timedOut`: no
 * whole answer within the request timeout, or cut at its call slot's end) is asked for again at once with half
 * the rows, not below `minPageSize`, and `halved` is told each smaller size, which the caller keeps for the
 * rest of its read; a page of `minPageSize` rows or fewer is retried as any call is (`read`'s `onTimeout`).
 * Otherwise every attempt would run out of time alike, each a call of the quota, and the read never end.
 */
export async function readHalvingOnTimeout<T>(
  pageSize: number,
  minPageSize: number,
  read: (pageSize: number, onTimeout: 'retry' | 'throw') => Promise<T>,
  halved: (pageSize: number) => void,
): Promise<T> {
  let size = pageSize;
  for (;;) {
    const halvable = size > minPageSize;
    try {
      return await read(size, halvable ? 'throw' : 'retry');
    } catch (error) {
      if (!halvable || !timedOut(error)) throw error;
      size = Math.max(minPageSize, Math.floor(size / 2));
      halved(size);
    }
  }
}
