/** How a task asks for its slot (limiter.ts's ScheduleOptions says what each option does). */
export interface SlotOptions {
  wholeSlot?: boolean;
  signal?: AbortSignal | undefined;
  degraded?: AbortSignal | undefined;
  degradedPlaced?: (() => void) | undefined;
}

/**
 * The slots of calls in flight: the shape of limiter.ts's CallLimiter, said once here for the wrappers around it
 * (handoff.ts, bulk-cap.ts) so that they and limiter.ts do not import each other.
 */
export interface Slots {
  /**
   * `slotEnds` aborts when the slot must go back: the task's call must stop then. A `wholeSlot` task (one
   * with no deadline of its own, running until its slot ends) starts only in a slot no call held before it.
   */
  schedule<T>(task: (slotEnds: AbortSignal) => Promise<T>, options?: SlotOptions): Promise<T>;
  close(): Promise<void>;
  /**
   * Whether this process may keep a slot whose lease ended: no other process waits for one, and the shared
   * count still holds the `held` slots this process has (after a loss of the limiter's keys it does not).
   * Without it, a lease always goes back when it ends.
   */
  mayKeep?(held: number): Promise<boolean>;
}
