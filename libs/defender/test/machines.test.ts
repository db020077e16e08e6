import { retryPolicy } from '@urs/resilience';
import { type Simulator, startSimulator } from '@urs/simulator';
import { capturingLogger, type LogLine } from '@urs/testkit';
import { silentLogger } from '@urs/logging';
import {
  type ApiCaller,
  DefenderErrorCode,
  type InvalidRecord,
  type MachinePage,
  isScorable,
  walkMachines,
} from '../src';
import { type TestApp, newApp, simClient } from './support';

let sim: Simulator;

beforeAll(async () => {
  sim = await startSimulator({ quotas: false });
});

afterAll(async () => {
  await sim.close();
});

function tenantWith(spec: {
  size?: number;
  seed?: number;
  machines?: Parameters<Simulator['addTenant']>[0]['machines'];
}): TestApp {
  const app = newApp();
  sim.addTenant({
    azureTenantId: app.azureTenantId,
    apps: [app],
    ...(spec.size !== undefined ? { fleet: { size: spec.size, seed: spec.seed ?? 7 } } : {}),
    ...(spec.machines ? { machines: spec.machines } : {}),
  });
  return app;
}

/** Generated records from a throw-away tenant, to add as explicit records elsewhere. */
function records(
  count: number,
  seed: number,
): NonNullable<Parameters<Simulator['addTenant']>[0]['machines']> {
  const donor = newApp();
  sim.addTenant({ azureTenantId: donor.azureTenantId, apps: [donor], fleet: { size: count, seed } });
  return sim.machines(donor.azureTenantId);
}

/** The simulator's answers to a `$skip` past the last device: 404 (Microsoft's documented one) or an empty 200. */
const PAST_END_ANSWERS = ['notFound', 'empty'] as const;

function ids(pages: MachinePage[]): string[] {
  return pages.flatMap((p) => p.machines.map((m) => m.record.id));
}

