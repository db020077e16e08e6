export { checkSecretKey, probeSecretKey } from './key-check';
export type {
  KeyFingerprints,
  SecretKeyCheck,
  SecretKeyCheckDeps,
  SecretKeyProbe,
  SecretKeyProbeDeps,
  StoredSecrets,
} from './key-check';
export { createSecretSealer, SecretError } from './sealer';
export type { SealedSecret, SecretSealer, SealerKeys } from './sealer';
export { createReplicaKeyCheck, secretRecordUnreadable } from './replica-key';
export type { ReplicaKeyCheck, ReplicaKeyCheckDeps, UnreadableRecord } from './replica-key';
