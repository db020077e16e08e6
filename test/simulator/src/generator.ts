import { cveCatalog, type CatalogEntry } from './catalog';
import { hash32, hex32, mdeDate, Rng } from './rng';
import type { IpAddressRecord, MachineRecord } from './types';
import { scaledCveCount, type ExportVolume } from './volume';

// Machine records are pure functions of (fleet seed, index, fleet epoch): nothing is stored per
// device, so a 100,000-device tenant costs no memory until a page is requested.

const HOUR_MS = 3600 * 1000;
const DAY_MS = 24 * HOUR_MS;

// Multiplicative scramble of the device index (odd multiplier, invertible mod 2^32) so the last 8
// hex digits of the id look random yet the simulator can find a device by id without an index.
const ID_MULTIPLIER = 0x9e3779b1;
const ID_INVERSE = (() => {
  let inv = ID_MULTIPLIER;
  for (let i = 0; i < 5; i++) inv = Math.imul(inv, 2 - Math.imul(ID_MULTIPLIER, inv));
  return inv >>> 0;
})();

export function machineIdFor(seed: number, index: number): string {
  const rng = new Rng(seed, index, 1);
  const tail = hex32((Math.imul(index, ID_MULTIPLIER) + hash32(seed, 7)) >>> 0);
  return rng.hex(32) + tail;
}

/** The generated index a 40-hex id would have in a fleet with `seed`, or -1 when it cannot be one. */
export function indexOfMachineId(seed: number, id: string): number {
  if (!/^[0-9a-f]{40}$/.test(id)) return -1;
  const tail = parseInt(id.slice(32), 16);
  const index = Math.imul((tail - hash32(seed, 7)) >>> 0, ID_INVERSE) >>> 0;
  return index <= 0x7fffffff && machineIdFor(seed, index) === id ? index : -1;
}

const PLATFORMS: readonly (readonly [readonly [string, readonly string[], number | null, string], number])[] =
  [
    [['Windows10', ['22H2', '21H2'], 19045, 'desktop'], 33],
    [['Windows11', ['23H2', '22H2', '24H2'], 22631, 'laptop'], 35],
    [['WindowsServer2019', ['1809'], 17763, 'srv'], 8],
    [['WindowsServer2022', ['21H2'], 20348, 'srv'], 8],
    [['WindowsServer2016', ['1607'], 14393, 'srv'], 2],
    [['Ubuntu', ['22.4', '20.4'], null, 'web'], 6],
    [['RedHatEnterpriseLinux', ['9.5', '8.10'], null, 'db'], 3],
    [['macOS', ['14.5', '13.6'], null, 'mac'], 5],
  ];
const GROUPS: readonly (readonly [string | null, number])[] = [
  [null, 0],
  ['Workstations', 140],
  ['Servers', 141],
  ['Finance', 142],
  ['Engineering', 143],
];
const DOMAINS = ['corp.contoso.com', 'contoso.local', 'emea.contoso.com', ''];

function ipFor(rng: Rng, type: string): IpAddressRecord {
  return {
    ipAddress: `10.${rng.int(0, 255)}.${rng.int(0, 255)}.${rng.int(1, 254)}`,
    macAddress: rng.hex(12).toUpperCase(),
    type,
    operationalStatus: rng.chance(0.95) ? 'Up' : 'Down',
  };
}

/** Number of CVEs a generated device carries; ~40% are clean, the rest 1–30 skewed low. */
function vulnerabilityCount(seed: number, index: number, onboarded: boolean): number {
  const rng = new Rng(seed, index, 3);
  if (!onboarded || rng.chance(0.4)) return 0;
  return 1 + Math.floor(rng.next() ** 2 * 30);
}