describe('listMachinePages', () => {
  it.each(PAST_END_ANSWERS)(
    'listMachinePages should read every device page by page and confirm the short last page (past the end: %s)',
    async (pastEndPage) => {
      const app = tenantWith({ size: 25 });
      sim.setFaults(app.azureTenantId, { pastEndPage });
      const { client, close } = simClient(sim, app);
      try {
        sim.resetStats();
        const pages: MachinePage[] = [];
        for await (const page of client.listMachinePages({ pageSize: 10 })) pages.push(page);
        expect(pages.map((p) => [p.skip, p.machines.length])).toEqual([
          [0, 10],
          [10, 10],
          [20, 5],
        ]);
        expect(ids(pages).sort()).toEqual(
          sim
            .machines(app.azureTenantId)
            .map((m) => m.id)
            .sort(),
        );
        // 3 pages and the probe behind the short one.
        expect(sim.stats().callsByTenant[app.azureTenantId]?.machines).toBe(4);
      } finally {
        await close();
      }
    },
  );

  it.each(PAST_END_ANSWERS)(
    'listMachinePages should stop on the empty page behind a fleet that is an exact multiple of the page size (past the end: %s)',
    async (pastEndPage) => {
      const app = tenantWith({ size: 30 });
      sim.setFaults(app.azureTenantId, { pastEndPage });
      const { client, close } = simClient(sim, app);
      try {
        sim.resetStats();
        const machines = await client.listMachines({ pageSize: 10, pageOverlap: 0 });
        expect(machines).toHaveLength(30);
        expect(sim.stats().callsByTenant[app.azureTenantId]?.machines).toBe(4);
      } finally {
        await close();
      }
    },
  );

  it('listMachines should read an empty fleet (404) as no devices', async () => {
    const app = tenantWith({});
    const { client, close } = simClient(sim, app);
    try {
      sim.resetStats();
      await expect(client.listMachines()).resolves.toEqual([]);
      // Its first page's 404 confirmed by one more request.
      expect(sim.stats().callsByTenant[app.azureTenantId]?.machines).toBe(2);
    } finally {
      await close();
    }
  });

  it("listMachines should ask a first page answered Microsoft's 404 once more, and list the devices it then lists", async () => {
    const app = tenantWith({ size: 25 });
    // Microsoft's 404 `ResourceNotFound` once, as seen answered to listings that succeed when asked again.
    sim.setFaults(app.azureTenantId, { notFoundCalls: 1 });
    const lines: LogLine[] = [];
    const { client, close } = simClient(sim, app, { logger: capturingLogger(lines) });
    try {
      sim.resetStats();
      const machines = await client.listMachines({ pageSize: 10, pageOverlap: 2 });
      expect(machines.map((m) => m.record.id).sort()).toEqual(
        sim
          .machines(app.azureTenantId)
          .map((m) => m.id)
          .sort(),
      );
      expect(sim.stats().faultsByKind['notFound']).toBe(1);
      expect(
        lines.filter((l) => /answered 404 for its first page, then listed devices/.test(l.message)),
      ).toHaveLength(1);
    } finally {
      await close();
    }
  });

  it.each([
    ['404', 'notFound', '404 for page 2 of /api/machines'],
    ['200 with no device', 'empty', 'an empty 200 for page 2 of /api/machines'],
  ] as const)(
    'listMachinePages should fail retryably, not end, when a page overlapping a full one answers %s',
    async (_answer, pastEndPage, message) => {
      const app = tenantWith({ size: 25 });
      sim.setFaults(app.azureTenantId, { pastEndPage });
      const { client, close } = simClient(sim, app);
      try {
        const pages: MachinePage[] = [];
        const walk = (async () => {
          for await (const page of client.listMachinePages({ pageSize: 10, pageOverlap: 2 })) {
            pages.push(page);
            // The first page's devices and 7 more leave: the 8 left move before the next page's $skip of 8,
            // which finds none of them.
            if (page.index === 0)
              for (const m of sim.machines(app.azureTenantId).slice(0, 17))
                sim.removeMachine(app.azureTenantId, m.id);
          }
        })();
        await expect(walk).rejects.toMatchObject({
          code: 'DEFENDER_UNAVAILABLE',
          canRetry: true,
          message: expect.stringContaining(message),
        });
        expect(pages).toHaveLength(1);
        // Tried again, the listing finds the devices that moved.
        const left = sim.machines(app.azureTenantId).map((m) => m.id);
        expect(left).toHaveLength(8);
        expect((await client.listMachines({ pageSize: 10, pageOverlap: 2 })).map((m) => m.record.id)).toEqual(
          left,
        );
      } finally {
        await close();
      }
    },
  );

  it('listMachinePages should not miss a device when fewer devices than the overlap are removed during the walk', async () => {
    const app = tenantWith({ size: 100 });
    const { client, close } = simClient(sim, app);
    try {
      const pages: MachinePage[] = [];
      for await (const page of client.listMachinePages({ pageSize: 20, pageOverlap: 3 })) {
        pages.push(page);
        // Remove two devices already read: the rest shifts back by two positions, within the overlap.
        if (page.index === 1)
          for (const m of page.machines.slice(0, 2)) sim.removeMachine(app.azureTenantId, m.record.id);
      }
      const listed = new Set(ids(pages));
      for (const m of sim.machines(app.azureTenantId)) expect(listed.has(m.id)).toBe(true);
      expect(listed.size).toBe(100);
    } finally {
      await close();
    }
  });

  it.each([
    ['first', 0],
    ['last', 15],
  ])(
    'listMachinePages should fail retryably, not end short, when more devices than the overlap leave between two pages (the %s of the page)',
    async (_which, from) => {
      const app = tenantWith({ size: 45 });
      const { client, close } = simClient(sim, app);
      try {
        const pages: MachinePage[] = [];
        const walk = (async () => {
          for await (const page of client.listMachinePages({ pageSize: 20, pageOverlap: 3 })) {
            pages.push(page);
            // Five devices of the first page leave: the next page's $skip of 17 now starts two devices past
            // the first page's end, and holds none of the first page's.
            if (page.index === 0)
              for (const m of page.machines.slice(from, from + 5))
                sim.removeMachine(app.azureTenantId, m.record.id);
          }
        })();
        await expect(walk).rejects.toMatchObject({
          code: DefenderErrorCode.UNAVAILABLE,
          canRetry: true,
          message: expect.stringContaining('Page 2 of /api/machines holds none of the devices it re-reads'),
        });
        expect(pages).toHaveLength(1);
        // Tried again, the listing finds every device left.
        const left = sim.machines(app.azureTenantId).map((m) => m.id);
        expect(left).toHaveLength(40);
        expect(
          (await client.listMachines({ pageSize: 20, pageOverlap: 3 })).map((m) => m.record.id).sort(),
        ).toEqual([...left].sort());
      } finally {
        await close();
      }
    },
  );

  it('listMachinePages should not miss a device when devices leave between a short page and its confirming request', async () => {
    const app = tenantWith({ size: 60 });
    sim.setFaults(app.azureTenantId, { shortPageRate: 1 });
    const { client, close } = simClient(sim, app);
    try {
      const pages: MachinePage[] = [];
      for await (const page of client.listMachinePages({ pageSize: 20, pageOverlap: 3 })) {
        pages.push(page);
        // The first page comes back half full; two of its devices leave before the request confirming it.
        if (page.index === 0)
          for (const m of page.machines.slice(0, 2)) sim.removeMachine(app.azureTenantId, m.record.id);
      }
      expect(pages[0]?.received).toBe(10);
      const listed = new Set(ids(pages));
      for (const m of sim.machines(app.azureTenantId)) expect(listed.has(m.id)).toBe(true);
      expect(listed.size).toBe(60);
    } finally {
      sim.setFaults(app.azureTenantId, {});
      await close();
    }
  });

  it('listMachinePages should end a small fleet whose devices leave before the request confirming its one short page', async () => {
    const app = tenantWith({ size: 2 });
    const { client, close } = simClient(sim, app);
    try {
      const pages: MachinePage[] = [];
      for await (const page of client.listMachinePages({ pageSize: 20, pageOverlap: 3 })) {
        pages.push(page);
        // One of the fleet's two devices is offboarded before the request confirming the short page.
        if (page.index === 0) sim.removeMachine(app.azureTenantId, page.machines[0]?.record.id as string);
      }
      expect(pages.map((page) => page.received)).toEqual([2]);
      expect(ids(pages)).toHaveLength(2);
    } finally {
      await close();
    }
  });

  it('listMachinePages should drop the duplicates that devices added during the walk cause', async () => {
    const app = tenantWith({ size: 30, machines: records(30, 99) });
    const before = sim.machines(app.azureTenantId).map((m) => m.id);
    const { client, close } = simClient(sim, app);
    try {
      const pages: MachinePage[] = [];
      for await (const page of client.listMachinePages({ pageSize: 20, pageOverlap: 0 })) {
        pages.push(page);
        // New devices go before the explicit records: those shift forward and come again.
        if (page.index === 1) sim.addMachines(app.azureTenantId, 5);
      }
      const all = ids(pages);
      expect(new Set(all).size).toBe(all.length);
      expect(pages.reduce((sum, p) => sum + p.duplicates, 0)).toBeGreaterThan(0);
      // Every device that existed for the whole walk is listed; the new ones are the next cycle's.
      expect(all).toEqual(expect.arrayContaining(before));
    } finally {
      await close();
    }
  });

  it('listMachinePages should read on past a page that came back short by accident', async () => {
    const app = tenantWith({ size: 60 });
    const { client, close } = simClient(sim, app);
    sim.setFaults(app.azureTenantId, { shortPageRate: 1 });
    try {
      const machines = await client.listMachines({ pageSize: 20 });
      expect(machines.map((m) => m.record.id).sort()).toEqual(
        sim
          .machines(app.azureTenantId)
          .map((m) => m.id)
          .sort(),
      );
    } finally {
      sim.setFaults(app.azureTenantId, {});
      await close();
    }
  });

  it('listMachinePages should flag merged and excluded devices and report invalid records without losing the page', async () => {
    const extra = records(3, 5);
    const [valid, broken, pascal] = extra as [(typeof extra)[0], (typeof extra)[0], (typeof extra)[0]];
    const app = tenantWith({
      size: 4,
      machines: [
        valid,
        { ...broken, machineTags: 'not-a-list' as unknown as string[] },
        { ...pascal, HealthStatus: 'inactive' } as typeof pascal,
      ],
    });
    const generated = sim.machines(app.azureTenantId).slice(0, 4);
    sim.updateMachine(app.azureTenantId, generated[0]!.id, { mergedIntoMachineId: generated[1]!.id });
    sim.updateMachine(app.azureTenantId, generated[2]!.id, { isExcluded: true });
    const invalid: InvalidRecord[] = [];
    const { client, close } = simClient(sim, app, { onInvalidRecord: (r) => invalid.push(r) });
    try {
      const machines = await client.listMachines({ pageSize: 10 });
      expect(machines).toHaveLength(6);
      expect(invalid).toEqual([{ kind: 'machine', id: broken.id, reason: 'machineTags must be array,null' }]);
      const byId = new Map(machines.map((m) => [m.record.id, m]));
      expect(byId.get(generated[0]!.id)?.flags).toEqual({ merged: true, excluded: false });
      expect(byId.get(generated[2]!.id)?.flags).toEqual({ merged: false, excluded: true });
      expect(machines.filter(isScorable)).toHaveLength(4);
      expect(byId.get(pascal.id)?.record.healthStatus).toBe('Inactive');
    } finally {
      await close();
    }
  });

  it('listMachines should get through 5xx, resets, timeouts and truncated bodies', async () => {
    const app = tenantWith({ size: 50 });
    const { client, close } = simClient(sim, app, { requestTimeoutMs: 300 });
    sim.setFaults(app.azureTenantId, {
      status5xxRate: 0.2,
      resetRate: 0.1,
      timeoutRate: 0.1,
      malformedRate: 0.1,
    });
    try {
      sim.resetStats();
      const machines = await client.listMachines({ pageSize: 5 });
      expect(machines).toHaveLength(50);
      expect(sim.stats().faultsInjected).toBeGreaterThan(0);
    } finally {
      sim.setFaults(app.azureTenantId, {});
      await close();
    }
  }, 30_000);

  it('listMachinePages should ask a page whose answer outlasts the request timeout again with half the $top, and list every device', async () => {
    // ~1 KB a device at 1 MB/s: a page of 2,000 takes ~2 s, past the 1.5 s timeout however fast the machine;
    // one of 500 ~0.5 s, within it also on a loaded machine (a page of 1,000 may go either way).
    const app = tenantWith({ size: 2_100 });
    const lines: LogLine[] = [];
    const { client, close } = simClient(sim, app, {
      requestTimeoutMs: 1_500,
      logger: capturingLogger(lines),
    });
    sim.setFaults(app.azureTenantId, { bodyBytesPerSec: 1_000_000 });
    try {
      const pages: MachinePage[] = [];
      for await (const page of client.listMachinePages({ pageSize: 2_000 })) pages.push(page);
      expect(ids(pages).sort()).toEqual(
        sim
          .machines(app.azureTenantId)
          .map((m) => m.id)
          .sort(),
      );
      const halved = lines.filter((line) => line.level === 'warn' && line['pageSize'] !== undefined);
      expect(halved[0]).toMatchObject({ azureTenantId: app.azureTenantId, pageSize: 1_000 });
      expect(pages[0]?.skip).toBe(0);
      expect(Math.max(...pages.map((p) => p.received))).toBeLessThanOrEqual(1_000);
    } finally {
      sim.setFaults(app.azureTenantId, {});
      await close();
    }
  }, 30_000);

  it('listMachinePages should fail as a call that did not answer in time when even a page of 500 outlasts the request timeout', async () => {
    const app = tenantWith({ size: 1_100 });
    const lines: LogLine[] = [];
    const { client, close } = simClient(sim, app, {
      requestTimeoutMs: 1_000,
      retryPolicy: retryPolicy({ maxAttempts: 2, initialDelayMs: 10, maxDelayMs: 10 }),
      logger: capturingLogger(lines),
    });
    sim.setFaults(app.azureTenantId, { bodyBytesPerSec: 100_000 });
    try {
      const listed = client.listMachines({ pageSize: 1_000 });
      await expect(listed).rejects.toMatchObject({ code: DefenderErrorCode.UNAVAILABLE });
      await expect(listed).rejects.toThrow(/did not answer .* within 1 s/);
      const halved = lines.filter((line) => line.level === 'warn' && line['pageSize'] !== undefined);
      expect(halved.map((line) => line['pageSize'])).toEqual([500]);
    } finally {
      sim.setFaults(app.azureTenantId, {});
      await close();
    }
  }, 30_000);

  it('listMachines should reject a page size above 10,000', async () => {
    const app = tenantWith({ size: 1 });
    const { client, close } = simClient(sim, app);
    try {
      await expect(client.listMachines({ pageSize: 10_001 })).rejects.toThrow(
        /pageSize must be a whole number from 1 to 10000/,
      );
    } finally {
      await close();
    }
  });
});

