import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { testInfra, uniqueId, waitFor } from '@urs/testkit';
// The process harness of the poller's and the registrar's end-to-end suites.
import {
  freePort,
  health,
  secretKey,
  spawnService,
  type ServiceProcess,
} from '../../services/poller/test/support/services';

const ROOT = join(__dirname, '..', '..');
const STAGES = ['registrar', 'poller', 'vuln-fetcher'] as const;

// The stages that call Defender, started with no tenant: UrsDefenderCallsHeldBack (increase() over the
// held-back count) sees a first hold-back only when the series was served before it.
describe('registrar, poller, vuln-fetcher: Defender call metrics at start', () => {
  const started: ServiceProcess[] = [];

  beforeAll(() => {
    execFileSync(
      process.execPath,
      [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-b', ...STAGES.map((s) => `services/${s}`)],
      { cwd: ROOT, stdio: 'pipe' },
    );
  }, 180_000);

  afterAll(async () => {
    await Promise.all(started.map((stage) => stage.kill()));
  });

  it("should serve each endpoint's held-back count at 0 once ready, before any Defender client is made", async () => {
    const stages = await Promise.all(
      STAGES.map(async (name) => {
        const port = await freePort();
        const stage = spawnService(name, {
          KAFKA_BROKERS: testInfra().kafkaBrokers.join(','),
          REDIS_URL: testInfra().redisUrl,
          URS_REDIS_PREFIX: `${uniqueId('defender-metrics')}:`,
          URS_TOPIC_PREFIX: `${uniqueId('dm')}.`,
          URS_METRICS_PORT: String(port),
          URS_HTTP_PORT: String(await freePort()),
          URS_API_TOKENS: 'token-of-the-defender-metrics-test',
          URS_SECRET_KEY: secretKey(),
          URS_SHUTDOWN_TIMEOUT_MS: '15000',
        });
        started.push(stage);
        return { stage, port };
      }),
    );
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