// Weighted tables live at module level: literal arrays inside the generator were rebuilt per device.
const ONBOARDING = [
  ['Onboarded', 90],
  ['CanBeOnboarded', 5],
  ['InsufficientInfo', 3],
  ['Unsupported', 2],
] as const;
const AGE_BUCKETS = [
  [0, 70],
  [1, 15],
  [2, 8],
  [3, 7],
] as const;
/** [min, max] age in ms of each last-seen bucket: within a day, a week, a month, three months. */
const AGE_RANGES: readonly (readonly [number, number])[] = [
  [60_000, DAY_MS],
  [DAY_MS, 7 * DAY_MS],
  [7 * DAY_MS, 30 * DAY_MS],
  [30 * DAY_MS, 90 * DAY_MS],
];
const NOT_ONBOARDED_HEALTH = ['NoSensorData', 'Inactive', 'Unknown'];
const RECENT_HEALTH = [
  ['Active', 92],
  ['ImpairedCommunication', 4],
  ['NoSensorData', 2],
  ['NoSensorDataImpairedCommunication', 1],
  ['Unknown', 1],
] as const;
const RISK = [
  ['None', 50],
  ['Informational', 5],
  ['Low', 17],
  ['Medium', 16],
  ['High', 12],
] as const;
const EXPOSURE_CLEAN = ['None', 'Low', 'Low'];
const EXPOSURE_MANY = ['Medium', 'High', 'High'];
const EXPOSURE_SOME = ['Low', 'Medium', 'Medium'];
const AV_STATUS = [
  [undefined, 40],
  ['NotSupported', 35],
  ['Updated', 15],
  ['NotUpdated', 3],
  ['Disabled', 3],
  ['NotReporting', 2],
  ['Unknown', 2],
] as const;
const DEVICE_VALUE = [
  ['Normal', 90],
  ['High', 7],
  ['Low', 3],
] as const;
const MANAGED_BY = [
  ['Intune', 50],
  ['MicrosoftDefenderForEndpoint', 35],
  ['Unknown', 15],
] as const;
const TAGS = ['VIP', 'Prod', 'Kiosk', 'PCI'];
const EXCLUSION_REASONS = ['Duplicate', 'InactiveDevice', 'Other'];
const DROPPABLE = [
  'lastExternalIpAddress',
  'osBuild',
  'riskScore',
  'exposureLevel',
  'rbacGroupName',
  'ipAddresses',
  'version',
];

/** Onboarding status of generated device `index`: its own stream, so CVEs can be derived without the record. */
export function generatedOnboarding(seed: number, index: number): string {
  return new Rng(seed, index, 5).weighted(ONBOARDING);
}