/**
 * An ApiCaller whose `/api/machines` ignores `$skip`: every request answers `rows`, as read by the walk's
 * own `toRow`; it fails after `limit` requests, so a walk that would never end shows as that failure.
 */
function skipIgnoringApi(rows: unknown[], limit = 10): { api: ApiCaller; asked: () => number } {
  let asked = 0;
  const getRows = async (
    _endpoint: string,
    _path: string,
    _params: unknown,
    toRow: (row: unknown) => unknown,
  ) => {
    if (++asked > limit) throw new Error(`asked ${asked} times`);
    return { status: 200, rows: rows.map((row) => toRow(row)), members: {} };
  };
  return { api: { getRows } as unknown as ApiCaller, asked: () => asked };
}

describe('walkMachines on an API that ignores $skip', () => {
  const walk = async (api: ApiCaller, onInvalidRecord?: (r: InvalidRecord) => void) => {
    const pages: MachinePage[] = [];
    const deps = {
      api,
      logger: silentLogger,
      azureTenantId: 't1',
      ...(onInvalidRecord ? { onInvalidRecord } : {}),
    };
    for await (const page of walkMachines(deps, { pageSize: 10, pageOverlap: 0 })) pages.push(page);
    return pages;
  };

  it('walkMachines should fail retryably, not end as if the first page were the whole fleet, when full pages repeat', async () => {
    const { api, asked } = skipIgnoringApi(records(10, 41));
    const pages: MachinePage[] = [];
    const walked = (async () => {
      const deps = { api, logger: silentLogger, azureTenantId: 't1' };
      for await (const page of walkMachines(deps, { pageSize: 10, pageOverlap: 0 })) pages.push(page);
    })();
    await expect(walked).rejects.toMatchObject({
      code: DefenderErrorCode.UNAVAILABLE,
      canRetry: true,
      message: expect.stringContaining('ignore $skip'),
    });
    expect(pages.map((p) => p.machines.length)).toEqual([10]);
    expect(asked()).toBe(3);
  });

  it('walkMachines should count a repeated invalid record once and stop on repeated pages holding one', async () => {
    const rows: unknown[] = records(10, 43);
    rows[4] = { ...(rows[4] as object), machineTags: 'not-a-list' };
    const invalid: InvalidRecord[] = [];
    const { api, asked } = skipIgnoringApi(rows);
    await expect(walk(api, (r) => invalid.push(r))).rejects.toMatchObject({
      code: DefenderErrorCode.UNAVAILABLE,
      canRetry: true,
    });
    expect(asked()).toBe(3);
    expect(invalid).toHaveLength(1);
  });
});
