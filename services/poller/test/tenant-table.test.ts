import type { InboundMessage } from '@urs/bus';
import type { TenantRecord } from '@urs/contracts';
import { inboundMessage } from '@urs/testkit';
import { createTenantTable } from '../src/tenant-table';

const record = (tenantId: string, revision: number, enabled = true) =>
  ({ tenantId, revision, enabled }) as unknown as TenantRecord;
const message = (
  key: string,
  value: TenantRecord | null,
  offset: number,
  partition = 0,
): InboundMessage<TenantRecord> =>
  inboundMessage(value, { topic: 'urs.tenants', partition, offset: String(offset), key });

describe('createTenantTable', () => {
  it('handle should keep the newest revision and drop a tenant on a tombstone', async () => {
    const table = createTenantTable();
    const changes: [string, number | null][] = [];
    table.onChange((id, r) => changes.push([id, r?.revision ?? null]));
    await table.handle(message('a', record('a', 2), 0));
    await table.handle(message('a', record('a', 1), 1));
    await table.handle(message('b', record('b', 1, false), 2));
    expect(table.get('a')?.revision).toBe(2);
    expect(table.enabled().map((r) => r.tenantId)).toEqual(['a']);
    await table.handle(message('a', null, 3));
    expect(table.get('a')).toBeUndefined();
    expect(changes).toEqual([
      ['a', 2],
      ['b', 1],
      ['a', null],
    ]);
  });

  it('handle should not let a record older than a deletion bring the tenant back', async () => {
    const table = createTenantTable();
    await table.handle(message('a', record('a', 2), 0));
    await table.handle({ ...message('a', null, 1), headers: { 'urs-revision': Buffer.from('5') } });
    await table.handle(message('a', record('a', 4), 2));
    expect(table.get('a')).toBeUndefined();
    await table.handle(message('a', record('a', 6), 3));
    expect(table.get('a')?.revision).toBe(6);
    // A deletion older than the record held is ignored.
    await table.handle({ ...message('a', null, 4), headers: { 'urs-revision': Buffer.from('3') } });
    expect(table.get('a')?.revision).toBe(6);
  });

  it('caughtUp should wait for every partition to reach the offsets present at start', async () => {
    const table = createTenantTable();
    expect(table.caughtUp()).toBe(false);
    await table.handle(message('a', record('a', 1), 4, 1));
    table.expectEnd(
      new Map([
        [0, 2n],
        [1, 4n],
      ]),
    );
    expect(table.caughtUp()).toBe(false);
    await table.handle(message('b', record('b', 1), 2, 0));
    expect(table.caughtUp()).toBe(true);
    const stuck = createTenantTable();
    stuck.expectEnd(new Map([[0, 9n]]));
    expect(stuck.caughtUp()).toBe(false);
    expect(stuck.stopWaiting()).toBe(1);
    expect(stuck.caughtUp()).toBe(true);
    const empty = createTenantTable();
    empty.expectEnd(new Map());
    expect(empty.caughtUp()).toBe(true);
  });

  it("subscription should count a record dead-lettered as read, so that a partition's last does not hold the table", async () => {
    const table = createTenantTable();
    const subscription = table.subscription('urs.tenants');
    await subscription.handler(message('a', record('a', 1), 0));
    table.expectEnd(new Map([[0, 1n]]));
    // Offset 1 failed validation: the runner dead-letters it, its handler never sees it.
    await subscription.deadLettering?.({
      topic: 'urs.tenants',
      partition: 0,
      offset: '1',
      key: 'b',
      payload: undefined,
      code: 'MESSAGE_NOT_JSON',
    });
    expect(table.caughtUp()).toBe(true);
  });

  it('quotaSharers should count the enabled tenants of the same Entra app, ids in any case, the tenant itself once', async () => {
    const app = (tenantId: string, azureTenantId: string, clientId: string, enabled = true) =>
      ({ tenantId, revision: 1, enabled, defender: { azureTenantId, clientId } }) as unknown as TenantRecord;
    const table = createTenantTable();
    const acme = app('acme', 'aaaa-1', 'cccc-1');
    // Not in the table yet: the tenant alone.
    expect(table.quotaSharers(acme)).toBe(1);
    await table.handle(message('acme', acme, 0));
    await table.handle(message('acme-eu', app('acme-eu', 'AAAA-1', 'CCCC-1'), 1));
    await table.handle(message('acme-us', app('acme-us', 'aaaa-1', 'cccc-1', false), 2));
    await table.handle(message('acme-dev', app('acme-dev', 'aaaa-1', 'cccc-2'), 3));
    await table.handle(message('other', app('other', 'bbbb-1', 'cccc-1'), 4));
    expect(table.quotaSharers(acme)).toBe(2);
    // The tenant's own record disabled meanwhile: still counted once.
    expect(table.quotaSharers({ ...acme, enabled: false })).toBe(2);
  });
});
