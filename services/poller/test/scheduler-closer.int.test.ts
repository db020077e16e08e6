import type { ConsumerRunner, RunnerState } from '@urs/bus';
import { startService } from '@urs/runtime';
import { createTestKafka, deleteTopics, serviceEnv, uniqueId, waitFor } from '@urs/testkit';
import { schedulerCloser } from '../src/scheduler-closer';
import { stageTopics } from '../src/topics';
import {
  feed,
  memorySchedules,
  memoryStatus,
  oneDeviceListed,
  record,
  sleep,
  testScheduler,
} from './support/scheduler';

// The poller's scheduler in the runtime's stop: the runtime closes the runners first (the consumer of
// urs.tenants leaving its group, up to URS_SHUTDOWN_TIMEOUT_MS when Kafka is slow) and the service's closers
// only then. A cycle begun meanwhile is cut by the drain and left running, for another replica to take over as
// abandoned and list again.

/** A runner of urs.tenants whose close lasts until `closed()` is called. */
function slowClosingRunner(): { runner: ConsumerRunner; closing: () => boolean; closed: () => void } {
  let state: RunnerState = 'created';
  let closing = false;
  let closed = (): void => undefined;
  const done = new Promise<void>((resolve) => (closed = resolve));
  const runner: ConsumerRunner = {
    get state() {
      return state;
    },
    get startedOnce() {
      return state !== 'created';
    },
    async start() {
      state = 'running';
    },
    isReady: () => state === 'running',
    failed: () => new Promise<Error>(() => undefined),
    async close() {
      closing = true;
      await done;
      state = 'closed';
    },
  };
  return { runner, closing: () => closing, closed: () => closed() };
}

describe('schedulerCloser', () => {
  it('should begin no cycle from the instant the service stops, while its runners still close', async () => {
    const prefix = `${uniqueId('poll-stop')}.`;
    const slow = slowClosingRunner();
    const schedules = memorySchedules();
    const begin = schedules.begin.bind(schedules);
    /** Each cycle begun, and whether the service was stopping then. */
    const begun: { tenantId: string; stopping: boolean }[] = [];
    let stopping: AbortSignal | undefined;
    schedules.begin = async (lease, ...rest) => {
      begun.push({ tenantId: lease.tenantId, stopping: stopping?.aborted === true });
      return begin(lease, ...rest);
    };
    const { table, scheduler } = testScheduler({
      schedules,
      tenants: memoryStatus(),
      runCycle: async () => oneDeviceListed(Date.now()),
    });
    const closeScheduler = scheduler.close.bind(scheduler);
    /** Whether the scheduler's close began while the runner was still closing. */
    let closedBeforeRunner: boolean | undefined;
    scheduler.close = (drainMs) => {
      closedBeforeRunner ??= slow.closing() && slow.runner.state !== 'closed';
      return closeScheduler(drainMs);
    };
    const service = await startService({
      name: 'poller',
      env: serviceEnv(prefix),
      topics: stageTopics,
      setup: async (context) => {
        stopping = context.stopping;
        return {
          runners: [slow.runner],
          start: async () => scheduler.start(),
          closers: [schedulerCloser(scheduler, context.stopping, 1_000)],
        };
      },
    });
    const kafka = createTestKafka();
    try {
      await feed(table, [record('a')]);
      await waitFor(() => begun.length > 0, { description: "tenant a's first cycle" });
      const closed = service.close();
      await waitFor(() => slow.closing(), { description: 'the runner closing' });
      // A tenant registered while the runner closes, due at once, and tenant a due again every 100 ms.
      await feed(table, [record('b')], { n: 1 });
      await sleep(300);
      slow.closed();
      expect(await closed).toBe(true);
      expect(begun.filter((cycle) => cycle.stopping)).toEqual([]);
      expect(closedBeforeRunner).toBe(true);
    } finally {
      slow.closed();
      await service.close();
      const admin = kafka.admin();
      await admin.connect();
      const topics = (await admin.listTopics()).filter((topic) => topic.startsWith(prefix));
      await admin.disconnect();
      await deleteTopics(kafka, topics);
    }
  });
});
