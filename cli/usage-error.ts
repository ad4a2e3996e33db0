// A usage error found by a command itself (after commander's own checks): printed as
// `paddock: <message> (usage)`, exit 2, like commander's.
import { MemberSyntaxError } from '../client/members.js';

export class UsageError extends MemberSyntaxError {}
