// A reservation request as the scheduler takes it, and its members' specs parsed here so that a
// malformed one is refused with its position before anything else happens. The request's shape is
// checked at the edge (the route's schema, api/routes/reservations.ts); the scheduler trusts it.
import type { MemberView } from '../../protocol/api.js';
import { DomainError } from '../domain-error.js';
import { parseSpecCached, SpecError, type Spec } from './spec.js';

/** A reservation request once the edge has checked it: durations in seconds, defaults filled in. */
export interface ReservationRequestInput {
  members: MemberView[];
  /** Seconds; the policy's default lease when absent. */
  lease?: number;
  priority: number;
  /** Seconds; the policy's queue timeout when absent. */
  queueTimeout?: number;
  idempotencyKey?: string;
}

export interface ParsedMember {
  role: string;
  spec: Spec;
  count: number;
}

export function parseMembers(members: MemberView[]): ParsedMember[] {
  const roles = new Set<string>();
  return members.map((member) => {
    if (roles.has(member.role)) {
      throw new DomainError('invalid_request', `role ${member.role} appears twice; give it a count instead`, { role: member.role });
    }
    roles.add(member.role);
    try {
      return { role: member.role, spec: parseSpecCached(member.spec), count: member.count };
    } catch (error) {
      if (error instanceof SpecError) {
        throw new DomainError('invalid_spec', `member ${member.role}: ${error.message}`, {
          role: member.role,
          spec: member.spec,
          position: error.position,
        });
      }
      throw error;
    }
  });
}
