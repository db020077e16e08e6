import { compileFilter, FilterError } from '../src/filter';
import type { MachineRecord } from '../src/types';

const m = (fields: Partial<MachineRecord>): MachineRecord => ({ id: 'a'.repeat(40), ...fields });

describe('compileFilter', () => {
  test('compileFilter should compare enums case-insensitively and combine with and/or', () => {
    const p = compileFilter("healthStatus eq 'active' and riskScore ne 'High' or osPlatform eq 'Ubuntu'");
    expect(p(m({ healthStatus: 'Active', riskScore: 'Low' }))).toBe(true);
    expect(p(m({ healthStatus: 'Active', riskScore: 'High' }))).toBe(false);
    expect(p(m({ healthStatus: 'Inactive', osPlatform: 'Ubuntu' }))).toBe(true);
  });

  test('compileFilter should compare lastSeen against bare dates and date-times', () => {
    const p = compileFilter('lastSeen gt 2024-01-01Z');
    expect(p(m({ lastSeen: '2024-01-02T00:00:00.0000000Z' }))).toBe(true);
    expect(p(m({ lastSeen: '2023-12-31T23:59:59.9999999Z' }))).toBe(false);
    expect(
      compileFilter('lastSeen le 2024-01-01T10:00:00Z')(m({ lastSeen: '2024-01-01T09:00:00.0000000Z' })),
    ).toBe(true);
  });

  test('compileFilter should match numbers, null, tags and quoted quotes', () => {
    expect(compileFilter('rbacGroupId eq 140')(m({ rbacGroupId: 140 }))).toBe(true);
    expect(compileFilter('aadDeviceId eq null')(m({ aadDeviceId: null }))).toBe(true);
    expect(compileFilter("machineTags eq 'VIP'")(m({ machineTags: ['vip'] }))).toBe(true);
    expect(compileFilter("computerDnsName eq 'o''neil'")(m({ computerDnsName: "o'neil" }))).toBe(true);
  });

  test('compileFilter should reject unsupported fields and syntax', () => {
    expect(() => compileFilter('osBuild eq 5')).toThrow(FilterError);
    expect(() => compileFilter("healthStatus eq 'Active' xor riskScore eq 'High'")).toThrow('Syntax error');
    expect(() => compileFilter('healthStatus')).toThrow('Invalid filter clause');
  });
});
