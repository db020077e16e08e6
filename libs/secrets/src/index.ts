export { createSecretSealer, SecretError } from './sealer';
export type { SealedSecret, SecretSealer, SealerKeys } from './sealer';
