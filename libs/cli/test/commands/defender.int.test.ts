import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRedisQuotaGate } from '@urs/defender';
import { type Simulator, startSimulator } from '@urs/simulator';
import { type TestRedis, createTestRedis, testInfra } from '@urs/testkit';
import { defenderCommand } from '../../src/commands/defender';
import { runCommand } from '../support/run';

describe('urs defender with Redis', () => {
  let sim: Simulator;
  let redis: TestRedis;
  let dir: string;

  beforeAll(async () => {
    sim = await startSimulator({ quotas: false });
    redis = createTestRedis();
    dir = mkdtempSync(join(tmpdir(), 'urs-cli-defender-'));
  });

  afterAll(async () => {
    await sim.close();
    await redis.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** A tenant of `size` devices in the simulator, and its app. */
  function newTenant(size: number) {
    const app = { azureTenantId: randomUUID(), clientId: randomUUID(), clientSecret: `Qx9~${randomUUID()}` };
    sim.addTenant({ azureTenantId: app.azureTenantId, apps: [app], fleet: { size, seed: 4 } });
    return app;
  }

  /** `urs defender <args>` for `app`, its secret in a file, against the simulator and the test's Redis. */
  function defender(app: ReturnType<typeof newTenant>, args: string[], env: Record<string, string> = {}) {
    const secretFile = join(dir, `secret-${app.azureTenantId}`);
    writeFileSync(secretFile, app.clientSecret);
    return runCommand(
      defenderCommand,
      [
        ...args,
        '--azure-tenant-id',
        app.azureTenantId,
        '--client-id',
        app.clientId,
        '--client-secret-file',
        secretFile,
      ],
      {
        env: {
          URS_DEFENDER_AUTHORITY_HOST: sim.baseUrl,
          URS_DEFENDER_API_BASE: sim.baseUrl,
          URS_DEFENDER_CA_FILE: sim.caFile,
          REDIS_URL: testInfra().redisUrl,
          URS_REDIS_PREFIX: redis.prefix,
          ...env,
        },
      },
    );
  }

  it('defenderCommand should share the pipeline’s limiter and quota through Redis under its prefix', async () => {
    const app = newTenant(12);
    const { code, stdout, stderr } = await defender(
      app,
      ['devices', '--with-vulnerabilities', '--vulnerabilities-mode', 'per-device'],
      { URS_DEFENDER_MAX_IN_FLIGHT: '7' },
    );
    expect(code).toBe(0);
    expect(stderr).not.toContain('not reachable');
    const records = stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { vulnerabilities: unknown });
    expect(records.length).toBeGreaterThan(0);
    expect(records.every((r) => Array.isArray(r.vulnerabilities))).toBe(true);
    const keys = await redis.client.keys(`*${redis.prefix}*`);
    expect(keys).toEqual(
      expect.arrayContaining([
        `${redis.prefix}defender:quota:${app.azureTenantId}:${app.clientId}:machines:60000`,
        `${redis.prefix}defender:quota:${app.azureTenantId}:${app.clientId}:vulnerabilities:60000`,
        `b_${redis.prefix}defender-api_settings`,
      ]),
    );
    // The run keeps the pipeline's limit as the services set it, not the limiter's default of 10.
    expect(await redis.client.hget(`b_${redis.prefix}defender-api_settings`, 'maxConcurrent')).toBe('7');
  });

  it('defenderCommand check of a tenant the pipeline’s quota holds back should say so at once, and for how long', async () => {
    const app = newTenant(3);
    // A 429's Retry-After of 10 minutes, recorded in Redis by a poller's call.
    await createRedisQuotaGate(redis.client, redis.prefix).block(app, 'machines', 600_000);
    const { code, stdout, stderr } = await defender(app, ['check']);
    expect(stderr).not.toContain('not reachable');
    expect(code).toBe(1);
    expect(stdout).toBe(
      `FAIL: Tenant ${app.azureTenantId}'s machines calls are held back by its API quota ` +
        "(Microsoft's limits, or a 429's Retry-After) for another 600 s\n",
    );
  }, 20_000);
});
