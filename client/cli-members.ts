// Reservation members on the command line: `-m ROLE[:COUNT]=SPEC`, e.g. `-m build=x86`,
// `-m test:3='arch=armv7 ram>=1GiB'`. The text is split at the first `=`, so specs keep theirs.
import type { MemberRequest } from '../api/contract.js';

export class MemberSyntaxError extends Error {}

const rolePattern = /^([A-Za-z][A-Za-z0-9_-]*)(?::(\d+))?$/;

export function parseMemberArgument(text: string): MemberRequest {
  const at = text.indexOf('=');
  if (at <= 0) throw new MemberSyntaxError(`member "${text}": expected ROLE[:COUNT]=SPEC, e.g. build=x86 or test:3='arch=armv7'`);
  const head = text.slice(0, at);
  const spec = text.slice(at + 1).trim();
  const match = rolePattern.exec(head);
  if (!match) throw new MemberSyntaxError(`member "${text}": "${head}" is not ROLE or ROLE:COUNT`);
  if (!spec) throw new MemberSyntaxError(`member "${text}": the spec after = is empty`);
  const count = match[2] === undefined ? 1 : Number(match[2]);
  if (count < 1) throw new MemberSyntaxError(`member "${text}": the count must be at least 1`);
  return { role: match[1], spec, count };
}

/** The members of `paddock reserve [SPEC] [-n COUNT] [-m …]…`: a positional spec is role `main`. */
export function membersFromArguments(spec: string | undefined, count: number | undefined, members: string[], image?: string): MemberRequest[] {
  const list = members.map(parseMemberArgument);
  if (spec !== undefined) list.unshift({ role: 'main', spec, count: count ?? 1 });
  else if (count !== undefined) throw new MemberSyntaxError('-n/--count goes with a positional SPEC');
  if (list.length === 0) throw new MemberSyntaxError('nothing to reserve: give a SPEC or -m ROLE[:COUNT]=SPEC');
  const roles = new Set<string>();
  for (const member of list) {
    if (roles.has(member.role)) throw new MemberSyntaxError(`role ${member.role} is given twice; use ROLE:COUNT`);
    roles.add(member.role);
  }
  return image === undefined ? list : list.map((member) => ({ ...member, image }));
}
