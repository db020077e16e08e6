import { createHash } from 'node:crypto';
import Ajv from 'ajv';
import type { ErrorObject } from 'ajv';
import { ProfileError } from './errors';
import type { ProfileViolation } from './errors';

/**
 * A tenant's risk profile, complete: every weight, every indicator's points, the CVE rule and the
 * missing-signal policy (`scoring.md`, "Profile"). `parseProfile` is the only way to get one, so every
 * Profile in the system has passed the schema and the model's rules and has the defaults filled in.
 */
export interface Profile {
  readonly weights: { readonly criticalRisk: number; readonly operational: number };
  readonly critical: {
    readonly riskScore: { readonly Low: number; readonly Medium: number; readonly High: number };
    readonly exposureLevel: { readonly Medium: number; readonly High: number };
    readonly avStatus: { readonly Disabled: number; readonly NotReporting: number };
    readonly onboarding: { readonly NotOnboarded: number };
  };
  readonly operational: {
    readonly healthStatus: { readonly Inactive: number; readonly ImpairedCommunication: number };
    readonly inactivity: {
      readonly lt1d: number;
      readonly '1to3d': number;
      readonly '4to7d': number;
      readonly '8to14d': number;
      readonly gt14d: number;
    };
    readonly criticalCves: {
      /** CVSS v3 base score (0–10) from which a CVE counts as critical (inclusive). Default 9.0. */
      readonly cvssThreshold: number;
      /** Operational points per distinct critical CVE, integer 0–100. Default 25. */
      readonly pointsPerCve: number;
      /** Cap on the CVE contribution, integer 0–100. Default 100. */
      readonly maxPoints: number;
    };
  };
  /** How a missing signal scores: `ignore` (0 points, default) or `assume-worst`. */
  readonly missingSignals: MissingSignalsPolicy;
}

export type MissingSignalsPolicy = 'ignore' | 'assume-worst';

/** What a tenant may send: any subset of a Profile, at any depth. */
export type ProfileInput = DeepPartial<Profile>;
type DeepPartial<T> = { -readonly [K in keyof T]?: T[K] extends object ? DeepPartial<T[K]> : T[K] };

/** The vendor's default profile (`scoring.md`); what a tenant leaves out takes these values. */
export const DEFAULT_PROFILE: Profile = deepFreeze({
  weights: { criticalRisk: 70, operational: 30 },
  critical: {
    riskScore: { Low: 20, Medium: 50, High: 100 },
    exposureLevel: { Medium: 40, High: 80 },
    avStatus: { Disabled: 100, NotReporting: 60 },
    onboarding: { NotOnboarded: 100 },
  },
  operational: {
    healthStatus: { Inactive: 60, ImpairedCommunication: 50 },
    inactivity: { lt1d: 0, '1to3d': 20, '4to7d': 40, '8to14d': 70, gt14d: 100 },
    criticalCves: { cvssThreshold: 9.0, pointsPerCve: 25, maxPoints: 100 },
  },
  missingSignals: 'ignore',
});

const POINTS = { type: 'integer', minimum: 0, maximum: 100 } as const;

function pointsTable(keys: readonly string[]): Record<string, unknown> {
  return {
    type: 'object',
    additionalProperties: false,
    properties: Object.fromEntries(keys.map((key) => [key, POINTS])),
  };
}

function section(properties: Record<string, unknown>): Record<string, unknown> {
  return { type: 'object', additionalProperties: false, properties };
}

/**
 * JSON Schema (draft-07) of a tenant's profile input. Nothing is required (defaults fill the gaps),
 * nothing unknown is allowed (a misspelt key would otherwise silently keep its default). The sum of the
 * weights is checked after the merge, because it involves the defaults.
 */
export const PROFILE_SCHEMA: Record<string, unknown> = deepFreeze({
  $schema: 'http://json-schema.org/draft-07/schema#',
  title: 'ZTA risk profile',
  ...section({
    weights: section({ criticalRisk: POINTS, operational: POINTS }),
    critical: section({
      riskScore: pointsTable(['Low', 'Medium', 'High']),
      exposureLevel: pointsTable(['Medium', 'High']),
      avStatus: pointsTable(['Disabled', 'NotReporting']),
      onboarding: pointsTable(['NotOnboarded']),
    }),
    operational: section({
      healthStatus: pointsTable(['Inactive', 'ImpairedCommunication']),
      inactivity: pointsTable(['lt1d', '1to3d', '4to7d', '8to14d', 'gt14d']),
      criticalCves: section({
        cvssThreshold: { type: 'number', minimum: 0, maximum: 10 },
        pointsPerCve: POINTS,
        maxPoints: POINTS,
      }),
    }),
    missingSignals: { enum: ['ignore', 'assume-worst'] },
  }),
});

