import { TENANT_ID_RULE } from '@urs/contracts';
import { isTenantId } from '../validation';
import { ApiError, type ApiRequest } from './router';

/** The `{tenantId}` of the path; one that is not a valid tenant id is refused with 400 naming the field and the rule. */
export function tenantIdOf(request: ApiRequest): string {
  const tenantId = request.params['tenantId'] ?? '';
  if (!isTenantId(tenantId)) {
    throw new ApiError(400, 'VALIDATION_FAILED', 'the tenant id in the path is not valid', [
      { field: 'tenantId', rule: TENANT_ID_RULE },
    ]);
  }
  return tenantId;
}
