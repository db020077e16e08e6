import {
  TENANT_REVISION_HEADER as REVISION_HEADER,
  type SealedSecretRecord,
  type TenantRecord,
} from '@urs/contracts';
import { BusError } from '@urs/bus';
import { createSecretSealer, type SecretSealer } from '@urs/secrets';
import { rebuiltGate } from '../../src/http/rebuilt';
import { tenantRoutes, type AccessCheckResult, type AccessCheckTenant } from '../../src/http/tenants';
import { validateRegistration } from '../../src/validation';
import {
  GUID_A,
  memoryPublisher,
  memoryTenantStore,
  registrationBody,
  testRegistry,
  testSealer,
} from '../fakes';
import { routeCaller } from './call';

/** acme's secret sealed with key k0, which the registrar of `setup` does not hold (a key since retired). */
function sealedWithKeyNotHeld(): SealedSecretRecord {
  return createSecretSealer({ activeKeyId: 'k0', keys: new Map([['k0', Buffer.alloc(32, 1)]]) }).seal(
    'Sup3r~secret-value',
    'acme',
  );
}

/** What the access check of `setup` answers unless told otherwise: a secret Entra ID refused. */
const WRONG_SECRET: AccessCheckResult = {
  ok: false,
  verdict: 'FAIL: the client secret is wrong: paste the secret Value, not its ID',
  tokenIssued: false,
  machinesReadable: false,
  vulnerabilitiesReadable: false,
  noDevices: false,
  roles: [],
  permissions: { 'Machine.Read.All': false },
  error: { code: 'DEFENDER_INVALID_SECRET', message: 'the client secret is wrong' },
};

function setup(
  sealer: SecretSealer = testSealer(),
  ensureRebuilt: () => Promise<void> = async () => undefined,
  checkResult: AccessCheckResult = WRONG_SECRET,
) {
  const tenants = memoryTenantStore();
  const publisher = memoryPublisher();
  const cleared: string[] = [];
  const registry = testRegistry({
    tenants,
    publisher,
    sealer,
    schedules: {
      clear: async (tenantId) => void cleared.push(tenantId),
      carryFailure: async () => true,
    },
  });
  const checked: AccessCheckTenant[] = [];
  const signals: AbortSignal[] = [];
  const routes = tenantRoutes({
    registry,
    tenants,
    sealer,
    ensureRebuilt: () => ensureRebuilt(),
    accessTestTimeoutMs: 5_000,
    checkAccess: async (tenant, signal) => {
      checked.push(tenant);
      signals.push(signal);
      return checkResult;
    },
  });
  const call = routeCaller(routes);
  return { tenants, publisher, sealer, registry, call, checked, signals, cleared };
}