export function generateMachine(seed: number, index: number, epochMs: number): MachineRecord {
  const rng = new Rng(seed, index, 2);
  const id = machineIdFor(seed, index);
  const [platform, versions, build, prefix] = rng.weighted(PLATFORMS);
  const isWindows = platform.startsWith('Windows');
  const onboardingStatus = generatedOnboarding(seed, index);
  const onboarded = onboardingStatus === 'Onboarded';
  const vulnCount = vulnerabilityCount(seed, index, onboarded);

  const ageBucket = rng.weighted(AGE_BUCKETS);
  const [minAge, maxAge] = AGE_RANGES[ageBucket] as readonly [number, number];
  const lastSeenMs = epochMs - rng.int(minAge, maxAge);
  const firstSeenMs = lastSeenMs - rng.int(DAY_MS, 700 * DAY_MS);

  let healthStatus: string;
  if (!onboarded) healthStatus = rng.pick(NOT_ONBOARDED_HEALTH);
  else if (ageBucket >= 2) healthStatus = rng.chance(0.9) ? 'Inactive' : 'NoSensorData';
  else healthStatus = rng.weighted(RECENT_HEALTH);

  let riskScore: string;
  let exposureLevel: string;
  if (!onboarded) {
    riskScore = 'None';
    exposureLevel = 'None';
  } else {
    riskScore = rng.weighted(RISK);
    exposureLevel = rng.pick(
      vulnCount === 0 ? EXPOSURE_CLEAN : vulnCount > 15 ? EXPOSURE_MANY : EXPOSURE_SOME,
    );
  }

  const group = rng.pick(GROUPS);
  const domain = rng.pick(DOMAINS);
  const host = `${prefix}-${rng.hex(6)}`;
  const aadDeviceId = isWindows && rng.chance(0.65) ? rng.guid() : null;
  const ips: IpAddressRecord[] = [ipFor(rng, rng.chance(0.7) ? 'Ethernet' : 'Wireless80211')];
  if (rng.chance(0.3)) ips.push(ipFor(rng, 'Other'));
  if (rng.chance(0.4))
    ips.push({ ipAddress: '127.0.0.1', macAddress: null, type: 'SoftwareLoopback', operationalStatus: 'Up' });
  const av = rng.weighted(AV_STATUS);
  const isServer = platform.startsWith('WindowsServer') || prefix === 'web' || prefix === 'db';
  const merged = rng.chance(0.01) && index > 0;
  const excluded = rng.chance(0.01);

  const record: MachineRecord = {
    id,
    computerDnsName: domain ? `${host}.${domain}` : host,
    firstSeen: mdeDate(firstSeenMs, rng.int(0, 9999)),
    lastSeen: mdeDate(lastSeenMs, rng.int(0, 9999)),
    osPlatform: platform,
    osVersion: null,
    osProcessor: 'x64',
    version: rng.pick(versions),
    lastIpAddress: (ips[0] as IpAddressRecord).ipAddress,
    lastExternalIpAddress: `${rng.int(20, 220)}.${rng.int(0, 255)}.${rng.int(0, 255)}.${rng.int(1, 254)}`,
    agentVersion: !onboarded
      ? null
      : isWindows
        ? `10.8760.${build ?? 19041}.${rng.int(1000, 4999)}`
        : `101.${rng.int(23000, 24999)}.${String(rng.int(1, 20)).padStart(4, '0')}`,
    osBuild: build,
    healthStatus,
    deviceValue: rng.weighted(DEVICE_VALUE),
    rbacGroupId: group[1],
    rbacGroupName: group[0],
    riskScore,
    exposureLevel,
    isAadJoined: aadDeviceId !== null,
    aadDeviceId,
    machineTags: rng.chance(0.15) ? [rng.pick(TAGS)] : [],
    defenderAvStatus: av,
    onboardingStatus,
    osArchitecture: isWindows && rng.chance(0.03) ? '32-bit' : '64-bit',
    managedBy: rng.weighted(MANAGED_BY),
    managedByStatus: rng.chance(0.8) ? 'Success' : 'Unknown',
    ipAddresses: ips,
    vmMetadata:
      isServer && rng.chance(0.4)
        ? {
            vmId: rng.guid(),
            cloudProvider: 'Azure',
            resourceId: `/subscriptions/${rng.guid()}/resourceGroups/prod/providers/Microsoft.Compute/virtualMachines/${host}`,
            subscriptionId: rng.guid(),
          }
        : null,
    isExcluded: excluded,
    exclusionReason: excluded ? rng.pick(EXCLUSION_REASONS) : null,
    mergedIntoMachineId: merged ? machineIdFor(seed, rng.int(0, index - 1)) : null,
    isPotentialDuplication: merged || rng.chance(0.01),
  };
  // A few real records lack documented fields entirely. Absent fields are set to undefined rather
  // than deleted (JSON omits them either way; `delete` would slow every later access and stringify).
  if (rng.chance(0.02)) record[rng.pick(DROPPABLE)] = undefined;
  return record;
}

/**
 * Whether a device's onboardingStatus says it is onboarded (in any case). A device patched with one that is not
 * a string (a number, a boolean, null) is not: it has no CVEs, as a device Defender does not assess.
 */
export function isOnboarded(onboardingStatus: unknown): boolean {
  return typeof onboardingStatus === 'string' && onboardingStatus.toLowerCase() === 'onboarded';
}

/**
 * The CVEs of generated device `index`, drawn from the shared catalog without repeats; `volume` scales
 * their number (see volume.ts).
 */
export function generateCveEntries(
  seed: number,
  index: number,
  onboardingStatus: unknown,
  volume?: ExportVolume,
): CatalogEntry[] {
  const onboarded = isOnboarded(onboardingStatus);
  const count = scaledCveCount(vulnerabilityCount(seed, index, onboarded), volume);
  if (count === 0) return [];
  const catalog = cveCatalog();
  const rng = new Rng(seed, index, 4);
  const picked = new Set<number>();
  const out: CatalogEntry[] = [];
  while (out.length < count) {
    const at = rng.int(0, catalog.length - 1);
    if (picked.has(at)) continue;
    picked.add(at);
    out.push(catalog[at] as CatalogEntry);
  }
  return out;
}
