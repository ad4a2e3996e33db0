// `paddock console ID [MEMBER] -i`: the terminal attached to a machine's console through the API's
// console stream. stdin goes to the console as typed (raw mode when it is a terminal), the console
// comes to stdout. Like ssh, `~` at the start of a line is an escape: `~.` quits, `~t` takes typing
// over, `~?` lists them, `~~` sends one `~`. Mode changes (typing granted, taken over by another
// session) are told on stderr.
import { parseMemberTarget } from '../client/members.js';
import { PaddockError, type ConsoleSession, type Reservation } from '../client/index.js';

export interface InteractiveOptions {
  member?: string;
  machine?: string;
  takeover?: boolean;
  readOnly?: boolean;
}

/** The machine a MEMBER argument (`role`, `role.N`, `role[N]`) names in the reservation. */
export function memberMachine(reservation: Reservation, member: string): string {
  const { role, index } = parseMemberTarget(member);
  const allocation = reservation.view.allocations.find((candidate) => candidate.role === role && candidate.index === index);
  if (!allocation) throw new PaddockError(`reservation ${reservation.id} has no member ${role}[${index}]`, 'invalid_target');
  return allocation.machine;
}

/** Runs the session until `~.`, the end of stdin, or the console closing; resolves with the exit code. */
export async function interactiveConsole(reservation: Reservation, options: InteractiveOptions): Promise<number> {
  const machine = options.machine ?? (options.member ? memberMachine(reservation, options.member) : undefined);
  const session = await reservation.openConsole({
    ...(machine ? { machine } : {}),
    ...(options.readOnly ? {} : { write: true }),
    ...(options.takeover ? { takeover: true } : {}),
  });
  const stdin = process.stdin;
  const raw = stdin.isTTY === true;
  const notice = (text: string) => process.stderr.write(`${raw ? '\r\n' : ''}[paddock: ${text}]${raw ? '\r\n' : '\n'}`);
  notice(
    `${session.mode === 'write' ? 'you type' : 'read-only'} on ${reservation.id}${machine ? ` ${machine}` : ''}; ~. quits, ~t takes typing over, ~? helps`,
  );
  session.on('mode', ({ mode, reason }: { mode: string; reason: string }) => notice(`${mode === 'write' ? 'you type' : 'read-only'}: ${reason}`));
  session.on('notice', (text: string) => notice(text));
  session.on('data', (bytes: Buffer) => process.stdout.write(bytes));
  if (raw) stdin.setRawMode(true);
  const escapes = escapeReader(session, notice);
  return new Promise<number>((resolve) => {
    let finished = false;
    const finish = (code: number) => {
      if (finished) return;
      finished = true;
      stdin.off('data', onData);
      if (raw) stdin.setRawMode(false);
      // Paused, stdin would still hold the process open.
      stdin.destroy();
      session.close();
      resolve(code);
    };
    const onData = (chunk: Buffer) => {
      if (escapes(chunk) === 'quit') finish(0);
    };
    stdin.on('data', onData);
    stdin.once('end', () => setTimeout(() => finish(0), 500));
    session.once('close', ({ reason }: { code: number; reason: string }) => {
      notice(`the console closed${reason ? `: ${reason}` : ''}`);
      finish(0);
    });
  });
}

/** Sends typed bytes on, acting on `~` escapes at the start of a line. */
function escapeReader(session: ConsoleSession, notice: (text: string) => void): (chunk: Buffer) => 'quit' | undefined {
  let lineStart = true;
  let tilde = false;
  return (chunk) => {
    const out: number[] = [];
    for (const byte of chunk) {
      if (tilde) {
        tilde = false;
        const key = String.fromCharCode(byte);
        if (key === '.') {
          if (out.length) session.write(Buffer.from(out));
          return 'quit';
        }
        if (key === 't') {
          session.takeover();
          continue;
        }
        if (key === '?') {
          notice('~. quit, ~t take typing over, ~~ send ~');
          continue;
        }
        out.push(0x7e);
        if (key === '~') continue;
      } else if (lineStart && byte === 0x7e) {
        tilde = true;
        continue;
      }
      out.push(byte);
      lineStart = byte === 0x0d || byte === 0x0a;
    }
    if (out.length) session.write(Buffer.from(out));
    return undefined;
  };
}
