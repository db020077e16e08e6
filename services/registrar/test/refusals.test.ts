import type { TenantRecord } from '@urs/contracts';
import { restRecordKept } from '../src/refusals';

const PUSH_STARTED = new Date('2026-03-01T10:00:00.000Z');

/** A tenant's record as an administrator's REST write left it, over Director's write of generation 1. */
const restRecord = (updatedAt: string): TenantRecord =>
  ({ tenantId: 't', source: 'rest', generation: 1, updatedAt }) as TenantRecord;

const push2 = { source: 'director' as const, generation: 2, pushStartedAt: PUSH_STARTED };

describe('restRecordKept', () => {
  it('should keep a REST write made after the push began', () => {
    expect(restRecordKept(restRecord('2026-03-01T10:00:00.001Z'), push2)).toBe(true);
  });

  it('should keep a REST write made in the millisecond the push began: the administrator wins a tie', () => {
    expect(restRecordKept(restRecord('2026-03-01T10:00:00.000Z'), push2)).toBe(true);
  });

  it('should write over a REST write made before the push began', () => {
    expect(restRecordKept(restRecord('2026-03-01T09:59:59.999Z'), push2)).toBe(false);
  });

  it("should keep a REST write over the push's own generation when the push's start is not known", () => {
    const record = { ...restRecord('2026-03-01T09:00:00.000Z'), generation: 2 };
    expect(restRecordKept(record, { source: 'director', generation: 2 })).toBe(true);
    expect(
      restRecordKept(restRecord('2026-03-01T11:00:00.000Z'), { source: 'director', generation: 2 }),
    ).toBe(false);
  });

  it("should never keep Director's own record, nor a record against a REST write", () => {
    const director = { ...restRecord('2026-03-01T11:00:00.000Z'), source: 'director' as const };
    expect(restRecordKept(director, push2)).toBe(false);
    expect(restRecordKept(restRecord('2026-03-01T11:00:00.000Z'), { source: 'rest' })).toBe(false);
    expect(restRecordKept(null, push2)).toBe(false);
  });
});
