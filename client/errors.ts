// Typed errors rebuilt from the API's stable codes, so a job script can catch `NoMatchError`
// instead of parsing messages. Every error is a PaddockError with a `code` (stable, for programs),
// an HTTP `status` when the server answered, and the server's `details`. Messages never carry a
// secret: the server puts none in them, and the client scrubs its own token and anything shaped
// like a Paddock token before a message is built.
import type { ApiErrorBody, ReservationState, ReservationView } from '../protocol/api.js';

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
/** The request itself was malformed: bad JSON, a field out of range, a body too large. */
export class InvalidRequestError extends PaddockError {}

/** A spec that does not parse; `position` is the 0-based offset of the problem in `spec`. */
export class InvalidSpecError extends PaddockError {
  get position(): number | undefined {
    return field<number>(this.details, 'position');
  }
  get spec(): string | undefined {
    return field<string>(this.details, 'spec');
  }
  /** The member whose spec is wrong, when the request had several. */
  get role(): string | undefined {
    return field<string>(this.details, 'role');
  }
}

/** No machine in the inventory could ever satisfy the request (HTTP 422 `unsatisfiable`). */
export class NoMatchError extends PaddockError {
  /** Why, per member: `[{ role: 'board', reason: 'no machine has arch=armv7' }]`. */
  get reasons(): { role: string; reason: string }[] {
    return field<{ role: string; reason: string }[]>(this.details, 'members') ?? [];
  }
}

export class IllegalTransitionError extends PaddockError {}
/** The reservation has ended: its lease can no longer be renewed, its credentials are gone. */
export class LeaseExpiredError extends PaddockError {}

/** The reservation ended (failed, expired, cancelled, released) while the client waited for it. */
export class ReservationFailedError extends PaddockError {
  constructor(readonly view: ReservationView) {
    super(`reservation ${view.id} is ${view.state}: ${view.reason ?? 'no reason given'}`, 'reservation_failed', undefined, {
      id: view.id,
      state: view.state,
      reason: view.reason,
      code: failureCode(view),
    });
  }
  get state(): ReservationState {
    return this.view.state;
  }
  get reason(): string | undefined {
    return this.view.reason;
  }
  /** The stable code of the first failed machine (`image_corrupt`, `boot_timeout`, `machine_lost`, …). */
  get failureCode(): string | undefined {
    return failureCode(this.view);
  }
}

function failureCode(view: ReservationView): string | undefined {
  return (view.allocations as ReservationView['allocations'] | undefined)?.find((allocation) => allocation.failure)?.failure?.code;
}

/** Over one of the caller's quotas (HTTP 429 `quota_exceeded`): nothing was made; what the caller had is kept. */
export class QuotaExceededError extends PaddockError {
  /** Which quota: `reservations`, `queued`, `machines`, `imageBytes`, `uploads` or `runs`. */
  get quota(): string | undefined {
    return field<string>(this.details, 'quota');
  }
  get limit(): number | undefined {
    return field<number>(this.details, 'limit');
  }
}

/**
 * A member's power action or re-deploy failed (the member is `failed`; the reservation and its other
 * members live on). `failureCode` is the member's stable code (`image_corrupt`, `boot_timeout`, …).
 */
export class MemberFailedError extends PaddockError {
  constructor(
    readonly view: ReservationView,
    readonly member: { role: string; index: number },
  ) {
    const allocation = view.allocations.find((each) => each.role === member.role && each.index === member.index);
    const failure = allocation?.failure;
    super(
      `${member.role}[${member.index}] of reservation ${view.id} failed: ${failure ? `${failure.code}: ${failure.reason}` : 'no reason given'}`,
      'member_failed',
      undefined,
      {
        id: view.id,
        role: member.role,
        index: member.index,
        code: failure?.code,
      },
    );
  }
  get failureCode(): string | undefined {
    return field<string>(this.details, 'code');
  }
}

/** The member is busy with a power action or re-deploy, or still being provisioned (409 `member_busy`). */
export class MemberBusyError extends PaddockError {}
/** The member's machine cannot be powered or booted again during a lease (a static host: 409 `power_not_supported`). */
export class PowerNotSupportedError extends PaddockError {}

/** The client gave up waiting (`ready({ timeout })`); the reservation itself lives on. */
export class TimeoutError extends PaddockError {}
/** The server could not be reached, or answered with something that is not HTTP. */
export class PaddockConnectionError extends PaddockError {}

const byCode: Record<string, typeof PaddockError> = {
  unauthorized: UnauthorizedError,
  token_expired: UnauthorizedError,
  forbidden: ForbiddenError,
  not_found: NotFoundError,
  invalid_json: InvalidRequestError,
  invalid_request: InvalidRequestError,
  invalid_parameter: InvalidRequestError,
  unsupported_media_type: InvalidRequestError,
  payload_too_large: InvalidRequestError,
  invalid_spec: InvalidSpecError,
  unsatisfiable: NoMatchError,
  illegal_transition: IllegalTransitionError,
  lease_expired: LeaseExpiredError,
  member_busy: MemberBusyError,
  power_not_supported: PowerNotSupportedError,
  quota_exceeded: QuotaExceededError,
};

/** Paddock tokens look like `pdk_` and base64url; never let one through, whoever's it is. */
const tokenPattern = /pdk_[A-Za-z0-9_-]{8,}/g;

/** `text` with every given secret and anything shaped like a Paddock token replaced. */
export function redact(text: string, secrets: readonly string[] = []): string {
  let clean = text;
  for (const secret of secrets) if (secret.length >= 4) clean = clean.split(secret).join('[redacted]');
  return clean.replace(tokenPattern, 'pdk_[redacted]');
}

/**
 * The typed error for an API error answer (`{code, message, details?}` with a 4xx/5xx status).
 * The body may be parsed JSON, or raw text/bytes; unknown codes give a plain PaddockError, and a
 * body that is not an API error (a proxy's HTML page) gives code `http_error`.
 */
export function errorFromBody(status: number, body: unknown, options: { secrets?: readonly string[] } = {}): PaddockError {
  const error = parseBody(body);
  if (!error) {
    return new PaddockError(`the server answered HTTP ${status} without a Paddock error body`, 'http_error', status);
  }
  const ErrorClass = byCode[error.code] ?? PaddockError;
  const message = redact(typeof error.message === 'string' && error.message ? error.message : error.code, options.secrets);
  return new ErrorClass(message, error.code, status, error.details);
}

function parseBody(body: unknown): ApiErrorBody | undefined {
  let value = body;
  if (Buffer.isBuffer(value)) value = value.toString('utf8');
  if (typeof value === 'string') {
    try {
      value = JSON.parse(value);
    } catch {
      return undefined;
    }
  }
  if (typeof value !== 'object' || value === null) return undefined;
  const candidate = value as Partial<ApiErrorBody>;
  return typeof candidate.code === 'string' && candidate.code ? (candidate as ApiErrorBody) : undefined;
}

function field<T>(details: unknown, key: string): T | undefined {
  return typeof details === 'object' && details !== null ? ((details as Record<string, unknown>)[key] as T | undefined) : undefined;
}
