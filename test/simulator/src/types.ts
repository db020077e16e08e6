// Wire shapes served by the simulator. Field names, casing and enum spellings follow what Microsoft
// really returns (see docs/reference/defender-api.md), including undocumented fields.

export interface IpAddressRecord {
  ipAddress: string;
  macAddress: string | null;
  type: string;
  operationalStatus: string;
}

/** A machine as `/api/machines` returns it. Any field may be absent on real data. */
export interface MachineRecord {
  id: string;
  computerDnsName?: string | null;
  firstSeen?: string;
  lastSeen?: string;
  osPlatform?: string | null;
  osVersion?: string | null;
  osProcessor?: string | null;
  version?: string | null;
  lastIpAddress?: string | null;
  lastExternalIpAddress?: string | null;
  agentVersion?: string | null;
  osBuild?: number | null;
  healthStatus?: string;
  deviceValue?: string | null;
  rbacGroupId?: number | string | null;
  rbacGroupName?: string | null;
  riskScore?: string | null;
  exposureLevel?: string | null;
  isAadJoined?: boolean;
  aadDeviceId?: string | null;
  machineTags?: string[];
  defenderAvStatus?: string;
  onboardingStatus?: string;
  osArchitecture?: string | null;
  managedBy?: string;
  managedByStatus?: string;
  ipAddresses?: IpAddressRecord[];
  vmMetadata?: { vmId: string; cloudProvider: string; resourceId: string; subscriptionId: string } | null;
  isExcluded?: boolean;
  exclusionReason?: string | null;
  mergedIntoMachineId?: string | null;
  isPotentialDuplication?: boolean;
  [extra: string]: unknown;
}

/** A vulnerability as `/api/machines/{id}/vulnerabilities` returns it (OData PublicVulnerabilityDto). */
export interface VulnerabilityRecord {
  id: string;
  name: string;
  description: string;
  severity: string;
  cvssV3: number | null;
  cvssVector: string | null;
  exposedMachines: number;
  publishedOn: string;
  updatedOn: string;
  firstDetected?: string | null;
  publicExploit: boolean;
  exploitVerified: boolean;
  exploitInKit: boolean;
  exploitTypes: string[];
  exploitUris: string[];
  CveSupportability: string;
  epss: number | null;
  [extra: string]: unknown;
}

/** Software product a catalog CVE affects; used to build SoftwareVulnerabilitiesByMachine rows. */
export interface AffectedSoftware {
  vendor: string;
  name: string;
  version: string;
  recommendedSecurityUpdate: string | null;
  recommendedSecurityUpdateId: string | null;
}

/** One row of `/api/machines/SoftwareVulnerabilitiesByMachine`. */
export interface SoftwareVulnerabilityRow {
  id: string;
  deviceId: string;
  rbacGroupName: string | null;
  deviceName: string | null;
  osPlatform: string | null;
  osVersion: string | null;
  osArchitecture: string | null;
  softwareVendor: string;
  softwareName: string;
  softwareVersion: string;
  cveId: string | null;
  vulnerabilitySeverityLevel: string | null;
  recommendedSecurityUpdate: string | null;
  recommendedSecurityUpdateId: string | null;
  recommendedSecurityUpdateUrl: string | null;
  diskPaths: string[];
  registryPaths: string[];
  lastSeenTimestamp: string;
  firstSeenTimestamp: string;
  exploitabilityLevel: string;
  recommendationReference: string;
  securityUpdateAvailable: boolean;
  cvssScore: number | null;
}
