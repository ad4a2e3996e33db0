// API errors: a stable string code, an HTTP status, a message for people and optional details.
// The error middleware turns them into `{code, message, details}`; a domain error (what the
// services throw) gets its status from `domainStatus`; anything else becomes a bare 500 whose
// cause is logged without the request's secrets and never sent to the client.
import type Koa from 'koa';
import type { ApiErrorBody } from '../protocol/api.js';
import type { Log } from '../protocol/log.js';
import { displayRepository } from '../protocol/repository.js';
import { DomainError, type DomainCode } from './domain-error.js';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details?: unknown,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

export const notFound = (what: string) => new ApiError(404, 'not_found', `${what} not found`);
export const forbidden = (message: string) => new ApiError(403, 'forbidden', message);

/** The one place a domain error's code becomes an HTTP status. */
export const domainStatus: Record<DomainCode, number> = {
  not_found: 404,
  forbidden: 403,
  conflict: 409,
  invalid_request: 400,
  invalid_spec: 400,
  unsatisfiable: 422,
  lease_expired: 409,
  not_ready: 409,
  member_busy: 409,
  power_not_supported: 409,
  illegal_transition: 409,
  machine_retired: 409,
  not_your_task: 403,
  store_failed: 503,
  job_running: 409,
  run_ended: 409,
  other_users_run: 403,
  unauthorized: 401,
  token_expired: 401,
  quota_exceeded: 429,
  resolutions_busy: 429,
  repository_refused: 422,
  repository_not_found: 422,
  repository_listing_too_large: 422,
  ref_not_found: 422,
  invalid_name: 400,
  image_in_use: 409,
  payload_too_large: 413,
  size_mismatch: 400,
  checksum_mismatch: 422,
  insufficient_storage: 507,
  upload_stalled: 408,
  empty_upload: 400,
  upload_aborted: 400,
};

export function errorMiddleware(log: Log): Koa.Middleware {
  return async (ctx, next) => {
    try {
      await next();
      if (ctx.status === 404 && ctx.body === undefined) {
        throw new ApiError(404, 'not_found', `no route for ${ctx.method} ${ctx.path}`);
      }
    } catch (error) {
      const apiError = toApiError(error);
      if (apiError.status >= 500) log.error({ method: ctx.method, path: ctx.path, error: describe(error) }, 'request failed');
      // A credential in a URL never leaves in an error, whichever code path wrote the message or details.
      const body: ApiErrorBody = { code: apiError.code, message: displayRepository(apiError.message) };
      if (apiError.details !== undefined) body.details = JSON.parse(displayRepository(JSON.stringify(apiError.details))) as unknown;
      if (typeof ctx.state.requestId === 'string') body.requestId = ctx.state.requestId;
      ctx.status = apiError.status;
      ctx.body = body;
    }
  };
}

export function toApiError(error: unknown): ApiError {
  if (error instanceof ApiError) return error;
  if (error instanceof DomainError) return new ApiError(domainStatus[error.code], error.code, error.message, error.details);
  const status = (error as { status?: number }).status;
  if (status === 405) return new ApiError(405, 'method_not_allowed', (error as Error).message);
  if (status === 501) return new ApiError(501, 'not_implemented', (error as Error).message);
  return new ApiError(500, 'internal', 'internal error');
}

function describe(error: unknown): string {
  if (error instanceof Error) return `${error.name}: ${error.message}`;
  return String(error);
}
