import { DefenderError, DefenderErrorCode } from './errors';

export const DEFENDER_CLOUDS = ['commercial', 'gcc', 'gcc-high', 'dod'] as const;
export type DefenderCloud = (typeof DEFENDER_CLOUDS)[number];

export const DEFENDER_REGIONS = ['us', 'eu', 'uk', 'au', 'swa', 'ina', 'aea'] as const;
export type DefenderRegion = (typeof DEFENDER_REGIONS)[number];

/** Operator overrides applied to every tenant (read once from the environment by the caller). */
export interface DefenderEndpointOverrides {
  /** Replaces the Entra authority host, e.g. the simulator's `https://127.0.0.1:PORT` (`URS_DEFENDER_AUTHORITY_HOST`). */
  authorityHost?: string;
  /** Replaces the MDE API base URL (`URS_DEFENDER_API_BASE`). */
  apiBase?: string;
  /**
   * Replaces the token scope of every tenant, whatever its cloud (`URS_DEFENDER_SCOPE` in the CLI, which
   * reads one tenant). Wins over `scopes`.
   */
  scope?: string;
  /**
   * Replaces the token scope of the tenants of one cloud: the escape hatch for the US Government clouds,
   * whose scope Microsoft does not document (see `CLOUDS` below). `URS_DEFENDER_SCOPE_GCC`,
   * `URS_DEFENDER_SCOPE_GCC_HIGH`, `URS_DEFENDER_SCOPE_DOD` (see `scopeVariable`).
   */
  scopes?: Partial<Record<DefenderCloud, string>>;
}

/** The variable libs/config reads a cloud's scope override from (`gcc-high` → `URS_DEFENDER_SCOPE_GCC_HIGH`). */
export function scopeVariable(cloud: DefenderCloud): string {
  return `URS_DEFENDER_SCOPE_${cloud.toUpperCase().replace(/-/g, '_')}`;
}

/** Where one tenant's tokens and API calls go. */
export interface DefenderEndpoints {
  /** The tenant's cloud, as resolved (`commercial` when it named none). */
  cloud: DefenderCloud;
  /** Entra ID authority host, without a trailing slash. */
  authorityHost: string;
  /** MDE API base URL, without a trailing slash (paths start with `/api/...`). */
  apiBase: string;
  /** OAuth scope of the client-credentials request. */
  scope: string;
  /** True when the scope came from an operator override rather than the cloud's default. */
  scopeOverridden: boolean;
  /** True when an override is active: instance discovery and authority validation are then turned off. */
  overridden: boolean;
}

interface CloudEndpoints {
  authorityHost: string;
  /** The API host with no region. */
  apiBase: string;
  /** Builds the regional host, or undefined when the cloud has no regional hosts. */
  regional?: (region: DefenderRegion) => string;
  scope: string;
}

/**
 * Commercial: token scope and hosts as documented (defender-api.md §4): the scope keeps the
 * `api.securitycenter.microsoft.com` resource URI, which is what Microsoft's own examples request even
 * against the newer `api.security.microsoft.com` hosts.
 *
 * US Government (DD `gov.md#api`): GCC signs in at login.microsoftonline.com and calls
 * api-gcc.securitycenter.microsoft.us; GCC High and DoD sign in at login.microsoftonline.us and call
 * api-gov.securitycenter.microsoft.us. Microsoft does not document their token scope.
 * [inference] The scope is the API host's resource URI, as in commercial: public GCC scripts request
 * `https://api-gcc.securitycenter.microsoft.us/.default`; for GCC High/DoD we follow the same rule
 * (`https://api-gov.securitycenter.microsoft.us/.default`). Operators can correct it per cloud with the scope
 * overrides (`scopes`, from `URS_DEFENDER_SCOPE_GCC`, `URS_DEFENDER_SCOPE_GCC_HIGH`, `URS_DEFENDER_SCOPE_DOD`).
 * The government clouds have no regional hosts; a region given for them is ignored.
 */
const CLOUDS: Record<DefenderCloud, CloudEndpoints> = {
  commercial: {
    authorityHost: 'https://login.microsoftonline.com',
    apiBase: 'https://api.security.microsoft.com',
    regional: (region) => `https://${region}.api.security.microsoft.com`,
    scope: 'https://api.securitycenter.microsoft.com/.default',
  },
  gcc: {
    authorityHost: 'https://login.microsoftonline.com',
    apiBase: 'https://api-gcc.securitycenter.microsoft.us',
    scope: 'https://api-gcc.securitycenter.microsoft.us/.default',
  },
  'gcc-high': {
    authorityHost: 'https://login.microsoftonline.us',
    apiBase: 'https://api-gov.securitycenter.microsoft.us',
    scope: 'https://api-gov.securitycenter.microsoft.us/.default',
  },
  dod: {
    authorityHost: 'https://login.microsoftonline.us',
    apiBase: 'https://api-gov.securitycenter.microsoft.us',
    scope: 'https://api-gov.securitycenter.microsoft.us/.default',
  },
};

