import { silentLogger } from '@urs/logging';
import { Registry } from '@urs/telemetry';
import { createCycleCompletion, type CycleCompletionDeps } from '../src/completion';

describe('createCycleCompletion', () => {
  it('should serve the counters its alerts read at 0 before their first event', () => {
    const metrics = new Registry({ processMetrics: false });
    // Nothing runs before a batch or a sweep: building it only registers its metrics.
    createCycleCompletion({
      ...({} as CycleCompletionDeps),
      topics: { vmsRiskScores: 'vms.risk-scores', vmsRiskSummary: 'vms.risk-summary' },
      logger: silentLogger,
      metrics,
    });
    // UrsTombstonesHeld and UrsSummarySweepFailing count their increase: a series appearing with its first
    // event would never show it.
    expect(metrics.expose()).toMatch(/^urs_vms_tombstones_held_total 0$/m);
    expect(metrics.expose()).toMatch(/^urs_summary_sweep_failures_total 0$/m);
  });
});
