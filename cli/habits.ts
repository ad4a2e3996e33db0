// What every command has, put on the whole command tree once it is built (so commands added
// anywhere get it too):
// - `paddock --version`, `--profile NAME` (cli/profiles.ts) before or after any command;
// - `-o, --output json|yaml|name` wherever `--json` is (`--json` stays, as `--output json`);
// - usage errors that say what is missing or wrong and how the command is used, on one line;
// - help without noise (`(default: [])`), and with where the server and token come from.
import { Help, type Command } from 'commander';
import { version } from '../protocol/version.js';
import { outputOption, useOutput, type OutputFormat } from './output.js';
import { applyProfile } from './profiles.js';
import { UsageError } from './usage-error.js';

/** Commands that talk to no server: no profile is read for them. */
const local = new Set(['serve', 'completion', 'profiles', 'help']);

/** The field that names a thing in `--output name`, by command (default: `id`, then `name`). */
const nameKeys: Record<string, string[]> = {
  images: ['ref'],
  'jobs add': ['name'],
  'jobs ls': ['name'],
  'jobs runners': ['name'],
};

/** The headings of `paddock --help`, so a newcomer finds the few commands of a day's work first. */
const groups: [string, string[]][] = [
  ['Reserve and release:', ['reserve', 'run', 'shell', 'ls', 'show', 'explain', 'renew', 'release']],
  ['Use a reservation:', ['ssh', 'scp', 'console', 'power', 'boot', 'tunnel', 'ssh-config']],
  ['Images and jobs:', ['images', 'jobs']],
  ['The lab (admins):', ['machines', 'agents', 'token']],
  ['Your setup:', ['whoami', 'profiles', 'completion']],
  ['Run Paddock:', ['serve', 'agent', 'runner', 'config', 'backup']],
];

const pathOf = (command: Command): string[] => {
  const names: string[] = [];
  for (let at: Command | null = command; at?.parent; at = at.parent) names.unshift(at.name());
  return names;
};

const commandsOf = (root: Command): Command[] => [root, ...root.commands.flatMap(commandsOf)];

const rootHelp = `
Where the server and token come from: PADDOCK_URL and PADDOCK_TOKEN, else the profile chosen
with --profile NAME or PADDOCK_PROFILE, else the default profile (paddock profiles --help).
PADDOCK_URL may list several API servers of one Paddock, comma-separated (http://a:7300,http://b:7300):
commands go to the leader and move on when a server stops answering.
PADDOCK_RESERVATION is the reservation of commands given no ID.

Examples:
  paddock reserve x86 --lease 30m --wait          # one machine matching the spec x86, ready to log in
  paddock ssh r-0123456789ab -- uname -a          # run a command on it
  paddock release r-0123456789ab
  paddock run 'arch=x86_64' -- make check         # reserve, run, release in one go
  paddock ls -o name                              # your reservations' ids, one a line

A command's own help: paddock COMMAND --help. Shell completion: paddock completion --help.`;

