// `paddock token …`: ls, create, revoke, rotate. Admins manage every token; anyone may revoke or
// rotate the token they use (a leaked token ends at once). A new token, made or rotated, is printed
// once on stdout; nothing else ever shows it.
import { randomBytes } from 'node:crypto';
import { renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Option, type Command } from 'commander';
import type { Paddock } from '../client/index.js';
import type { TokenView } from '../protocol/api.js';
import { describeDuration, durationText } from './duration.js';
import { print, table } from './output.js';

const roles = ['user', 'admin', 'agent', 'runner'];

/** `2026-01-07T10:00:00Z (in 29d 23h)`, `expired 2026-…`, or `never`. */
export function expiryText(token: Pick<TokenView, 'expiresAt' | 'expired'>, now = Date.now()): string {
  if (!token.expiresAt) return 'never';
  const at = token.expiresAt.replace(/\.\d{3}Z$/, 'Z');
  const left = (Date.parse(token.expiresAt) - now) / 1000;
  if (token.expired || left <= 0) return `expired ${at}`;
  return `${at} (in ${describeDuration(left)})`;
}

/**
 * A token file to be written, readable by its owner alone (mode 0600), replacing `file` at once, so
 * that a profile's token file can be rotated in place (`> FILE` would empty it before paddock reads
 * it). The file is made before the token is asked for, so a place that cannot be written fails
 * before the old token is ended.
 */
export function tokenFileWriter(file: string): { commit(token: string): void; abort(): void } {
  const temporary = path.join(path.dirname(file), `.${path.basename(file)}.${randomBytes(4).toString('hex')}`);
  writeFileSync(temporary, '', { mode: 0o600, flag: 'wx' });
  return {
    commit(token) {
      writeFileSync(temporary, `${token}\n`);
      renameSync(temporary, file);
    },
    abort: () => rmSync(temporary, { force: true }),
  };
}

/** Asks for a new token and hands it over: on stdout, as JSON with --json, or into --write's file. */
async function handOver(
  ask: () => Promise<TokenView & { token: string }>,
  options: { json?: boolean; write?: string },
  done: string,
): Promise<TokenView & { token: string }> {
  if (!options.write) {
    const created = await ask();
    print(options.json ? created : created.token);
    return created;
  }
  const writer = tokenFileWriter(options.write);
  let created: (TokenView & { token: string }) | undefined;
  try {
    created = await ask();
    writer.commit(created.token);
  } catch (error) {
    writer.abort();
    // Made but not written: the only copy is shown rather than lost.
    if (created) print(created.token);
    throw error;
  }
  print(
    options.json
      ? { ...created, token: undefined, file: path.resolve(options.write) }
      : `${created.name}: ${done}; the token is in ${options.write} (mode 0600), expires ${expiryText(created)}`,
  );
  return created;
}

const examples = `
Examples:
  paddock token create alice --expires 30d      # print alice's new token once; refused after 30 days
  paddock token create lab-a --role agent       # a lab-host agent's token
  paddock token ls                              # name, role, created, expires
  paddock token rotate alice --write alice.token   # a new secret for alice, into that file; the old one stops at once
  paddock token revoke alice                    # alice's token stops at once, open streams too

Admins manage every token; anyone may revoke or rotate the token they use.`;

export function addTokenCommands(cli: Command, client: () => Paddock): void {
  const tokens = cli
    .command('token')
    .description('API tokens: ls, create, revoke, rotate (admins; anyone may revoke or rotate their own)')
    .addHelpText('after', examples);

  tokens
    .command('ls')
    .description('every token: name, role, created, expires (never the token itself; admins)')
    .option('--json', 'as JSON')
    .action(async (options: { json?: boolean }) => {
      const list = await client().tokens();
      if (options.json) return print(list);
      print(
        table([
          ['NAME', 'ROLE', 'CREATED', 'EXPIRES'],
          ...list.map((token) => [token.name, token.role, token.createdAt.replace(/\.\d{3}Z$/, 'Z'), expiryText(token)]),
        ]),
      );
    });

  tokens
    .command('create')
    .description('create a token (admins); it is printed once, on stdout')
    .argument('<name>', 'who or what uses it: letters, digits, . _ - @')
    .addOption(new Option('--role <role>', 'what it may do').choices(roles).default('user'))
    .option('--expires <duration>', 'refuse it after this long, e.g. 30d, 12h (default: never)', durationText)
    .option('--write <file>', 'write the token to this file (mode 0600) rather than to stdout')
    .option('--json', 'the token record as JSON (the token in field token)')
    .action(async (name: string, options: { role: TokenView['role']; expires?: string; write?: string; json?: boolean }) => {
      await handOver(() => client().createToken(name, options.role, options.expires !== undefined ? { expires: options.expires } : {}), options, 'created');
    });

  tokens
    .command('revoke')
    .description('end a token at once: requests and streams open with it are cut (admins: any token; others: their own)')
    .argument('<name>', "the token's name (paddock token ls)")
    .action(async (name: string) => {
      await client().revokeToken(name);
      print(`${name}: revoked`);
    });

  tokens
    .command('rotate')
    .description('a new secret for a token, same name and role, printed once on stdout; the old secret stops at once (admins: any token; others: their own)')
    .argument('<name>', "the token's name (paddock token ls)")
    .option('--expires <duration>', "the new token's lifetime, e.g. 30d (default: as long as the old one was given)", durationText)
    .option('--write <file>', "write the new token to this file (mode 0600, replaced at once: a profile's tokenFile) rather than to stdout")
    .option('--json', 'the token record as JSON (the token in field token)')
    .action(async (name: string, options: { expires?: string; write?: string; json?: boolean }) => {
      const rotated = await handOver(() => client().rotateToken(name, options.expires !== undefined ? { expires: options.expires } : {}), options, 'rotated');
      if (!options.json && !options.write) process.stderr.write(`${name}: rotated; expires ${expiryText(rotated)}\n`);
    });
}
