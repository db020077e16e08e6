export { checkSecretKey } from './key-check';
export type { SecretKeyCheckDeps, StoredSecrets } from './key-check';
export { createSecretSealer, SecretError } from './sealer';
export type { SealedSecret, SecretSealer, SealerKeys } from './sealer';
