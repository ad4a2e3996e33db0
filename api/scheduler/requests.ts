// The shape of a reservation request, validated at the edge; specs are parsed here too so that a
// malformed one is refused with its position before anything else happens.
import { z } from 'zod';
import type { MemberView } from '../../protocol/api.js';
import { DomainError } from '../domain-error.js';
import { parseSpecCached, SpecError, type Spec } from './spec.js';
import { bounds, duration, integer, text } from '../fields.js';

export const memberSchema = z.strictObject({
  role: text({ max: 32, pattern: /^[A-Za-z][A-Za-z0-9_-]{0,31}$/, message: 'a role is a word: letters, digits, _ and -' }),
  spec: text({ min: 1, max: 2000 }),
  count: integer(1, 1000).default(1),
  image: text({ min: 1, max: 200 }).optional(),
});

export const reservationRequestSchema = z.strictObject({
  members: z.array(memberSchema).min(1).max(64),
  lease: duration('lease', bounds.leaseSeconds).optional(),
  priority: integer(-1000, 1000).default(0),
  queueTimeout: duration('queue timeout', bounds.queueTimeoutSeconds).optional(),
  idempotencyKey: text({ min: 1, max: 200 }).optional(),
});

export type ReservationRequestInput = z.infer<typeof reservationRequestSchema>;

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
