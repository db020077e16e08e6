import type { AnsweredCall } from '@urs/store';
import { waitFor } from '@urs/testkit';
import { batch, memoryAnswers, message, setup } from './handler-support';

// A per-device batch's answered calls are written to Redis together, not one write per call.

/** The batch's answers as the store was given them, one array per write. */
function countingAnswers() {
  const answers = memoryAnswers();
  const writes: string[][] = [];
  return {
    writes,
    answers: {
      ...answers,
      async keep(tenantId: string, cycleId: string, batchIndex: number, calls: readonly AnsweredCall[]) {
        writes.push(calls.map((call) => call.deviceId));
        return answers.keep(tenantId, cycleId, batchIndex, calls);
      },
    },
  };
}

const devices = (count: number) => Array.from({ length: count }, (_, i) => ({ id: `d${i + 1}` }));

describe('createEnrichHandler writing a per-device batch’s answered calls', () => {
  it('should write the calls answered within a moment together, in one write', async () => {
    const { answers, writes } = countingAnswers();
    const { handler, sent } = setup({ machineVulnerabilities: async () => [] }, { answers });
    await handler(message(batch({ devices: devices(40), totalDevices: 40 })));
    expect(sent).toHaveLength(1);
    expect(writes).toHaveLength(1);
    expect(writes[0]).toHaveLength(40);
  });

  it('should write the answers had so far while later calls are still waited for', async () => {
    const { answers, writes } = countingAnswers();
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    const { handler, sent } = setup(
      {
        machineVulnerabilities: async (id) => {
          if (id === 'd3') await released;
          return [];
        },
      },
      { answers, concurrency: 1 },
    );
    const handled = handler(message(batch()));
    // d1 and d2 answered, d3's call hanging: their answers reach the store without waiting for it.
    await waitFor(() => writes.length > 0, { description: 'the first write' });
    expect(writes).toEqual([['d1', 'd2']]);
    release();
    await handled;
    expect(writes).toEqual([['d1', 'd2'], ['d3']]);
    expect(sent).toHaveLength(1);
  });
});
