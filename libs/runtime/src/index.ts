export { startService, runService } from './service';
export type { ServiceContext, ServiceParts, ServiceOptions, RunningService } from './service';
