// Which reservation a command means: the ID argument, else $PADDOCK_RESERVATION (which `paddock run
// --local` sets for its command, and which a shell can export after `paddock reserve`). Commands
// taking `[ID] [MEMBER]` tell the two apart by the form of a reservation id, `r-` and 12 hex digits.
import { PaddockError } from '../client/index.js';

const reservationIdPattern = /^r-[0-9a-f]{12}$/;

/** Whether a word has the form of a reservation id. */
export const looksLikeReservationId = (word: string): boolean => reservationIdPattern.test(word);

/** Neither an ID argument nor PADDOCK_RESERVATION: exit 2, like the other usage errors. */
export class NoReservationError extends PaddockError {
  readonly exitStatus = 2;
  constructor() {
    super('which reservation? give its ID or set PADDOCK_RESERVATION', 'no_reservation');
  }
}

/** The reservation id: `id` when given, else $PADDOCK_RESERVATION; NoReservationError without either. */
export function reservationIdOr(id: string | undefined): string {
  const chosen = id ?? process.env.PADDOCK_RESERVATION?.trim();
  if (!chosen) throw new NoReservationError();
  return chosen;
}

/**
 * `[ID] [MEMBER]`: with one argument and PADDOCK_RESERVATION set, the argument is the member
 * unless it has the form of a reservation id (`r-` and 12 hex digits).
 */
export function reservationAndMember(first: string | undefined, second: string | undefined): { id: string; member: string | undefined } {
  if (first !== undefined && second === undefined && process.env.PADDOCK_RESERVATION?.trim() && !looksLikeReservationId(first)) {
    return { id: reservationIdOr(undefined), member: first };
  }
  return { id: reservationIdOr(first), member: second };
}
