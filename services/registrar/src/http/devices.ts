import { BANDS, type Band } from '@urs/contracts';
import type { ScoreStore, StoredScore } from '@urs/store';
import { tenantIdOf } from './params';
import { registeredTenant, type RegisteredTenantDeps } from './registered';
import { ApiError, type ApiRequest, type ApiResponse, type Route } from './router';

export interface DeviceRoutesDeps extends RegisteredTenantDeps {
  scores: Pick<ScoreStore, 'getDeviceScore' | 'listDeviceScores' | 'history'>;
}

/** Most devices one list answer carries. */
const MAX_LIMIT = 5000;
const DEFAULT_LIMIT = 1000;

/** The query parameters of the list; any other is refused rather than ignored (`?Band=` would list every band). */
const LIST_PARAMETERS = ['band', 'limit', 'offset'] as const;

function checkQuery(request: ApiRequest, accepted: readonly string[]): void {
  const names = [...request.query.keys()];
  const unknown = [...new Set(names.filter((name) => !accepted.includes(name)))];
  const acceptedText = `accepted: ${accepted.join(', ')}`;
  if (unknown.length > 0) {
    throw new ApiError(
      400,
      'VALIDATION_FAILED',
      `unknown query parameter${unknown.length > 1 ? 's' : ''} ${unknown.join(', ')} (${acceptedText})`,
      unknown.map((field) => ({ field, rule: `is not a query parameter of this route (${acceptedText})` })),
    );
  }
  const repeated = [...new Set(names.filter((name, index) => names.indexOf(name) !== index))];
  if (repeated.length > 0) {
    throw new ApiError(
      400,
      'VALIDATION_FAILED',
      `query parameter${repeated.length > 1 ? 's' : ''} ${repeated.join(', ')} given more than once`,
      repeated.map((field) => ({ field, rule: 'must be given at most once' })),
    );
  }
}

const normalise = (text: string): string => text.toLowerCase().replace(/[\s_-]+/g, '');
const BAND_BY_NAME = new Map<string, Band>(BANDS.map((band) => [normalise(band), band]));

function bandOf(request: ApiRequest): Band | undefined {
  const raw = request.query.get('band');
  if (raw === null || raw === '') return undefined;
  const band = BAND_BY_NAME.get(normalise(raw));
  if (!band) {
    throw new ApiError(400, 'VALIDATION_FAILED', `unknown band "${raw}"`, [
      {
        field: 'band',
        rule: `must be one of ${BANDS.map((name) => `"${name}"`).join(', ')} (case and dashes ignored)`,
      },
    ]);
  }
  return band;
}

function integerOf(request: ApiRequest, name: string, fallback: number, max: number): number {
  const raw = request.query.get(name);
  if (raw === null || raw === '') return fallback;
  if (!/^\d+$/.test(raw) || Number(raw) > max) {
    throw new ApiError(400, 'VALIDATION_FAILED', `${name} is not valid`, [
      { field: name, rule: `must be a whole number from 0 to ${max}` },
    ]);
  }
  return Number(raw);
}

/**
 * One line of the list: enough to find a device and see where it stands, with why each missing signal is
 * missing (`missingReasons`, as the device's own answer says it; absent when nothing is missing, and from a
 * score stored by an older scorer).
 */
function listItem(stored: StoredScore): Record<string, unknown> {
  const device = stored.device;
  return {
    deviceId: device.deviceId,
    computerDnsName: device.computerDnsName,
    score: device.score,
    band: device.band,
    missing: device.missing,
    ...(device.missingReasons !== undefined ? { missingReasons: device.missingReasons } : {}),
    cycleId: stored.cycleId,
    cycleStartedAt: stored.cycleStartedAt,
    scoredAt: stored.scoredAt,
  };
}

/**
 * `GET /v1/tenants/{tenantId}/devices?band=&limit=&offset=`: the tenant's devices with their latest score,
 * sorted by device id (another query parameter, or one given twice, is a 400); `GET /v1/tenants/{tenantId}/devices/{deviceId}`: one device's latest score with its
 * explanation (every matched indicator and its points, the missing signals and why each is missing, the
 * signal values, the vulnerability summary, the profile hash) and its recent history (each entry's missing
 * signals with their reasons too, where the entry kept them).
 */
export function deviceRoutes(deps: DeviceRoutesDeps): Route[] {
  async function list(request: ApiRequest): Promise<ApiResponse> {
    const tenantId = tenantIdOf(request);
    checkQuery(request, LIST_PARAMETERS);
    const band = bandOf(request);
    const limit = integerOf(request, 'limit', DEFAULT_LIMIT, MAX_LIMIT);
    const offset = integerOf(request, 'offset', 0, Number.MAX_SAFE_INTEGER);
    await registeredTenant(deps, tenantId);
    const page = await deps.scores.listDeviceScores(tenantId, { ...(band ? { band } : {}), limit, offset });
    return {
      status: 200,
      body: {
        tenantId,
        ...(band ? { band } : {}),
        total: page.total,
        offset,
        limit,
        devices: page.items.map(listItem),
      },
    };
  }

  async function one(request: ApiRequest): Promise<ApiResponse> {
    const tenantId = tenantIdOf(request);
    const deviceId = request.params['deviceId'] ?? '';
    await registeredTenant(deps, tenantId);
    const stored = await deps.scores.getDeviceScore(tenantId, deviceId);
    if (stored === null) {
      throw new ApiError(
        404,
        'DEVICE_NOT_FOUND',
        `device ${deviceId} of tenant ${tenantId} has no score (not listed yet, or gone)`,
      );
    }
    const history = await deps.scores.history(tenantId, deviceId);
    return {
      status: 200,
      body: {
        tenantId,
        cycleId: stored.cycleId,
        cycleStartedAt: stored.cycleStartedAt,
        collectedAt: stored.collectedAt,
        scoredAt: stored.scoredAt,
        ...stored.device,
        history,
      },
    };
  }

  return [
    { method: 'GET', path: '/v1/tenants/:tenantId/devices', handler: list },
    { method: 'GET', path: '/v1/tenants/:tenantId/devices/:deviceId', handler: one },
  ];
}