// Compiled once per process: ajv code generation costs milliseconds, validation then costs microseconds.
// `verbose` gives each error its schema and data, from which the messages below name the exact rule.
const validate = new Ajv({ allErrors: true, strict: true, verbose: true }).compile(PROFILE_SCHEMA);

/**
 * Validates a tenant's profile and fills in the defaults. `undefined` or `null` means "no profile":
 * the default. Throws a ProfileError naming every offending field and its rule.
 */
export function parseProfile(input: unknown): Profile {
  if (input === undefined || input === null) return DEFAULT_PROFILE;
  if (!validate(input)) throw new ProfileError(violationsOf(validate.errors ?? []));
  const merged = mergeDefaults(DEFAULT_PROFILE, input) as unknown as Profile;
  const { criticalRisk, operational } = merged.weights;
  if (criticalRisk + operational !== 100) {
    throw new ProfileError([
      {
        path: 'profile.weights',
        rule:
          `criticalRisk + operational must total exactly 100 (a weight left out takes its default ` +
          `${DEFAULT_PROFILE.weights.criticalRisk}/${DEFAULT_PROFILE.weights.operational})`,
        got: `${criticalRisk} + ${operational} = ${criticalRisk + operational}`,
      },
    ]);
  }
  return deepFreeze(merged);
}

function violationsOf(errors: readonly ErrorObject[]): ProfileViolation[] {
  const byPath = new Map<string, ProfileViolation>();
  for (const error of errors) {
    const base = `profile${error.instancePath.split('/').slice(1).map(unescapePointer).map(dotted).join('')}`;
    if (error.keyword === 'additionalProperties') {
      const key = String((error.params as { additionalProperty: string }).additionalProperty);
      const allowed = Object.keys((error.parentSchema as { properties?: object }).properties ?? {});
      const path = `${base}${dotted(key)}`;
      byPath.set(path, { path, rule: `unknown key (allowed: ${allowed.join(', ')})` });
    } else if (!byPath.has(base)) {
      byPath.set(base, { path: base, rule: ruleOf(error), got: describe(error.data) });
    }
  }
  return [...byPath.values()];
}

/** The whole rule of the field (type, range or choices), whichever part of it failed; never the value. */
function ruleOf(error: ErrorObject): string {
  const schema = (error.parentSchema ?? {}) as {
    type?: string;
    minimum?: number;
    maximum?: number;
    enum?: unknown[];
  };
  if (schema.enum) return `must be one of ${schema.enum.map((v) => JSON.stringify(v)).join(', ')}`;
  if (schema.type === 'object') return 'must be an object';
  if (schema.type === 'integer' || schema.type === 'number') {
    const kind = schema.type === 'integer' ? 'an integer' : 'a number';
    return `must be ${kind} from ${schema.minimum} to ${schema.maximum}`;
  }
  return error.message ?? 'is invalid';
}

function describe(value: unknown): string {
  if (Array.isArray(value)) return 'an array';
  if (value === null) return 'null';
  if (typeof value === 'object') return 'an object';
  const text = typeof value === 'string' ? JSON.stringify(value) : String(value);
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

function unescapePointer(segment: string): string {
  return segment.replace(/~1/g, '/').replace(/~0/g, '~');
}

function dotted(key: string): string {
  return /^[A-Za-z0-9_$-]+$/.test(key) ? `.${key}` : `[${JSON.stringify(key)}]`;
}

function mergeDefaults(defaults: unknown, given: unknown): unknown {
  if (!isPlainObject(defaults) || !isPlainObject(given)) return given === undefined ? defaults : given;
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(defaults)) out[key] = mergeDefaults(defaults[key], given[key]);
  return out;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

const hashes = new WeakMap<Profile, string>();

/**
 * A stable identifier of a profile's content: the hex SHA-256 of its canonical JSON (keys sorted at every
 * level), so two profiles with the same values hash the same whatever their key order. Give it a parsed
 * profile: the defaults are then part of the hash, so "no profile" and "the default written out" agree.
 * Cached per profile object.
 */
export function profileHash(profile: Profile): string {
  let hash = hashes.get(profile);
  if (hash === undefined) {
    hash = createHash('sha256').update(canonicalJson(profile)).digest('hex');
    hashes.set(profile, hash);
  }
  return hash;
}

/** JSON with object keys sorted (by UTF-16 code units) at every level. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (isPlainObject(value)) {
    const keys = Object.keys(value)
      .filter((key) => value[key] !== undefined)
      .sort();
    return `{${keys.map((key) => `${JSON.stringify(key)}:${canonicalJson(value[key])}`).join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value)) deepFreeze(child);
  }
  return value;
}
