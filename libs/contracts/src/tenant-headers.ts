/** Header of a `urs.tenants` tombstone carrying the deletion's revision (a null value has no body). */
export const TENANT_REVISION_HEADER = 'urs-revision';
/**
 * Header of a `urs.tenants` tombstone carrying the Director generation in force when an administrator
 * deleted the tenant (absent when none was ever applied), so that a rebuilt Redis remembers the deletion.
 */
export const TENANT_GENERATION_HEADER = 'urs-generation';

/** A header of a Kafka message as a number (KafkaJS gives a Buffer); undefined when absent or not a number. */
export function numericHeader(
  headers: Readonly<Record<string, unknown>> | undefined,
  name: string,
): number | undefined {
  const header = headers?.[name];
  if (header === undefined || header === null) return undefined;
  const value = Number(String(header));
  return Number.isFinite(value) ? value : undefined;
}
