import { Registry, startHealthServer } from '@urs/telemetry';

describe('Registry', () => {
  it('should expose counters with labels in Prometheus text format', () => {
    const registry = new Registry({ processMetrics: false });
    const counter = registry.counter('urs_messages_total', 'Messages handled.');
    counter.inc({ topic: 'urs.tenants', outcome: 'ok' });
    counter.inc({ topic: 'urs.tenants', outcome: 'ok' }, 2);
    expect(registry.expose()).toContain('urs_messages_total{outcome="ok",topic="urs.tenants"} 3');
  });

  it('Counter.init should serve a series at 0 before its first increment, and keep one already counting', () => {
    const registry = new Registry({ processMetrics: false });
    const counter = registry.counter('urs_refused_total', 'Refused.');
    expect(registry.expose()).not.toMatch(/^urs_refused_total /m);
    counter.init();
    counter.init({ topic: 'urs.tenants' });
    expect(registry.expose()).toMatch(/^urs_refused_total 0$/m);
    expect(registry.expose()).toMatch(/^urs_refused_total\{topic="urs.tenants"\} 0$/m);
    counter.inc({ topic: 'urs.tenants' });
    counter.init({ topic: 'urs.tenants' });
    expect(registry.expose()).toMatch(/^urs_refused_total\{topic="urs.tenants"\} 1$/m);
  });

  it('Gauge.remove should stop serving a series until it is set again, leaving the others', () => {
    const registry = new Registry({ processMetrics: false });
    const gauge = registry.gauge('urs_slots', 'Slots.');
    gauge.set(4);
    gauge.set(2, { pool: 'a' });
    gauge.remove();
    expect(registry.expose()).not.toMatch(/^urs_slots /m);
    expect(registry.expose()).toMatch(/^urs_slots\{pool="a"\} 2$/m);
    gauge.set(5);
    expect(registry.expose()).toMatch(/^urs_slots 5$/m);
  });

  it('should count histogram observations into cumulative buckets', () => {
    const registry = new Registry({ processMetrics: false });
    const histogram = registry.histogram('urs_latency_seconds', 'Latency.', [0.1, 1]);
    histogram.observe(0.05);
    histogram.observe(0.5);
    histogram.observe(5);
    const text = registry.expose();
    expect(text).toContain('urs_latency_seconds_bucket{le="0.1"} 1');
    expect(text).toContain('urs_latency_seconds_bucket{le="1"} 2');
    expect(text).toContain('urs_latency_seconds_bucket{le="+Inf"} 3');
    expect(text).toContain('urs_latency_seconds_count 3');
  });

  it('should write values that are not finite as the exposition format spells them', () => {
    const registry = new Registry({ processMetrics: false });
    const gauge = registry.gauge('urs_value', 'A value.');
    gauge.set(Number.NaN, { v: 'nan' });
    gauge.set(Number.POSITIVE_INFINITY, { v: 'up' });
    gauge.set(Number.NEGATIVE_INFINITY, { v: 'down' });
    const text = registry.expose();
    expect(text).toMatch(/^urs_value\{v="nan"\} NaN$/m);
    expect(text).toMatch(/^urs_value\{v="up"\} \+Inf$/m);
    expect(text).toMatch(/^urs_value\{v="down"\} -Inf$/m);
  });

  it('should return the same metric when registered twice', () => {
    const registry = new Registry({ processMetrics: false });
    expect(registry.gauge('g', 'h')).toBe(registry.gauge('g', 'h'));
  });
});

describe('startHealthServer', () => {
  it('should answer healthz, readyz by the readiness callback, and metrics with urs_ready alike', async () => {
    let ready = false;
    const registry = new Registry();
    const server = await startHealthServer({ port: 0, host: '127.0.0.1', registry, isReady: () => ready });
    try {
      const base = `http://127.0.0.1:${server.port}`;
      expect((await fetch(`${base}/healthz`)).status).toBe(200);
      expect((await fetch(`${base}/readyz`)).status).toBe(503);
      expect(await (await fetch(`${base}/metrics`)).text()).toMatch(/^urs_ready 0$/m);
      ready = true;
      expect((await fetch(`${base}/readyz`)).status).toBe(200);
      const metrics = await (await fetch(`${base}/metrics`)).text();
      expect(metrics).toMatch(/^urs_ready 1$/m);
      expect(metrics).toMatch(/process_resident_memory_bytes \d+/);
    } finally {
      await server.close();
    }
  });

  it('should answer on IPv4 and IPv6 loopback alike when given no host, so IPv6 and dual-stack pods are probed and scraped', async () => {
    const registry = new Registry({ processMetrics: false });
    const server = await startHealthServer({ port: 0, registry, isReady: () => true });
    try {
      expect((await fetch(`http://127.0.0.1:${server.port}/healthz`)).status).toBe(200);
      expect((await fetch(`http://[::1]:${server.port}/healthz`)).status).toBe(200);
      expect((await fetch(`http://[::1]:${server.port}/readyz`)).status).toBe(200);
    } finally {
      await server.close();
    }
  });

  it('should answer /readyz/<part> by that part alone, with its reason, and 404 for parts it does not have', async () => {
    let apiReason: string | undefined = 'waiting for the first rebuild';
    const registry = new Registry({ processMetrics: false });
    const server = await startHealthServer({
      port: 0,
      host: '127.0.0.1',
      registry,
      isReady: () => false,
      notReadyReason: () => 'a consumer has not joined its group',
      parts: { api: () => apiReason },
    });
    try {
      const base = `http://127.0.0.1:${server.port}`;
      const waiting = await fetch(`${base}/readyz/api`);
      expect(waiting.status).toBe(503);
      expect(await waiting.json()).toEqual({ status: 'not-ready', reason: 'waiting for the first rebuild' });
      apiReason = undefined;
      const ready = await fetch(`${base}/readyz/api`);
      expect(ready.status).toBe(200);
      expect(await ready.json()).toEqual({ status: 'ready' });
      // The whole service is still not ready: the part answers for itself only.
      expect((await fetch(`${base}/readyz`)).status).toBe(503);
      expect(await (await fetch(`${base}/metrics`)).text()).toMatch(/^urs_ready 0$/m);
      for (const other of ['/readyz/', '/readyz/other', '/readyz/api/x', '/readyz/toString']) {
        expect([other, (await fetch(`${base}${other}`)).status]).toEqual([other, 404]);
      }
    } finally {
      await server.close();
    }
  });
});
