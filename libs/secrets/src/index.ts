export { checkSecretKey, probeSecretKey } from './key-check';
export type { SecretKeyCheckDeps, SecretKeyProbe, SecretKeyProbeDeps, StoredSecrets } from './key-check';
export { createSecretSealer, SecretError } from './sealer';
export type { SealedSecret, SecretSealer, SealerKeys } from './sealer';
