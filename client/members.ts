// Pure parsing of the ways a user names reservation members:
// - when reserving, `-m ROLE[:COUNT]=SPEC`, e.g. `-m build=x86`, `-m test:3='arch=armv7 ram>=1GiB'`.
//   The text is split at the first `=`, so specs keep theirs;
// - when using one, a target `role`, `role.N` or `role[N]` (0-based; `role` is `role.0`);
// - `--image IMAGE` (every member) or `--image ROLE=IMAGE` (one role), repeatable;
// - `paddock ssh ID [TARGET] -- CMD…`, `paddock run SPEC -- CMD…`: everything after `--` is the command.
import type { MemberRequest } from '../protocol/api.js';

/** A malformed member argument: a usage error (the CLI exits 2). */
export class MemberSyntaxError extends Error {
  readonly code = 'usage';
}

const namePattern = '[A-Za-z][A-Za-z0-9_-]*';
const rolePattern = new RegExp(`^(${namePattern})(?::(\\d+))?$`);
const targetPattern = new RegExp(`^(${namePattern})(?:\\.(\\d+)|\\[(\\d+)\\])?$`);

export function parseMemberArgument(text: string): MemberRequest {
  const at = text.indexOf('=');
  if (at <= 0) throw new MemberSyntaxError(`member "${text}": expected ROLE[:COUNT]=SPEC, e.g. build=x86 or test:3='arch=armv7'`);
  const head = text.slice(0, at).trim();
  const spec = text.slice(at + 1).trim();
  const match = rolePattern.exec(head);
  if (!match) throw new MemberSyntaxError(`member "${text}": "${head}" is not ROLE or ROLE:COUNT (a role starts with a letter)`);
  if (!spec) throw new MemberSyntaxError(`member "${text}": the spec after = is empty`);
  const count = match[2] === undefined ? 1 : Number(match[2]);
  if (!Number.isSafeInteger(count) || count < 1) throw new MemberSyntaxError(`member "${text}": the count must be a whole number of at least 1`);
  return { role: match[1], spec, count };
}

/**
 * The members of `paddock reserve [SPEC] [-n COUNT] [-m …]… [--image …]…`: a positional spec is
 * role `main` (listed first). Roles must be distinct. See `withImages` for the images.
 */
export function membersFromArguments(
  spec: string | undefined,
  count: number | undefined,
  members: readonly string[],
  images: string | readonly string[] = [],
): MemberRequest[] {
  const list = members.map(parseMemberArgument);
  if (spec !== undefined) {
    if (!spec.trim()) throw new MemberSyntaxError('the SPEC is empty');
    if (count !== undefined && (!Number.isSafeInteger(count) || count < 1)) throw new MemberSyntaxError('-n/--count must be a whole number of at least 1');
    list.unshift({ role: 'main', spec: spec.trim(), count: count ?? 1 });
  } else if (count !== undefined) {
    throw new MemberSyntaxError('-n/--count goes with a positional SPEC; with -m, write ROLE:COUNT=SPEC');
  }
  if (list.length === 0) throw new MemberSyntaxError('nothing to reserve: give a SPEC or -m ROLE[:COUNT]=SPEC');
  const roles = new Set<string>();
  for (const member of list) {
    if (roles.has(member.role)) throw new MemberSyntaxError(`role ${member.role} is given twice; use ROLE:COUNT for several machines of one role`);
    roles.add(member.role);
  }
  return withImages(list, typeof images === 'string' ? [images] : images);
}

/**
 * Applies `--image` arguments: `IMAGE` boots on every member without an image of its own,
 * `ROLE=IMAGE` on that role's members (image names hold no `=`). A role that is not a member, a
 * role named twice or two bare images are usage errors.
 */
export function withImages(members: readonly MemberRequest[], images: readonly string[]): MemberRequest[] {
  let everyMember: string | undefined;
  const perRole = new Map<string, string>();
  for (const text of images) {
    const at = text.indexOf('=');
    const image = text.slice(at + 1).trim();
    if (!image) throw new MemberSyntaxError(`--image "${text}": the image name is empty`);
    if (at < 0) {
      if (everyMember !== undefined)
        throw new MemberSyntaxError(`--image is given twice for every member (${everyMember}, ${image}); write --image ROLE=IMAGE per member`);
      everyMember = image;
      continue;
    }
    const role = text.slice(0, at).trim();
    if (!members.some((member) => member.role === role)) {
      throw new MemberSyntaxError(`--image "${text}": no member has role "${role}" (the roles are ${members.map((member) => member.role).join(', ')})`);
    }
    if (perRole.has(role)) throw new MemberSyntaxError(`--image is given twice for role ${role}`);
    perRole.set(role, image);
  }
  return members.map((member) => {
    const image = perRole.get(member.role) ?? everyMember;
    return image === undefined ? { ...member } : { ...member, image };
  });
}

/** A member of a granted reservation: `build` (= `build.0`), `test.1` or `test[1]`. */
export function parseMemberTarget(text: string): { role: string; index: number } {
  const match = targetPattern.exec(text.trim());
  if (!match) throw new MemberSyntaxError(`not a member: "${text}" (use ROLE, ROLE.N or ROLE[N])`);
  const index = Number(match[2] ?? match[3] ?? 0);
  if (!Number.isSafeInteger(index)) throw new MemberSyntaxError(`member "${text}": the index is too large`);
  return { role: match[1], index };
}

/** The subcommands that take a command after `--`. */
const commandTaking = ['ssh', 'run'];

/**
 * Splits `ssh ID [TARGET] -- CMD…` (and `run … -- CMD…`) at the first `--` after the subcommand:
 * what comes before goes to the option parser, what comes after is the command verbatim (so
 * `ssh ID -- uname -a` runs `uname -a` on the default member instead of taking `uname` for a
 * target). Other subcommands are returned untouched.
 */
export function splitRemoteCommand(argv: readonly string[]): { args: string[]; command: string[] } {
  const subcommand = argv.findIndex((arg) => !arg.startsWith('-'));
  if (subcommand < 0 || !commandTaking.includes(argv[subcommand])) return { args: [...argv], command: [] };
  const separator = argv.indexOf('--', subcommand + 1);
  if (separator < 0) return { args: [...argv], command: [] };
  return { args: argv.slice(0, separator), command: argv.slice(separator + 1) };
}
