// Typed errors rebuilt from the API's stable codes, so a job script can catch `NoMatchError`
// instead of parsing messages. Messages come from the server, which never puts secrets in them;
// the client adds none (no token, no key).
import type { ApiErrorBody } from '../api/contract.js';

export class PaddockError extends Error {
  constructor(
    message: string,
    readonly code: string,
    readonly status?: number,
    readonly details?: unknown,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = new.target.name;
  }
}

export class UnauthorizedError extends PaddockError {}
export class ForbiddenError extends PaddockError {}
export class NotFoundError extends PaddockError {}
export class InvalidRequestError extends PaddockError {}
export class InvalidSpecError extends PaddockError {
  get position(): number | undefined {
    return (this.details as { position?: number } | undefined)?.position;
  }
}
/** No machine in the inventory could ever satisfy the request (HTTP 422). */
export class NoMatchError extends PaddockError {
  get reasons(): { role: string; reason: string }[] {
    return (this.details as { members?: { role: string; reason: string }[] } | undefined)?.members ?? [];
  }
}
export class IllegalTransitionError extends PaddockError {}
export class LeaseExpiredError extends PaddockError {}
/** The reservation ended (failed, expired, cancelled) while the client waited for it. */
export class ReservationFailedError extends PaddockError {}
export class TimeoutError extends PaddockError {}
export class PaddockConnectionError extends PaddockError {}

const byCode: Record<string, typeof PaddockError> = {
  unauthorized: UnauthorizedError,
  forbidden: ForbiddenError,
  not_found: NotFoundError,
  invalid_json: InvalidRequestError,
  invalid_request: InvalidRequestError,
  unsupported_media_type: InvalidRequestError,
  payload_too_large: InvalidRequestError,
  invalid_spec: InvalidSpecError,
  unsatisfiable: NoMatchError,
  illegal_transition: IllegalTransitionError,
  lease_expired: LeaseExpiredError,
};

/** The typed error for an API error answer; unknown codes give a plain PaddockError. */
export function errorFromBody(status: number, body: unknown): PaddockError {
  const error = body as Partial<ApiErrorBody> | undefined;
  if (!error || typeof error.code !== 'string') {
    return new PaddockError(`the server answered HTTP ${status} without an error body`, 'http_error', status);
  }
  const ErrorClass = byCode[error.code] ?? PaddockError;
  return new ErrorClass(error.message ?? error.code, error.code, status, error.details);
}
