// Placeholder replaced by the infrastructure resolver (KAFKA_BROKERS/REDIS_URL → containers → local stack).
export default async function globalSetup(): Promise<void> {}
