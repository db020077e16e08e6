import { claimedModeHeld, snapshotOutcomes, snapshotOutcomesSince } from '../src/measures';
import { costPerDevice, costRowLabel } from '../src/scenario-cost';
import type { ScenarioResult } from '../src/scenario';

/**
 * A scenario of 1,000 devices whose Redis counting window was 100 s and saw 1,600 commands, 600 of them the
 * background's: its idle interval of 10 s saw 60 commands (6 per second).
 */
function scenario(driver: 'inject' | 'poller', redisIdle?: { commands: number; ms: number }): ScenarioResult {
  return {
    spec: { name: 'fleet-1000', driver, mode: 'per-device' },
    devices: 1_000,
    kafka: {},
    redisCalls: { evalsha: 1_000, ping: 400, get: 200 },
    redisWindowMs: 100_000,
    ...(redisIdle ? { redisIdle } : {}),
  } as unknown as ScenarioResult;
}

describe('costPerDevice', () => {
  it('costPerDevice should remove the idle command rate over the counting window and keep the raw figure', () => {
    const cost = costPerDevice(scenario('inject', { commands: 60, ms: 10_000 }), true);
    expect(cost.redisIdleCommandsPerSec).toBe(6);
    expect(cost.redisCommandsRaw).toBe(1.6);
    expect(cost.redisCommands).toBe(1);
  });

  it('costPerDevice should report no idle rate and the raw figure alone when the idle interval was not measured', () => {
    const cost = costPerDevice(scenario('inject'), true);
    expect(cost.redisIdleCommandsPerSec).toBeNull();
    expect(cost.redisCommandsRaw).toBe(1.6);
    expect(cost.redisCommands).toBe(1.6);
  });

  it('costPerDevice should not go below zero when the background rate covers the whole window', () => {
    const cost = costPerDevice(scenario('inject', { commands: 200, ms: 10_000 }), true);
    expect(cost.redisCommands).toBe(0);
  });

  it('costPerDevice should say whether the poller ran', () => {
    expect(costPerDevice(scenario('inject'), true).withPoller).toBe(false);
    expect(costPerDevice(scenario('poller'), true).withPoller).toBe(true);
  });

  it('costRowLabel should mark a row without the poller', () => {
    expect(costRowLabel('fleet-1000', costPerDevice(scenario('inject'), true))).toBe(
      'fleet-1000 (without the poller)',
    );
    expect(costRowLabel('cycles', costPerDevice(scenario('poller'), true))).toBe('cycles');
  });
});

describe('snapshotOutcomes', () => {
  const metrics = (changed: number, unchanged: number, replica = ''): string =>
    [
      '# HELP urs_bulk_export_snapshots_total Bulk cycles that asked …',
      '# TYPE urs_bulk_export_snapshots_total counter',
      `urs_bulk_export_snapshots_total{outcome="changed"${replica}} ${changed}`,
      `urs_bulk_export_snapshots_total{outcome="unchanged"${replica}} ${unchanged}`,
      'urs_consumer_buffered_messages 0',
    ].join('\n');

  it("snapshotOutcomes should sum each outcome over the vuln-fetcher's processes", () => {
    expect(snapshotOutcomes([metrics(1, 0), metrics(2, 3, ',service="vuln-fetcher"')])).toEqual({
      changed: 3,
      unchanged: 3,
    });
  });

  it('snapshotOutcomesSince should keep the outcomes that grew', () => {
    expect(snapshotOutcomesSince({ changed: 2, unchanged: 1 }, { changed: 1, unchanged: 1 })).toEqual({
      changed: 1,
    });
  });
});

describe('claimedModeHeld', () => {
  it('claimedModeHeld should hold a bulk-next cycle to a changed snapshot and a bulk-same one to an unchanged one', () => {
    expect(claimedModeHeld('bulk-next', { changed: 1 })).toBe(true);
    expect(claimedModeHeld('bulk-next', { unchanged: 1 })).toBe(false);
    expect(claimedModeHeld('bulk-same', { unchanged: 1 })).toBe(true);
    expect(claimedModeHeld('bulk-same', { changed: 1 })).toBe(false);
    expect(claimedModeHeld('bulk-same', {})).toBe(false);
  });

  it('claimedModeHeld should not judge a cycle without a claim or without outcomes', () => {
    expect(claimedModeHeld('bulk', { changed: 1 })).toBeNull();
    expect(claimedModeHeld('per-device', {})).toBeNull();
    expect(claimedModeHeld('bulk-next', undefined)).toBeNull();
  });
});