function trimSlash(url: string): string {
  return url.replace(/\/+$/, '');
}

/** WindowsDefenderATP's URI, named to an administrator whose token is another API's. */
export const DEFENDER_RESOURCE = 'https://api.securitycenter.microsoft.com';

/**
 * The `aud` of tokens of APIs known not to be WindowsDefenderATP's, which MDE refuses 403 (Microsoft's docs issue
 * 9246) whatever permission or consent the app has: Microsoft Graph (its URI in each cloud, and its app id, the
 * `aud` of a token asked by app id) and Microsoft 365 Defender (`api.security.microsoft.com`, whose tokens carry
 * none of the Defender for Endpoint roles). Only these are told apart: WindowsDefenderATP's tokens come with more
 * audiences than any list holds (its resource URIs, its app id `fc780465-2017-40d4-a0c5-307022471b92` when asked
 * by it, the resource of an operator's scope override, URS_DEFENDER_SCOPE*), and one taken for another API's
 * would send an administrator to change a scope that is right.
 */
const OTHER_API_AUDIENCES = new Set([
  'https://graph.microsoft.com',
  'https://graph.microsoft.us',
  'https://dod-graph.microsoft.us',
  '00000003-0000-0000-c000-000000000000',
  'https://api.security.microsoft.com',
]);

/** Whether a token's `aud` is an API known not to be WindowsDefenderATP (any case, trailing slash or not). */
export function isOtherApiAudience(audience: string): boolean {
  return OTHER_API_AUDIENCES.has(trimSlash(audience.trim()).toLowerCase());
}

function httpsUrl(field: string, value: string): string {
  let parsed: URL;
  try {
    parsed = new URL(value);
  } catch {
    throw new DefenderError(DefenderErrorCode.INVALID_CONFIG, `${field} must be an absolute https URL`);
  }
  if (parsed.protocol !== 'https:') {
    throw new DefenderError(
      DefenderErrorCode.INVALID_CONFIG,
      `${field} must use https (Entra ID refuses other schemes)`,
    );
  }
  return trimSlash(value);
}

/**
 * The endpoints of a tenant from its `cloud` (default commercial) and `region` (default none: the global
 * host). A tenant only ever names a cloud and a region, never a URL; only the operator's overrides can
 * point elsewhere, and they apply to every tenant.
 */
export function resolveEndpoints(
  cloud: string | undefined,
  region: string | undefined,
  overrides: DefenderEndpointOverrides = {},
): DefenderEndpoints {
  const cloudName = (cloud ?? 'commercial').toLowerCase();
  if (!(DEFENDER_CLOUDS as readonly string[]).includes(cloudName)) {
    throw new DefenderError(
      DefenderErrorCode.INVALID_CONFIG,
      `cloud must be one of ${DEFENDER_CLOUDS.join(', ')} (got "${cloud}")`,
    );
  }
  const regionName = region === undefined || region === '' ? undefined : region.toLowerCase();
  if (regionName !== undefined && !(DEFENDER_REGIONS as readonly string[]).includes(regionName)) {
    throw new DefenderError(
      DefenderErrorCode.INVALID_CONFIG,
      `region must be one of ${DEFENDER_REGIONS.join(', ')} or none (got "${region}")`,
    );
  }
  const cloudId = cloudName as DefenderCloud;
  const base = CLOUDS[cloudId];
  const apiBase = regionName && base.regional ? base.regional(regionName as DefenderRegion) : base.apiBase;
  const scope = overrides.scope ?? overrides.scopes?.[cloudId];
  return {
    cloud: cloudId,
    authorityHost: overrides.authorityHost
      ? httpsUrl('authorityHost', overrides.authorityHost)
      : base.authorityHost,
    apiBase: overrides.apiBase ? httpsUrl('apiBase', overrides.apiBase) : apiBase,
    scope: scope ?? base.scope,
    scopeOverridden: scope !== undefined,
    overridden: Boolean(overrides.authorityHost || overrides.apiBase),
  };
}
