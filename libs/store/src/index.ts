export { createRedis, closeRedis, StoreError } from './client';
export type { RedisClientOptions } from './client';
export { createTenantStore } from './tenants';
export type { TenantStore, TenantStatus } from './tenants';
export { createCycleStore } from './cycles';
export type { CycleStore, CycleState } from './cycles';
