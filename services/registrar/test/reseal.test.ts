import { silentLogger } from '@urs/logging';
import { UrsError } from '@urs/resilience';
import { createSecretSealer } from '@urs/secrets';
import { Registry } from '@urs/telemetry';
import { capturingLogger, type LogLine } from '@urs/testkit';
import { createSecretResealer } from '../src/reseal';
import { memoryPublisher, memoryTenantStore, tenantRecord, testRegistry } from './fakes';

describe('createSecretResealer', () => {
  it('pass should count a secret of a key this registrar does not hold, warn of it once and write nothing', async () => {
    const tenants = memoryTenantStore();
    const publisher = memoryPublisher();
    const retired = createSecretSealer({ activeKeyId: 'k9', keys: new Map([['k9', Buffer.alloc(32, 5)]]) });
    await tenants.put({
      ...tenantRecord('acme', 1),
      defender: { ...tenantRecord('acme', 1).defender, clientSecret: retired.seal('Plain~acme', 'acme') },
    });
    const sealer = createSecretSealer({ activeKeyId: 'k1', keys: new Map([['k1', Buffer.alloc(32, 7)]]) });
    const registry = testRegistry({ tenants, publisher, sealer });
    const lines: LogLine[] = [];
    const metrics = new Registry({ processMetrics: false });
    const resealer = createSecretResealer({
      tenants,
      registry,
      sealer,
      keyIds: new Set(['k1']),
      ready: async () => undefined,
      activeKeyProven: async () => true,
      metrics,
      logger: capturingLogger(lines),
      batch: 10,
    });
    expect(await resealer.pass()).toEqual({ retired: 1, resealed: {} });
    expect(await resealer.pass()).toEqual({ retired: 1, resealed: {} });
    expect(metrics.expose()).toMatch(/^urs_secrets_on_retired_keys 1$/m);
    expect(publisher.sent).toEqual([]);
    expect(lines.filter((line) => line.level === 'warn')).toEqual([
      expect.objectContaining({
        message: 'stored secret sealed with a key this registrar does not hold: not re-sealed',
        tenantId: 'acme',
        keyId: 'k9',
      }),
    ]);
    expect(JSON.stringify(lines)).not.toContain('Plain~acme');
  });

  it('pass should re-seal nothing with an active key not proven, and say so once', async () => {
    const tenants = memoryTenantStore();
    const publisher = memoryPublisher();
    const old = createSecretSealer({ activeKeyId: 'k0', keys: new Map([['k0', Buffer.alloc(32, 5)]]) });
    const record = tenantRecord('acme', 1);
    await tenants.put({
      ...record,
      defender: { ...record.defender, clientSecret: old.seal('Plain~acme', 'acme') },
    });
    const sealer = createSecretSealer({
      activeKeyId: 'k1',
      keys: new Map([
        ['k1', Buffer.alloc(32, 7)],
        ['k0', Buffer.alloc(32, 5)],
      ]),
    });
    let proven = false;
    const lines: LogLine[] = [];
    const metrics = new Registry({ processMetrics: false });
    const resealer = createSecretResealer({
      tenants,
      registry: testRegistry({ tenants, publisher, sealer }),
      sealer,
      keyIds: new Set(['k1', 'k0']),
      ready: async () => undefined,
      activeKeyProven: async () => proven,
      metrics,
      logger: capturingLogger(lines),
      batch: 10,
    });
    expect(await resealer.pass()).toEqual({ retired: 1, resealed: {} });
    expect(await resealer.pass()).toEqual({ retired: 1, resealed: {} });
    expect(publisher.sent).toEqual([]);
    expect(metrics.expose()).toMatch(/^urs_secrets_on_retired_keys 1$/m);
    expect(lines.filter((line) => line.level === 'warn')).toEqual([
      expect.objectContaining({
        message: 'stored secrets not re-sealed: the active key is not proven yet',
        keyId: 'k1',
      }),
    ]);
    proven = true;
    expect(await resealer.pass()).toEqual({ retired: 0, resealed: { k0: 1 } });
  });

  it('pass should leave a tenant whose lock stays held, or is lost, to a later pass and re-seal the others', async () => {
    const tenants = memoryTenantStore();
    const old = createSecretSealer({ activeKeyId: 'k0', keys: new Map([['k0', Buffer.alloc(32, 5)]]) });
    for (const tenantId of ['busy', 'calm', 'lost']) {
      const record = tenantRecord(tenantId, 1);
      await tenants.put({
        ...record,
        defender: { ...record.defender, clientSecret: old.seal(`Plain~${tenantId}`, tenantId) },
      });
    }
    const sealer = createSecretSealer({
      activeKeyId: 'k1',
      keys: new Map([
        ['k1', Buffer.alloc(32, 7)],
        ['k0', Buffer.alloc(32, 5)],
      ]),
    });
    const asked: string[] = [];
    const metrics = new Registry({ processMetrics: false });
    const resealer = createSecretResealer({
      tenants,
      registry: {
        reseal: async (tenantId) => {
          asked.push(tenantId);
          if (tenantId === 'busy')
            throw new UrsError('TENANT_BUSY', 'tenant busy is being written by another request', {
              canRetry: true,
            });
          if (tenantId === 'lost')
            throw new UrsError('TENANT_LOCK_LOST', 'the write lock of tenant lost lapsed', {
              canRetry: true,
            });
          return { outcome: 'resealed', fromKeyId: 'k0', record: tenantRecord(tenantId, 2) };
        },
      },
      sealer,
      keyIds: new Set(['k0', 'k1']),
      ready: async () => undefined,
      activeKeyProven: async () => true,
      metrics,
      logger: silentLogger,
      batch: 10,
    });
    expect(await resealer.pass()).toEqual({ retired: 2, resealed: { k0: 1 } });
    expect(asked.sort()).toEqual(['busy', 'calm', 'lost']);
    expect(metrics.expose()).toMatch(/^urs_secrets_on_retired_keys 2$/m);
  });
});