describe('tenantRoutes', () => {
  it('PUT should register a tenant: sealed on urs.tenants and in the store, answered without the secret', async () => {
    const { tenants, publisher, sealer, call } = setup();
    const answer = await call('PUT', '/v1/tenants/acme/defender', registrationBody({ region: 'eu' }));
    expect(answer.status).toBe(201);
    expect(JSON.stringify(answer.body)).not.toContain('Sup3r');
    expect(answer.body).toMatchObject({
      tenantId: 'acme',
      source: 'rest',
      enabled: true,
      defender: {
        azureTenantId: GUID_A,
        clientSecretSet: true,
        clientSecretKeyId: 'k1',
        cloud: 'commercial',
        region: 'eu',
        riskProfile: null,
      },
      status: { state: 'active' },
    });
    const record = publisher.sent[0]?.message.value as TenantRecord;
    expect(publisher.sent[0]).toMatchObject({
      topic: 'urs.tenants',
      contract: 'urs/tenant-record',
      message: { key: 'acme' },
    });
    expect(JSON.stringify(record)).not.toContain('Sup3r');
    expect(sealer.open(record.defender.clientSecret, 'acme')).toBe('Sup3r~secret-value');
    expect((await tenants.get('acme'))?.revision).toBe(record.revision);
  });

  it('PUT should keep the stored secret when the update leaves it out, and require it for a new tenant', async () => {
    const { tenants, call } = setup();
    const { clientSecret: _secret, ...withoutSecret } = registrationBody();
    const refused = await call('PUT', '/v1/tenants/acme/defender', withoutSecret);
    expect(refused).toMatchObject({
      status: 400,
      body: {
        error: { code: 'VALIDATION_FAILED', violations: [{ field: 'clientSecret', rule: 'is required' }] },
      },
    });
    await call('PUT', '/v1/tenants/acme/defender', registrationBody());
    const first = await tenants.get('acme');
    const update = await call('PUT', '/v1/tenants/acme/defender', {
      ...withoutSecret,
      pollIntervalMinutes: 60,
    });
    expect(update.status).toBe(200);
    const second = await tenants.get('acme');
    expect(second?.defender.pollIntervalMinutes).toBe(60);
    expect(second?.defender.clientSecret).toEqual(first?.defender.clientSecret);
    expect(second?.revision).toBeGreaterThan(first?.revision ?? 0);
  });

  it.each([
    ['azureTenantId', { azureTenantId: '8f2a3c1e-4b5d-4e6f-9a7b-0c1d2e3f4a5b' }],
    ['clientId', { clientId: '1b2c3d4e-5f60-4718-8293-a4b5c6d7e8f9' }],
    ['cloud', { cloud: 'gcc' }],
  ])(
    "PUT without a secret should be refused when %s changes: the stored secret is another app's",
    async (_field, change) => {
      const { tenants, publisher, call } = setup();
      await call('PUT', '/v1/tenants/acme/defender', registrationBody());
      const first = await tenants.get('acme');
      const { clientSecret: _secret, ...withoutSecret } = registrationBody(change);
      expect(await call('PUT', '/v1/tenants/acme/defender', withoutSecret)).toMatchObject({
        status: 400,
        body: {
          error: {
            code: 'VALIDATION_FAILED',
            violations: [
              { field: 'clientSecret', rule: 'is required when azureTenantId, clientId or cloud changes' },
            ],
          },
        },
      });
      expect(await tenants.get('acme')).toEqual(first);
      expect(publisher.sent).toHaveLength(1);
      // With the new app's secret the same change is taken.
      expect((await call('PUT', '/v1/tenants/acme/defender', registrationBody(change))).status).toBe(200);
    },
  );

  it.each([
    ['not a GUID', { azureTenantId: 'nope' }, 'must be a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)'],
    ['left out', { azureTenantId: undefined }, 'is required'],
  ])(
    'PUT without a secret should name only the azureTenantId when it is %s, not ask for the secret of an app it does not name',
    async (_how, change, rule) => {
      const { call } = setup();
      await call('PUT', '/v1/tenants/acme/defender', registrationBody());
      const { clientSecret: _secret, ...withoutSecret } = registrationBody(change);
      expect(await call('PUT', '/v1/tenants/acme/defender', withoutSecret)).toMatchObject({
        status: 400,
        body: { error: { code: 'VALIDATION_FAILED', violations: [{ field: 'azureTenantId', rule }] } },
      });
      // A valid field that does switch the app still asks for the secret beside it.
      const { clientSecret: _again, ...otherApp } = registrationBody({
        ...change,
        clientId: '1b2c3d4e-5f60-4718-8293-a4b5c6d7e8f9',
      });
      expect(await call('PUT', '/v1/tenants/acme/defender', otherApp)).toMatchObject({
        status: 400,
        body: {
          error: {
            violations: [
              { field: 'azureTenantId', rule },
              { field: 'clientSecret', rule: 'is required when azureTenantId, clientId or cloud changes' },
            ],
          },
        },
      });
    },
  );

  it("PUT without a secret should be refused when another PUT switched the app after it read the record: the stored secret is that app's", async () => {
    const { tenants, call } = setup();
    await call('PUT', '/v1/tenants/acme/defender', registrationBody());
    const before = await tenants.get('acme');
    const otherApp = registrationBody({ clientId: '0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d' });
    expect((await call('PUT', '/v1/tenants/acme/defender', otherApp)).status).toBe(200);
    const switched = await tenants.get('acme');
    // This PUT read the record before the other one landed, and writes after it.
    const get = tenants.get.bind(tenants);
    let reads = 0;
    tenants.get = async (tenantId) => (reads++ === 0 ? before : get(tenantId));
    const { clientSecret: _secret, ...withoutSecret } = registrationBody({ pollIntervalMinutes: 120 });
    expect(await call('PUT', '/v1/tenants/acme/defender', withoutSecret)).toMatchObject({
      status: 400,
      body: {
        error: {
          code: 'VALIDATION_FAILED',
          violations: [
            { field: 'clientSecret', rule: 'is required when azureTenantId, clientId or cloud changes' },
          ],
        },
      },
    });
    expect(await get('acme')).toEqual(switched);
  });

  it('PUT without a secret should keep it when the app stays the same (GUIDs in another case, cloud left to its default)', async () => {
    const { tenants, call } = setup();
    await call('PUT', '/v1/tenants/acme/defender', registrationBody());
    const first = await tenants.get('acme');
    const { clientSecret: _secret, ...withoutSecret } = registrationBody({
      azureTenantId: GUID_A.toUpperCase(),
      cloud: null,
      region: 'eu',
      pollIntervalMinutes: 30,
    });
    expect((await call('PUT', '/v1/tenants/acme/defender', withoutSecret)).status).toBe(200);
    const second = await tenants.get('acme');
    expect(second?.defender).toMatchObject({ region: 'eu', pollIntervalMinutes: 30, cloud: 'commercial' });
    expect(second?.defender.clientSecret).toEqual(first?.defender.clientSecret);
  });

  it('PUT should refuse a secret that cannot be an Entra ID secret, naming the rule, and take inner spaces', async () => {
    const { call, publisher } = setup();
    for (const clientSecret of ['abc8Q~secret\ud800', 'Sup3r~secret-value\r\n', '   ', 'a\u0000b']) {
      const answer = await call('PUT', '/v1/tenants/acme/defender', registrationBody({ clientSecret }));
      expect(answer).toMatchObject({
        status: 400,
        body: {
          error: {
            code: 'VALIDATION_FAILED',
            violations: [
              {
                field: 'clientSecret',
                rule: expect.stringMatching(
                  /^must be the secret's Value as Entra ID shows it: no spaces or line/,
                ),
              },
            ],
          },
        },
      });
    }
    expect(publisher.sent).toHaveLength(0);
    const spaced = await call(
      'PUT',
      '/v1/tenants/acme/defender',
      registrationBody({ clientSecret: 'Sup3r secret~Wert-ä' }),
    );
    expect(spaced.status).toBe(201);
  });

  it('PUT should refuse a secret with an invisible format character (a zero-width space pasted with it), naming clientSecret and never the secret', async () => {
    const { call, publisher } = setup();
    for (const clientSecret of [
      '\u200bSup3r~secret-value',
      'Sup3r~secret-value\u2060',
      'Sup3r~secret-value\u200b',
      'Sup3r~secret\u00ad-value',
    ]) {
      const answer = await call('PUT', '/v1/tenants/acme/defender', registrationBody({ clientSecret }));
      expect(answer).toMatchObject({
        status: 400,
        body: {
          error: {
            code: 'VALIDATION_FAILED',
            violations: [
              { field: 'clientSecret', rule: expect.stringMatching(/invisible format characters/) },
            ],
          },
        },
      });
      expect(JSON.stringify(answer.body)).not.toContain('Sup3r');
    }
    expect(publisher.sent).toHaveLength(0);
  });

  it('PUT without a secret should answer 409 when the tenant is deleted before the update is written', async () => {
    const { tenants, call } = setup();
    await call('PUT', '/v1/tenants/acme/defender', registrationBody());
    const { clientSecret: _secret, ...withoutSecret } = registrationBody();
    // The PUT reads the tenant (it has a secret to keep); a DELETE lands before the PUT writes.
    const get = tenants.get.bind(tenants);
    let reads = 0;
    tenants.get = async (tenantId) => {
      const record = await get(tenantId);
      if (reads++ === 0) await call('DELETE', '/v1/tenants/acme/defender');
      return record;
    };
    const update = await call('PUT', '/v1/tenants/acme/defender', {
      ...withoutSecret,
      pollIntervalMinutes: 60,
    });
    expect(update).toMatchObject({ status: 409, body: { error: { code: 'TENANT_NOT_FOUND' } } });
    expect(JSON.stringify(update.body)).toMatch(
      /deleted while this update was made: register it again with its clientSecret/,
    );
    expect(await get('acme')).toBeNull();
  });

  it('PUT should re-seal a kept secret that a retired key sealed', async () => {
    const keys = new Map([
      ['k1', Buffer.alloc(32, 7)],
      ['k0', Buffer.alloc(32, 1)],
    ]);
    const { tenants, call, sealer } = setup(createSecretSealer({ activeKeyId: 'k1', keys }));
    await call('PUT', '/v1/tenants/acme/defender', registrationBody());
    const retired = createSecretSealer({ activeKeyId: 'k0', keys });
    const current = (await tenants.get('acme')) as TenantRecord;
    tenants.records.set('acme', {
      ...current,
      defender: { ...current.defender, clientSecret: retired.seal('Sup3r~secret-value', 'acme') },
    });
    const { clientSecret: _secret, ...withoutSecret } = registrationBody();
    expect((await call('PUT', '/v1/tenants/acme/defender', withoutSecret)).status).toBe(200);
    const resealed = (await tenants.get('acme'))?.defender.clientSecret;
    expect(resealed?.keyId).toBe('k1');
    expect(sealer.open(resealed!, 'acme')).toBe('Sup3r~secret-value');
  });

  it('PUT should write nothing when the same registration comes again, keeping the status and its error', async () => {
    const { tenants, publisher, call } = setup();
    const first = await call('PUT', '/v1/tenants/acme/defender', registrationBody());
    const failed = {
      state: 'error',
      lastErrorCode: 'DEFENDER_THROTTLED',
      lastErrorMessage: 'Defender answered 429: try again in 60 s',
      lastErrorAt: '2026-01-01T00:00:00.000Z',
    } as const;
    await tenants.updateStatus('acme', failed);
    // A client retrying its PUT, with the secret and without it (kept).
    const { clientSecret: _secret, ...withoutSecret } = registrationBody();
    for (const body of [registrationBody(), withoutSecret]) {
      const again = await call('PUT', '/v1/tenants/acme/defender', body);
      expect(again).toMatchObject({
        status: 200,
        body: { revision: (first.body as TenantRecord).revision, status: failed },
      });
    }
    expect(publisher.sent).toHaveLength(1);
    expect(await tenants.getStatus('acme')).toMatchObject(failed);
    // A change is written, and its status starts over.
    const changed = await call(
      'PUT',
      '/v1/tenants/acme/defender',
      registrationBody({ pollIntervalMinutes: 30 }),
    );
    expect(changed.body).toMatchObject({
      defender: { pollIntervalMinutes: 30 },
      status: { state: 'active' },
    });
    expect(publisher.sent).toHaveLength(2);
    expect((await tenants.getStatus('acme')).lastErrorCode).toBeUndefined();
  });

  it('PUT should write the same settings when they take the tenant over from Director or enable it again', async () => {
    const { tenants, publisher, registry, call } = setup();
    const { clientSecret: _secret, ...withoutSecret } = registrationBody();
    const pushed = await registry.register(
      { tenantId: 'acme', defender: registrationBody() as never },
      { source: 'director', generation: 3 },
      { skipIfUnchanged: true },
    );
    const takeover = await call('PUT', '/v1/tenants/acme/defender', withoutSecret);
    expect(takeover.body).toMatchObject({ source: 'rest' });
    expect((takeover.body as TenantRecord).revision).toBeGreaterThan(pushed.record.revision);
    expect((await tenants.get('acme'))?.source).toBe('rest');
    expect(publisher.sent).toHaveLength(2);

    await call('PUT', '/v1/tenants/acme/defender', registrationBody({ enabled: false }));
    const enabled = await call('PUT', '/v1/tenants/acme/defender', registrationBody());
    expect(enabled.body).toMatchObject({ enabled: true, status: { state: 'active' } });
    expect(publisher.sent).toHaveLength(4);
  });

  it('PUT should re-seal a stored secret that a retired key sealed when the same secret comes again', async () => {
    const keys = new Map([
      ['k1', Buffer.alloc(32, 7)],
      ['k0', Buffer.alloc(32, 1)],
    ]);
    const { tenants, publisher, call, sealer } = setup(createSecretSealer({ activeKeyId: 'k1', keys }));
    await call('PUT', '/v1/tenants/acme/defender', registrationBody());
    const current = (await tenants.get('acme')) as TenantRecord;
    const retired = createSecretSealer({ activeKeyId: 'k0', keys }).seal('Sup3r~secret-value', 'acme');
    tenants.records.set('acme', { ...current, defender: { ...current.defender, clientSecret: retired } });
    const again = await call('PUT', '/v1/tenants/acme/defender', registrationBody());
    expect(again.body).toMatchObject({ defender: { clientSecretKeyId: 'k1' } });
    expect(publisher.sent).toHaveLength(2);
    const resealed = (await tenants.get('acme'))?.defender.clientSecret;
    expect(resealed?.keyId).toBe('k1');
    expect(sealer.open(resealed!, 'acme')).toBe('Sup3r~secret-value');
  });

  it('PUT without a secret should answer 409 SECRET_UNAVAILABLE when the stored secret does not open', async () => {
    const { tenants, publisher, call } = setup();
    await call('PUT', '/v1/tenants/acme/defender', registrationBody());
    const current = (await tenants.get('acme')) as TenantRecord;
    const gone = sealedWithKeyNotHeld();
    const damaged = { ...current.defender.clientSecret, tag: Buffer.alloc(16).toString('base64') };
    const { clientSecret: _secret, ...withoutSecret } = registrationBody({ pollIntervalMinutes: 60 });
    for (const [clientSecret, reason] of [
      [gone, /sealed with key k0, which is not configured/],
      [damaged, /does not open with this process's key k1/],
    ] as const) {
      tenants.records.set('acme', { ...current, defender: { ...current.defender, clientSecret } });
      const answer = await call('PUT', '/v1/tenants/acme/defender', withoutSecret);
      expect(answer).toMatchObject({ status: 409, body: { error: { code: 'SECRET_UNAVAILABLE' } } });
      const { message } = (answer.body as { error: { message: string } }).error;
      expect(message).toMatch(
        /stored clientSecret of tenant acme cannot be opened with this registrar's keys/,
      );
      expect(message).toMatch(reason);
      expect(message).toMatch(/PUT the tenant's clientSecret again$/);
      expect(JSON.stringify(answer.body)).not.toMatch(/Sup3r|ciphertext/);
    }
    expect(publisher.sent).toHaveLength(1);
    // The clientSecret given again mends it.
    expect((await call('PUT', '/v1/tenants/acme/defender', registrationBody())).status).toBe(200);
    expect(publisher.sent).toHaveLength(2);
  });

  it("PUT should answer 413 RECORD_TOO_LARGE, naming the riskProfile and never the secret, when Kafka refuses the tenant's record as too large", async () => {
    const tenants = memoryTenantStore();
    const sealer = testSealer();
    const refusal = Object.assign(
      new Error('The request included a message larger than the max message size'),
      {
        name: 'KafkaJSProtocolError',
        type: 'MESSAGE_TOO_LARGE',
        code: 10,
        retriable: false,
      },
    );
    const publisher = {
      ...memoryPublisher(),
      send: async () => {
        throw new BusError(
          'RECORD_TOO_LARGE',
          'topic urs.tenants refused a record as too large (MESSAGE_TOO_LARGE)',
          {
            canRetry: false,
            cause: refusal,
            details: {
              topic: 'urs.tenants',
              refusal: 'MESSAGE_TOO_LARGE',
              largestRecordBytes: 9_000_000,
              records: 1,
              requestBytes: 9_000_000,
            },
          },
        );
      },
    };
    const registry = testRegistry({ tenants, publisher, sealer });
    const call = routeCaller(
      tenantRoutes({
        registry,
        tenants,
        sealer,
        ensureRebuilt: async () => undefined,
        accessTestTimeoutMs: 5_000,
        checkAccess: async () => WRONG_SECRET,
      }),
    );
    const answer = await call('PUT', '/v1/tenants/acme/defender', registrationBody());
    expect(answer).toMatchObject({ status: 413, body: { error: { code: 'RECORD_TOO_LARGE' } } });
    const message = (answer.body as { error: { message: string } }).error.message;
    expect(message).toContain('riskProfile');
    expect(message).toContain('9000000 bytes');
    expect(JSON.stringify(answer.body)).not.toContain('Sup3r');
    expect(await tenants.get('acme')).toBeNull();
  });

  it('PUT should answer every violation naming the body field and the rule', async () => {
    const { call, publisher } = setup();
    const answer = await call(
      'PUT',
      '/v1/tenants/acme/defender',
      registrationBody({ pollIntervalMinutes: 5, region: 'mars', clientId: 'x' }),
    );
    expect(answer.status).toBe(400);
    const fields = (answer.body as { error: { violations: { field: string }[] } }).error.violations
      .map((v) => v.field)
      .sort();
    expect(fields).toEqual(['clientId', 'pollIntervalMinutes', 'region']);
    const region = (
      answer.body as { error: { violations: { field: string; rule: string }[] } }
    ).error.violations.find((v) => v.field === 'region');
    expect(region?.rule).toBe('must be one of us, eu, uk, au, swa, ina, aea or must be null');
    expect(publisher.sent).toHaveLength(0);
    expect((await call('PUT', '/v1/tenants/acme/defender', [1, 2])).status).toBe(400);
    const badId = await call('PUT', '/v1/tenants/-bad/defender', registrationBody());
    expect(badId).toMatchObject({ status: 400, body: { error: { violations: [{ field: 'tenantId' }] } } });
  });

  it('GET should answer the configuration without the secret, with the polling status', async () => {
    const { call, tenants } = setup();
    expect(await call('GET', '/v1/tenants/acme/defender')).toMatchObject({
      status: 404,
      body: { error: { code: 'TENANT_NOT_FOUND' } },
    });
    await call('PUT', '/v1/tenants/acme/defender', registrationBody());
    await tenants.updateStatus('acme', {
      deviceCount: 12,
      lastErrorCode: 'DEFENDER_THROTTLED',
      nextPollAt: '2026-01-01T00:00:00.000Z',
    });
    const answer = await call('GET', '/v1/tenants/acme/defender');
    expect(answer.status).toBe(200);
    expect(answer.body).toMatchObject({
      status: {
        deviceCount: 12,
        lastErrorCode: 'DEFENDER_THROTTLED',
        nextPollAt: '2026-01-01T00:00:00.000Z',
      },
    });
    expect(JSON.stringify(answer.body)).not.toMatch(/Sup3r|ciphertext/);
  });

  it('GET should answer 404 TENANT_NOT_REGISTERED naming the rule when the only registration was refused', async () => {
    const { call, tenants, registry } = setup();
    const violations = [{ field: 'defender.clientId', rule: 'must be a GUID' }];
    await registry.reject('acme', violations, { source: 'director', generation: 3 });
    expect(await tenants.getStatus('acme')).toMatchObject({
      state: 'registration-rejected',
      registrationError: { code: 'REGISTRATION_INVALID', violations, source: 'director', generation: 3 },
    });
    expect(await call('GET', '/v1/tenants/acme/defender')).toMatchObject({
      status: 404,
      body: {
        error: {
          code: 'TENANT_NOT_REGISTERED',
          message: expect.stringMatching(/refused: registration refused: clientId must be a GUID$/),
          violations: [{ field: 'clientId', rule: 'must be a GUID' }],
        },
      },
    });
    // A refusal stored before it had fields of its own: its message alone.
    await tenants.updateStatus('acme', {
      registrationError: null,
      lastErrorMessage: 'registration refused: x',
    });
    expect(await call('GET', '/v1/tenants/acme/defender')).toEqual({
      status: 404,
      body: { error: { code: 'TENANT_NOT_REGISTERED', message: expect.stringMatching(/refused: x$/) } },
    });
  });

  it("GET should name a refused registration's fields in TENANT_NOT_REGISTERED as a PUT's 400 names them", async () => {
    const { call, registry } = setup();
    const body = registrationBody({ clientId: 'not-a-guid', pollIntervalMinutes: 5, cloud: 'mars' });
    const refusedPut = await call('PUT', '/v1/tenants/acme/defender', body);
    expect(refusedPut.status).toBe(400);
    const { violations } = (refusedPut.body as { error: { violations: unknown[] } }).error;
    expect(violations).toHaveLength(3);
    // The same settings refused in a Director push: stored with the push's field names.
    const validated = validateRegistration({ tenantId: 'acme', defender: body });
    expect(validated.ok).toBe(false);
    await registry.reject('acme', validated.ok ? [] : validated.violations, {
      source: 'director',
      generation: 3,
    });
    expect(await call('GET', '/v1/tenants/acme/defender')).toMatchObject({
      status: 404,
      body: { error: { code: 'TENANT_NOT_REGISTERED', violations } },
    });
  });

  it("GET should name a refused update's fields in status.registrationError as a PUT's 400 names them", async () => {
    const { call, registry } = setup();
    await call('PUT', '/v1/tenants/acme/defender', registrationBody());
    await registry.reject(
      'acme',
      [
        { field: 'defender.clientSecret', rule: "must be the secret's Value" },
        { field: 'defender.pollIntervalMinutes', rule: 'must be >= 10' },
      ],
      { source: 'director', generation: 4 },
    );
    const answer = await call('GET', '/v1/tenants/acme/defender');
    expect(answer).toMatchObject({
      status: 200,
      body: {
        status: {
          registrationError: {
            code: 'REGISTRATION_INVALID',
            message:
              "registration refused: clientSecret must be the secret's Value; pollIntervalMinutes must be >= 10",
            violations: [
              { field: 'clientSecret', rule: "must be the secret's Value" },
              { field: 'pollIntervalMinutes', rule: 'must be >= 10' },
            ],
            source: 'director',
            generation: 4,
          },
        },
      },
    });
    expect(JSON.stringify(answer.body)).not.toContain('defender.');
  });

  it("GET should keep a failed registration's message as it is in status.registrationError", async () => {
    const { call, registry } = setup();
    await call('PUT', '/v1/tenants/acme/defender', registrationBody());
    const failure = { code: 'TENANT_BUSY', message: 'tenant acme is being written by another request' };
    await registry.reject('acme', failure, { source: 'director', generation: 4 });
    expect(await call('GET', '/v1/tenants/acme/defender')).toMatchObject({
      status: 200,
      body: { status: { registrationError: { ...failure, violations: [] } } },
    });
  });

  it('DELETE should end the status of a tenant whose only registration was refused', async () => {
    const { call, tenants, registry } = setup();
    await registry.reject('acme', [{ field: 'defender.clientId', rule: 'must be a GUID' }], {
      source: 'director',
      generation: 3,
    });
    expect((await call('DELETE', '/v1/tenants/acme/defender')).status).toBe(204);
    expect(await tenants.getStatus('acme')).toEqual({});
    expect(await call('GET', '/v1/tenants/acme/defender')).toMatchObject({
      status: 404,
      body: { error: { code: 'TENANT_NOT_FOUND' } },
    });
    expect((await call('DELETE', '/v1/tenants/acme/defender')).status).toBe(404);
  });

  it('PUT accepted should clear a refused Director update from the status; one refused should leave it', async () => {
    const { call, registry } = setup();
    await call('PUT', '/v1/tenants/acme/defender', registrationBody());
    await registry.reject('acme', [{ field: 'defender.clientSecret', rule: "must be the secret's Value" }], {
      source: 'director',
      generation: 4,
    });
    const refused = await call('PUT', '/v1/tenants/acme/defender', registrationBody({ clientSecret: ' x' }));
    expect(refused).toMatchObject({ status: 400, body: { error: { code: 'VALIDATION_FAILED' } } });
    expect(await call('GET', '/v1/tenants/acme/defender')).toMatchObject({
      status: 200,
      body: { status: { state: 'active', registrationError: { generation: 4 } } },
    });
    // The registration in force sent again: nothing written, the refusal no longer stands.
    const again = await call('PUT', '/v1/tenants/acme/defender', registrationBody());
    expect(again).toMatchObject({ status: 200, body: { status: { state: 'active' } } });
    expect((again.body as { status: Record<string, unknown> }).status['registrationError']).toBeUndefined();
  });

  it('DELETE should write a tombstone with its revision, remove the tenant and forget its schedule', async () => {
    const { call, publisher, tenants, cleared } = setup();
    expect((await call('DELETE', '/v1/tenants/acme/defender')).status).toBe(404);
    await call('PUT', '/v1/tenants/acme/defender', registrationBody());
    expect((await call('DELETE', '/v1/tenants/acme/defender')).status).toBe(204);
    const tombstone = publisher.sent.at(-1)?.message;
    expect(tombstone?.value).toBeNull();
    expect(Number(tombstone?.headers?.[REVISION_HEADER])).toBeGreaterThan(
      (publisher.sent[0]?.message.value as TenantRecord).revision,
    );
    expect(await tenants.get('acme')).toBeNull();
    expect(cleared).toEqual(['acme']);
  });

  it('PUT and DELETE should not start their write once the stop cut the request', async () => {
    // The stop cuts the requests while they wait for the rebuild: their writes must not start after it.
    const stop = new AbortController();
    let rebuilding = false;
    const { tenants, publisher, call } = setup(testSealer(), async () => {
      if (!rebuilding) return;
      stop.abort(new Error('the server is stopping'));
    });
    expect((await call('PUT', '/v1/tenants/kept/defender', registrationBody())).status).toBe(201);
    rebuilding = true;
    await expect(
      call('PUT', '/v1/tenants/acme/defender', registrationBody(), stop.signal),
    ).rejects.toMatchObject({ code: 'REQUEST_CUT' });
    await expect(call('DELETE', '/v1/tenants/kept/defender', undefined, stop.signal)).rejects.toMatchObject({
      code: 'REQUEST_CUT',
    });
    expect(publisher.sent).toHaveLength(1);
    expect(await tenants.get('acme')).toBeNull();
    expect(await tenants.get('kept')).not.toBeNull();
  });

  it('should answer 503 NOT_READY at once, writing nothing, until the first rebuild from Kafka succeeded', async () => {
    let rebuilt = false;
    let readied = 0;
    const gate = rebuiltGate(
      () => rebuilt,
      async () => void readied++,
    );
    const { publisher, call } = setup(testSealer(), gate);
    for (const [method, path] of [
      ['PUT', '/v1/tenants/acme/defender'],
      ['GET', '/v1/tenants/acme/defender'],
      ['DELETE', '/v1/tenants/acme/defender'],
      ['POST', '/v1/tenants/acme/defender/test'],
    ] as const) {
      const answer = await call(method, path, method === 'PUT' ? registrationBody() : undefined);
      expect(answer).toMatchObject({ status: 503, body: { error: { code: 'NOT_READY' } } });
    }
    expect(publisher.sent).toEqual([]);
    expect(readied).toBe(0);
    rebuilt = true;
    expect((await call('PUT', '/v1/tenants/acme/defender', registrationBody())).status).toBe(201);
    expect(readied).toBe(1);
  });

  it('PUT with enabled false should disable the tenant and forget its schedule', async () => {
    const { call, cleared } = setup();
    await call('PUT', '/v1/tenants/acme/defender', registrationBody());
    const answer = await call('PUT', '/v1/tenants/acme/defender', registrationBody({ enabled: false }));
    expect(answer.body).toMatchObject({
      enabled: false,
      disabledReason: 'disabled by an administrator',
      status: { state: 'disabled' },
    });
    expect(cleared).toEqual(['acme']);
  });

  it('PUT with enabled false should clear the next poll time its last cycle set, as a disable does', async () => {
    const { call, tenants } = setup();
    await call('PUT', '/v1/tenants/acme/defender', registrationBody());
    // What a poller writes as a cycle starts.
    await tenants.updateStatus('acme', { nextPollAt: new Date(Date.now() + 3_600_000).toISOString() });
    const answer = await call('PUT', '/v1/tenants/acme/defender', registrationBody({ enabled: false }));
    expect(answer.body).toMatchObject({ enabled: false, status: { state: 'disabled' } });
    expect((answer.body as { status: Record<string, unknown> }).status).not.toHaveProperty('nextPollAt');
    expect(await tenants.getStatus('acme')).not.toHaveProperty('nextPollAt');
  });

  it('POST test should check access with the stored credentials and answer the verdict', async () => {
    const { call, checked } = setup();
    expect((await call('POST', '/v1/tenants/acme/defender/test')).status).toBe(404);
    await call('PUT', '/v1/tenants/acme/defender', registrationBody({ cloud: 'gcc', region: 'us' }));
    const answer = await call('POST', '/v1/tenants/acme/defender/test');
    expect(checked).toEqual([
      {
        azureTenantId: GUID_A,
        clientId: expect.any(String),
        clientSecret: 'Sup3r~secret-value',
        cloud: 'gcc',
        region: 'us',
      },
    ]);
    expect(answer).toMatchObject({
      status: 200,
      body: {
        tenantId: 'acme',
        ok: false,
        verdict: expect.stringMatching(/^FAIL/),
        error: { code: 'DEFENDER_INVALID_SECRET' },
      },
    });
    expect(JSON.stringify(answer.body)).not.toContain('Sup3r');
  });

  it('POST test should ask for vulnerabilities the way the last cycle read them and answer whether they are readable', async () => {
    const refused =
      'The Defender API refused /api/machines/SoftwareVulnerabilitiesByMachine (403 DisabledFeature)';
    const { tenants, call, checked } = setup(testSealer(), async () => undefined, {
      ok: false,
      verdict: `FAIL: credentials work and the device list is readable, but vulnerabilities are not: ${refused}`,
      tokenIssued: true,
      machinesReadable: true,
      vulnerabilitiesReadable: false,
      noDevices: false,
      roles: ['Machine.Read.All', 'Vulnerability.Read.All'],
      permissions: { 'Machine.Read.All': true, 'Vulnerability.Read.All': true },
      error: { code: 'DEFENDER_FEATURE_DISABLED', message: refused },
    });
    await call('PUT', '/v1/tenants/acme/defender', registrationBody());
    await tenants.updateStatus('acme', { vulnerabilityMode: 'bulk' });
    const answer = await call('POST', '/v1/tenants/acme/defender/test');
    expect(checked).toEqual([expect.objectContaining({ vulnerabilityMode: 'bulk' })]);
    expect(answer).toMatchObject({
      status: 200,
      body: {
        tenantId: 'acme',
        ok: false,
        machinesReadable: true,
        vulnerabilitiesReadable: false,
        verdict: expect.stringMatching(/^FAIL: .*but vulnerabilities are not: .*DisabledFeature/),
        error: { code: 'DEFENDER_FEATURE_DISABLED' },
      },
    });
  });

  it('POST test should answer whether the device list was read empty, so that OK with no devices is told from OK', async () => {
    const empty =
      'OK: credentials and consent work; the token carries Machine.Read.All, Vulnerability.Read.All, but the ' +
      'device list is empty: the Defender API answered 404 ResourceNotFound: No machines were found for the tenant.';
    const { call } = setup(testSealer(), async () => undefined, {
      ok: true,
      verdict: empty,
      tokenIssued: true,
      machinesReadable: true,
      vulnerabilitiesReadable: true,
      noDevices: true,
      roles: ['Machine.Read.All', 'Vulnerability.Read.All'],
      permissions: { 'Machine.Read.All': true, 'Vulnerability.Read.All': true },
    });
    await call('PUT', '/v1/tenants/acme/defender', registrationBody());
    const answer = await call('POST', '/v1/tenants/acme/defender/test');
    expect(answer).toMatchObject({
      status: 200,
      body: { tenantId: 'acme', ok: true, machinesReadable: true, noDevices: true, verdict: empty },
    });
  });

  it('POST test should answer a FAIL verdict, asking Microsoft nothing, when the stored secret does not open', async () => {
    const { tenants, call, checked } = setup();
    await call('PUT', '/v1/tenants/acme/defender', registrationBody());
    const current = (await tenants.get('acme')) as TenantRecord;
    const gone = sealedWithKeyNotHeld();
    tenants.records.set('acme', { ...current, defender: { ...current.defender, clientSecret: gone } });
    const answer = await call('POST', '/v1/tenants/acme/defender/test');
    expect(answer).toEqual({
      status: 200,
      body: {
        tenantId: 'acme',
        ok: false,
        verdict: expect.stringMatching(
          /^FAIL: the stored clientSecret of tenant acme cannot be opened with this registrar's keys \(.*sealed with key k0, which is not configured.*\): PUT the tenant's clientSecret again$/,
        ),
        tokenIssued: false,
        machinesReadable: false,
        vulnerabilitiesReadable: false,
        noDevices: false,
        roles: [],
        permissions: { 'Machine.Read.All': false, 'Vulnerability.Read.All': false },
        error: { code: 'SECRET_UNAVAILABLE', message: expect.stringContaining('PUT the tenant') },
      },
    });
    expect(JSON.stringify(answer.body)).not.toMatch(/Sup3r|ciphertext/);
    expect(checked).toEqual([]);
  });

  it('POST test should give up the access check when the request is aborted (the server stops)', async () => {
    const { call, signals } = setup();
    await call('PUT', '/v1/tenants/acme/defender', registrationBody());
    const stop = new AbortController();
    await call('POST', '/v1/tenants/acme/defender/test', undefined, stop.signal);
    expect(signals).toHaveLength(1);
    expect(signals[0]?.aborted).toBe(false);
    stop.abort();
    expect(signals[0]?.aborted).toBe(true);
  });
});
