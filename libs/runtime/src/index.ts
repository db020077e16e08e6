export { startService, ServiceStoppedError } from './service';
export { runService } from './run';
export type { ServiceContext, ServiceParts, ServiceOptions, RunningService } from './service-types';
export { watchRedis } from './redis-health';
export type { RedisWatch, RedisWatchOptions, WatchedRedis } from './redis-health';
