// Stops the containers the global setup started. The local stack is left running on purpose: the
// next run reuses it, and `npm run stack:down` stops it.
import { takeInfra } from './infra-state';

export default async function globalTeardown(): Promise<void> {
  for (const infra of takeInfra()) {
    await Promise.all(infra.containers.map((container) => container.stop()));
  }
}
