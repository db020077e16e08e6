import { deviceBatchSchema, enrichedBatchSchema, scoreBatchSchema } from './batch-schemas';
import { deadLetterSchema } from './dead-letter-schema';
import {
  defenderRegistrationSchema,
  registrationPushSchema,
  tenantRecordSchema,
  tenantRegistrationSchema,
} from './tenant-schemas';
import { vmsRiskScoreSchema, vmsRiskSummarySchema } from './vms-schemas';

/**
 * JSON Schemas (draft 2020-12 subset understood by ajv) of every message. Internal messages are
 * strict where the pipeline depends on a field and open (`additionalProperties: true`) where they carry
 * Microsoft's records, which gain fields without notice.
 */
export const ALL_SCHEMAS = [
  defenderRegistrationSchema,
  tenantRegistrationSchema,
  registrationPushSchema,
  tenantRecordSchema,
  deviceBatchSchema,
  enrichedBatchSchema,
  scoreBatchSchema,
  vmsRiskScoreSchema,
  vmsRiskSummarySchema,
  deadLetterSchema,
];