/** Commander's words for a usage error, as a person new to Paddock reads them best. */
export function usageMessage(command: Command, message: string, code: string | undefined): string {
  const text = message.replace(/^error: /, '').trim();
  const where = pathOf(command).join(' ');
  const usage = `paddock ${where ? `${where} ` : ''}${command.usage()}`;
  const suggestion = /\n\(Did you mean (.+)\?\)$/.exec(text)?.[1];
  const first = text.split('\n')[0];
  switch (code) {
    case 'commander.unknownCommand': {
      const name = /'(.*)'/.exec(first)?.[1] ?? '';
      const subcommands = command.commands.map((sub) => sub.name());
      const hint = suggestion ? `did you mean ${suggestion}?` : where ? `the commands are ${subcommands.join(', ')}` : 'paddock --help lists them';
      return `${where ? `${where} has` : 'there is'} no command '${name}'; ${hint}`;
    }
    case 'commander.unknownOption': {
      const flag = /'(.*)'/.exec(first)?.[1] ?? '';
      const hint = suggestion ? `did you mean ${suggestion}?` : `paddock ${where ? `${where} ` : ''}--help lists the options`;
      return `${where ? `${where} has` : 'paddock has'} no option ${flag}; ${hint}`;
    }
    case 'commander.missingArgument': {
      const name = /'(.*)'/.exec(first)?.[1] ?? '';
      const argument = command.registeredArguments.find((each) => each.name() === name);
      return `missing ${argument?.variadic ? `<${name}...>` : `<${name}>`}; usage: ${usage}`;
    }
    case 'commander.missingMandatoryOptionValue': {
      const flags = /'(.*)'/.exec(first)?.[1] ?? '';
      return `${where} needs ${flags}; usage: ${usage}`;
    }
    case 'commander.optionMissingArgument': {
      const flags = /'(.*)'/.exec(first)?.[1] ?? '';
      const long = flags.split(/,\s*/).at(-1) ?? flags;
      return `${long.split(' ')[0]} needs a value: ${long}`;
    }
    case 'commander.invalidArgument': {
      const option = /^option '([^']+)' argument '(.*)' is invalid\. (.*)$/s.exec(first);
      const argument = /^command-argument value '(.*)' is invalid for argument '([^']+)'\. (.*)$/s.exec(first);
      const [flags, value, reason] = option ? [option[1], option[2], option[3]] : argument ? [`<${argument[2]}>`, argument[1], argument[3]] : ['', '', first];
      const long = flags.split(/,\s*/).at(-1)?.split(' ')[0] ?? flags;
      const choices = /^Allowed choices are (.*)\.$/.exec(reason)?.[1];
      if (choices) return `${long}: "${value}" is not one of ${choices}`;
      // A reason that names its option already reads on its own after the value.
      return reason.startsWith(`${long} `) ? `"${value}" is not valid: ${reason}` : `${long}: ${reason}`;
    }
    case 'commander.excessArguments': {
      const expected = command.registeredArguments.length;
      return `too many arguments${expected === 0 ? ` (paddock ${where} takes none)` : ''}; usage: ${usage}`;
    }
    default:
      return text.replace(/\n/g, ' ');
  }
}

/** Puts the habits on every command of `cli`; call it once every command is added. */
export function applyHabits(cli: Command): void {
  cli.version(`paddock ${version}`, '-V, --version', 'print the version');
  cli.option('--profile <name>', 'use this profile of ~/.config/paddock/config.yaml (default: $PADDOCK_PROFILE, else its default)');
  cli.addHelpText('after', rootHelp);

  const rank = (command: Command) => {
    const index = groups.findIndex(([, names]) => names.includes(command.name()));
    return index === -1 ? groups.length : index;
  };
  for (const command of cli.commands) if (rank(command) < groups.length) command.helpGroup(groups[rank(command)][0]);
  // Help lists the groups in the order of their first command.
  (cli.commands as Command[]).sort((a, b) => rank(a) - rank(b));
  for (const command of commandsOf(cli)) {
    if (command.options.some((option) => option.long === '--json') && !command.options.some((option) => option.long === '--output')) {
      command.addOption(outputOption());
    }
    const error = command.error.bind(command);
    command.error = (message: string, options?: { code?: string; exitCode?: number }) => error(usageMessage(command, message, options?.code), options);
    command.configureHelp({
      ...command.configureHelp(),
      optionDescription(this: Help, option) {
        return Help.prototype.optionDescription.call(this, option).replace(/ \(default: (\[\]|\{\})\)$/, '');
      },
    });
  }

  cli.hook('preAction', async (_root, action) => {
    const path = pathOf(action);
    const options = action.opts() as { json?: boolean; output?: OutputFormat };
    if (options.output !== undefined) {
      if (options.json && options.output !== 'json') throw new UsageError(`--json is --output json: give one of --json and --output ${options.output}`);
      action.setOptionValue('json', true);
      await useOutput(options.output, nameKeys[path.join(' ')] ?? nameKeys[path[0]]);
    }
    if (!local.has(path[0] ?? '')) await applyProfile((cli.opts() as { profile?: string }).profile);
  });
}
