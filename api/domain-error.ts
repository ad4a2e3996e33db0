// What the services under api/ (the scheduler, the job service, tokens, quotas, images, repository
// resolution, pagination) throw when they refuse something: a stable string code, a message for
// people and optional details, and nothing about HTTP. Only api/errors.ts turns a code into a
// status (one table), so these parts can be driven by something other than the API.

/** Every code a domain error may carry; api/errors.ts gives each its HTTP status. */
export type DomainCode =
  | 'not_found'
  | 'forbidden'
  | 'conflict'
  | 'invalid_request'
  | 'invalid_spec'
  | 'unsatisfiable'
  | 'lease_expired'
  | 'not_ready'
  | 'member_busy'
  | 'power_not_supported'
  | 'illegal_transition'
  | 'machine_retired'
  | 'not_your_task'
  | 'store_failed'
  | 'job_running'
  | 'run_ended'
  | 'other_users_run'
  | 'unauthorized'
  | 'token_expired'
  | 'quota_exceeded'
  | 'resolutions_busy'
  | 'repository_refused'
  | 'repository_not_found'
  | 'repository_listing_too_large'
  | 'ref_not_found'
  | 'invalid_name'
  | 'image_in_use'
  | 'payload_too_large'
  | 'size_mismatch'
  | 'checksum_mismatch'
  | 'insufficient_storage'
  | 'upload_stalled'
  | 'empty_upload'
  | 'upload_aborted';

export class DomainError extends Error {
  constructor(
    readonly code: DomainCode,
    message: string,
    readonly details?: unknown,
  ) {
    super(message);
    this.name = 'DomainError';
  }
}

export const notFound = (what: string) => new DomainError('not_found', `${what} not found`);
export const forbidden = (message: string) => new DomainError('forbidden', message);
