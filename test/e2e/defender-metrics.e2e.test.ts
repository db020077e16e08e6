import { waitFor } from '@urs/testkit';
// The process harness of the poller's and the registrar's end-to-end suites.
import { health, startStages, type ServiceProcess } from '../../services/poller/test/support/services';
import { buildServices } from '../../services/poller/test/support/stack';

const STAGES = ['registrar', 'poller', 'vuln-fetcher'] as const;

// The stages that call Defender, started with no tenant: UrsDefenderCallsHeldBack (increase() over the
// held-back count) sees a first hold-back only when the series was served before it.
describe('registrar, poller, vuln-fetcher: Defender call metrics at start', () => {
  const started: ServiceProcess[] = [];

  beforeAll(() => buildServices(STAGES), 180_000);

  afterAll(async () => {
    await Promise.all(started.map((stage) => stage.kill()));
  });

  it("should serve each endpoint's held-back count at 0 once ready, before any Defender client is made", async () => {
    const stages = await startStages(STAGES, 'defender-metrics', {}, started);
    for (const { stage, port } of stages) {
      await waitFor(async () => (await health(port, '/readyz'))?.status === 200, {
        timeoutMs: 60_000,
        description: `${stage.name} /readyz answering 200`,
      });
      const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      for (const endpoint of ['machines', 'vulnerabilities', 'bulk', 'exportFiles'])
        expect(text).toContain(`urs_defender_calls_total{endpoint="${endpoint}",status="held-back"} 0`);
    }
    for (const { stage } of stages) {
      await stage.stop();
      expect(stage.process.exitCode).toBe(0);
    }
  }, 120_000);
});
