// `paddock power` and `paddock boot`: what an owner does to a member's machine during the lease.
// Both wait until the member is ready again (off, for `power off`) and print the member's state and login; a member that fails exits 1 with its failure code.
import type { Command } from 'commander';
import { powerActions, type PowerAction, type ReservationView } from '../protocol/api.js';
import { MemberSyntaxError, parseMemberTarget } from '../client/members.js';
import type { Paddock } from '../client/index.js';
import { looksLikeReservationId, reservationAndMember, reservationIdOr } from './reservation-id.js';

import { duration } from './duration.js';

/** `ID [MEMBER] ACTION`: the member is optional (the first machine) and comes before the action. */
export function powerArguments(reservation: ReservationView, words: readonly string[]): { member: string; action: PowerAction } {
  if (words.length < 1 || words.length > 2) throw new MemberSyntaxError('usage: paddock power ID [MEMBER] on|off|cycle');
  const action = words[words.length - 1];
  if (!(powerActions as readonly string[]).includes(action)) throw new MemberSyntaxError(`"${action}" is not a power action: on, off or cycle`);
  const first = reservation.allocations[0];
  const member = words.length === 2 ? words[0] : first ? `${first.role}.${first.index}` : 'main';
  parseMemberTarget(member); // a malformed member is a usage error before anything is asked
  return { member, action: action as PowerAction };
}

function memberLine(view: ReservationView, member: string): string {
  const { role, index } = parseMemberTarget(member);
  const allocation = view.allocations.find((each) => each.role === role && each.index === index);
  if (!allocation) return `${view.id} ${member}: not found`;
  const login = allocation.host && allocation.state === 'ready' ? ` ${allocation.user}@${allocation.host}:${allocation.port}` : '';
  return `${view.id} ${role}.${index} ${allocation.machine} ${allocation.state}${login}`;
}

export function addLeaseCommands(cli: Command, client: () => Paddock, print: (value: unknown) => void): void {
  cli
    .command('power')
    .description(
      "power a member's machine off, on, or cycle it (a reboot keeping its disk) and wait until it is ready again (ID: default $PADDOCK_RESERVATION)",
    )
    .usage('[options] [ID] [MEMBER] on|off|cycle')
    .argument('<action...>', '[ID] [MEMBER] (role, role.N or role[N]; default: the first machine) and then on, off or cycle')
    .option('--no-wait', 'return once asked, without waiting for the member')
    .option('--timeout <duration>', 'give up waiting after this long, e.g. 5m (the action goes on)', duration)
    .option('--json', 'print the reservation as JSON')
    .action(async (words: string[], options: { wait: boolean; timeout?: number; json?: boolean }) => {
      // The ID is the first word when it looks like one, or when three words are given.
      const withId = words.length === 3 || (words.length > 1 && looksLikeReservationId(words[0]));
      const reservation = await client().reservation(reservationIdOr(withId ? words[0] : undefined), { renew: false });
      const { member, action } = powerArguments(reservation.view, withId ? words.slice(1) : words);
      const view = await reservation.power(member, action, { wait: options.wait, ...(options.timeout !== undefined ? { timeout: options.timeout } : {}) });
      print(options.json ? view : memberLine(view, member));
    });

  cli
    .command('boot')
    .description('boot another image on a member, keeping the lease and the other members, and wait until it is ready again')
    .argument('[id]', 'the reservation (default: $PADDOCK_RESERVATION)')
    .argument('[member]', 'role, role.N or role[N]')
    .requiredOption('--image <name>', 'the image to boot (NAME[:TAG])')
    .option('--cmdline <text>', "the kernel command line, in place of the boot bundle's")
    .option('--no-wait', 'return once asked, without waiting for the member')
    .option('--timeout <duration>', 'give up waiting after this long, e.g. 5m (the boot goes on)', duration)
    .option('--json', 'print the reservation as JSON')
    .action(
      async (
        first: string | undefined,
        second: string | undefined,
        options: { image: string; cmdline?: string; wait: boolean; timeout?: number; json?: boolean },
      ) => {
        const { id, member } = reservationAndMember(first, second);
        if (member === undefined) throw new MemberSyntaxError('usage: paddock boot [ID] MEMBER --image IMAGE');
        parseMemberTarget(member);
        const reservation = await client().reservation(id, { renew: false });
        const view = await reservation.boot(member, options.image, {
          wait: options.wait,
          ...(options.cmdline !== undefined ? { cmdline: options.cmdline } : {}),
          ...(options.timeout !== undefined ? { timeout: options.timeout } : {}),
        });
        print(options.json ? view : memberLine(view, member));
      },
    );
}
