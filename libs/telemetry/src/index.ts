export { Registry, Counter, Gauge, Histogram, DEFAULT_BUCKETS } from './metrics';
export { startHealthServer } from './health';
export type { HealthServer, HealthServerOptions } from './health';
export { listenHttp } from './listen';
export type { ListenOptions, ListeningServer } from './listen';
