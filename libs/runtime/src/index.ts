export { startService, runService } from './service';
export type { ServiceContext, ServiceParts, ServiceOptions, RunningService } from './service';
export { watchRedis } from './redis-health';
export type { RedisWatch, RedisWatchOptions, WatchedRedis } from './redis-health';
