// `paddock completion bash|zsh|fish`: a completion script made from the command tree itself, so a
// command or option added anywhere completes without a change here. It completes subcommands,
// options (with descriptions in zsh and fish), the choices of an option or argument (--role,
// --output), file and directory names where a command takes a <file> or <dir>, and --profile's
// names (read from the profiles file by `paddock profiles ls -o name`). Nothing asks the server.
import { Argument, type Command, type Option } from 'commander';
import { UsageError } from './usage-error.js';

export const shells = ['bash', 'zsh', 'fish'] as const;
export type Shell = (typeof shells)[number];

/** What is completed for a value: words, or file names, directory names, profile names. */
type Values = { words: string[] } | { kind: 'file' | 'dir' | 'profile' };

interface OptionModel {
  short?: string;
  long?: string;
  description: string;
  values?: Values;
}

interface CommandModel {
  path: string;
  description: string;
  subcommands: { name: string; description: string }[];
  options: OptionModel[];
  /** Per position; the last one repeats when variadic. */
  args: (Values | undefined)[];
  variadic: boolean;
}

const kindOf = (placeholder: string): Values | undefined => {
  const name = placeholder.replace(/[<>[\].]/g, '').toLowerCase();
  if (name === 'file' || name === 'from' || name === 'to') return { kind: 'file' };
  if (name === 'dir') return { kind: 'dir' };
  return undefined;
};

function optionModel(option: Option): OptionModel | undefined {
  if (option.hidden) return undefined;
  const takesValue = option.required || option.optional;
  const placeholder = /<([^>]+)>|\[([^\]]+)\]/.exec(option.flags)?.[0] ?? '';
  const values: Values | undefined = !takesValue
    ? undefined
    : option.argChoices
      ? { words: option.argChoices }
      : option.long === '--profile'
        ? { kind: 'profile' }
        : (kindOf(placeholder) ?? { words: [] });
  return {
    ...(option.short ? { short: option.short } : {}),
    ...(option.long ? { long: option.long } : {}),
    description: option.description,
    ...(values ? { values } : {}),
  };
}

const argumentValues = (argument: Argument): Values | undefined => (argument.argChoices ? { words: argument.argChoices } : kindOf(argument.name()));

const oneLine = (text: string) => text.replace(/\s+/g, ' ').trim();

/** Every command of the tree, depth first, with what completes after it. */
export function commandModels(root: Command): CommandModel[] {
  const models: CommandModel[] = [];
  const visit = (command: Command, path: string[], inherited: OptionModel[]) => {
    const own = command.options.map(optionModel).filter((option): option is OptionModel => option !== undefined);
    const help: OptionModel = { short: '-h', long: '--help', description: 'show help' };
    models.push({
      path: path.join(' '),
      description: oneLine(command.description()),
      subcommands: command.commands.map((sub) => ({ name: sub.name(), description: oneLine(sub.description()) })),
      options: [...own, ...inherited, help],
      args: command.registeredArguments.map(argumentValues),
      variadic: command.registeredArguments.at(-1)?.variadic ?? false,
    });
    // Options of the root (--profile) are taken after any subcommand too.
    const passed = path.length === 0 ? own.filter((option) => option.long === '--profile') : inherited;
    for (const sub of command.commands) visit(sub, [...path, sub.name()], passed);
  };
  visit(root, [], []);
  return models;
}

const quote = (text: string) => `'${text.replace(/'/g, `'\\''`)}'`;
const flagsOf = (option: OptionModel) => [option.short, option.long].filter((flag): flag is string => flag !== undefined);
const valueWords = (values: Values | undefined) => (values === undefined ? '' : 'words' in values ? values.words.join(' ') : `@${values.kind}`);

/** The shell functions bash and zsh share: plain `case` statements over the command path. */
function sharedFunctions(models: CommandModel[], name: string): string {
  const cases = (fn: string, comment: string, entries: [string, string][]) =>
    [
      `# ${comment}`,
      `${name}_${fn}() {`,
      '  case "$1" in',
      ...entries.filter(([, words]) => words !== '').map(([key, words]) => `    ${quote(key)}) echo ${quote(words)} ;;`),
      '  esac',
      '}',
    ].join('\n');
  return [
    cases(
      'subcommands',
      'The subcommands of a command path.',
      models.map((model) => [model.path, model.subcommands.map((sub) => sub.name).join(' ')]),
    ),
    cases(
      'options',
      'The options of a command path.',
      models.map((model) => [model.path, model.options.flatMap(flagsOf).join(' ')]),
    ),
    cases(
      'valued',
      'The options of a command path that take a value.',
      models.map((model) => [
        model.path,
        model.options
          .filter((option) => option.values)
          .flatMap(flagsOf)
          .join(' '),
      ]),
    ),
    cases(
      'values',
      'The values of "PATH|OPTION": words, or @file, @dir, @profile.',
      models.flatMap((model) =>
        model.options
          .filter((option) => option.values)
          .flatMap((option) => flagsOf(option).map((flag): [string, string] => [`${model.path}|${flag}`, valueWords(option.values)])),
      ),
    ),
    cases(
      'arguments',
      'The values of "PATH|N", the Nth argument (from 0); "PATH|*" after the last of a variadic one.',
      models.flatMap((model) => [
        ...model.args.map((values, index): [string, string] => [`${model.path}|${index}`, valueWords(values)]),
        ...(model.variadic ? [[`${model.path}|*`, valueWords(model.args.at(-1))] as [string, string]] : []),
      ]),
    ),
  ].join('\n\n');
}

/**
 * The loop bash and zsh share: the command path so far (cmdpath), the count of arguments after it
 * (argc), whether the word at the cursor is an option's value (skip), and whether a `--` came (rest).
 */
const walk = (first: string, wordAt: string, current: string) => `  local cmdpath='' word skip='' rest='' argc=0 i
  for ((i = ${first}; i < ${current}; i++)); do
    word=${wordAt}
    if [[ -n $skip ]]; then
      [[ $word == '=' ]] || skip=''
      continue
    fi
    case $word in
      --) rest=1; break ;;
      --*=*) continue ;;
      -*)
        [[ " $(_paddock_valued "$cmdpath") " == *" $word "* ]] && skip=1
        continue
        ;;
    esac
    if [[ $argc -eq 0 && " $(_paddock_subcommands "$cmdpath") " == *" $word "* ]]; then
      cmdpath=\${cmdpath:+$cmdpath }$word
    else
      argc=$((argc + 1))
    fi
  done`;

function bashScript(models: CommandModel[]): string {
  return `# bash completion for paddock, made from its commands by \`paddock completion bash\`.
# Now: source <(paddock completion bash)
# For good: paddock completion bash > ~/.local/share/bash-completion/completions/paddock

${sharedFunctions(models, '_paddock')}

# What the argument at the cursor can be.
_paddock() {
  local cur=\${COMP_WORDS[COMP_CWORD]} option=\${COMP_WORDS[COMP_CWORD-1]}
${walk('1', '${COMP_WORDS[i]}', 'COMP_CWORD')}
  [[ -n $rest ]] && return 1
  if [[ $cur == '=' ]]; then cur=''; fi
  if [[ $option == '=' ]]; then option=\${COMP_WORDS[COMP_CWORD-2]}; fi
  local values=''
  if [[ -n $skip ]]; then
    values=$(_paddock_values "$cmdpath|$option")
  elif [[ $cur == -* ]]; then
    COMPREPLY=($(compgen -W "$(_paddock_options "$cmdpath")" -- "$cur"))
    return 0
  elif [[ $argc -eq 0 && -n $(_paddock_subcommands "$cmdpath") ]]; then
    COMPREPLY=($(compgen -W "$(_paddock_subcommands "$cmdpath")" -- "$cur"))
    return 0
  else
    values=$(_paddock_arguments "$cmdpath|$argc")
    [[ -z $values ]] && values=$(_paddock_arguments "$cmdpath|*")
  fi
  case $values in
    @file) compopt -o filenames 2>/dev/null; COMPREPLY=($(compgen -f -- "$cur")) ;;
    @dir) compopt -o filenames 2>/dev/null; COMPREPLY=($(compgen -d -- "$cur")) ;;
    @profile) COMPREPLY=($(compgen -W "$(paddock profiles ls -o name 2>/dev/null)" -- "$cur")) ;;
    *) COMPREPLY=($(compgen -W "$values" -- "$cur")) ;;
  esac
  return 0
}

# After \`--\` comes a command to run: complete it as bash would.
_paddock_complete() {
  _paddock || compopt -o default 2>/dev/null
}
complete -F _paddock_complete paddock
`;
}

const describeEntry = (name: string, description: string) => `${name.replace(/:/g, '\\:')}:${oneLine(description)}`;

function zshScript(models: CommandModel[]): string {
  const described = (fn: string, comment: string, entries: [string, string[]][]) =>
    [
      `# ${comment}`,
      `_paddock_${fn}() {`,
      '  case "$1" in',
      ...entries.filter(([, lines]) => lines.length > 0).map(([key, lines]) => `    ${quote(key)}) print -rl -- ${lines.map(quote).join(' ')} ;;`),
      '  esac',
      '}',
    ].join('\n');
  return `#compdef paddock
# zsh completion for paddock, made from its commands by \`paddock completion zsh\`.
# Now: source <(paddock completion zsh)   (after compinit)
# For good: paddock completion zsh > "\${fpath[1]}/_paddock"

${sharedFunctions(models, '_paddock')}

${described(
  'described_subcommands',
  'The subcommands of a command path, NAME:DESCRIPTION.',
  models.map((model) => [model.path, model.subcommands.map((sub) => describeEntry(sub.name, sub.description))]),
)}

${described(
  'described_options',
  'The options of a command path, FLAG:DESCRIPTION.',
  models.map((model) => [model.path, model.options.flatMap((option) => flagsOf(option).map((flag) => describeEntry(flag, option.description)))]),
)}

_paddock() {
  local cur=\${words[CURRENT]} option=\${words[CURRENT-1]}
${walk('2', '${words[i]}', 'CURRENT')}
  if [[ -n $rest ]]; then
    _files
    return
  fi
  local values=''
  local -a described
  if [[ -n $skip ]]; then
    values=$(_paddock_values "$cmdpath|$option")
  elif [[ $cur == -* ]]; then
    described=(\${(f)"$(_paddock_described_options "$cmdpath")"})
    _describe -t options 'option' described
    return
  elif [[ $argc -eq 0 && -n $(_paddock_subcommands "$cmdpath") ]]; then
    described=(\${(f)"$(_paddock_described_subcommands "$cmdpath")"})
    _describe -t commands 'command' described
    return
  else
    values=$(_paddock_arguments "$cmdpath|$argc")
    [[ -z $values ]] && values=$(_paddock_arguments "$cmdpath|*")
  fi
  case $values in
    @file) _files ;;
    @dir) _files -/ ;;
    @profile) compadd -- \${(f)"$(paddock profiles ls -o name 2>/dev/null)"} ;;
    *) [[ -n $values ]] && compadd -- \${=values} ;;
  esac
}

if [[ \${zsh_eval_context[-1]} == loadautofunc ]]; then
  _paddock "$@"
elif (( \${+functions[compdef]} )); then
  compdef _paddock paddock
fi
`;
}

function fishScript(models: CommandModel[]): string {
  const fishQuote = (text: string) => `'${text.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
  const fishCases = (fn: string, entries: [string, string][]) =>
    [
      `function __paddock_${fn}`,
      '    switch "$argv[1]"',
      ...entries
        .filter(([, words]) => words !== '')
        .flatMap(([key, words]) => [`        case ${fishQuote(key)}`, `            string split ' ' -- ${fishQuote(words)}`]),
      '    end',
      'end',
    ].join('\n');
  const lines: string[] = [];
  const condition = (path: string) => `__paddock_at ${fishQuote(path)}`;
  for (const model of models) {
    for (const sub of model.subcommands) {
      lines.push(`complete -c paddock -n ${fishQuote(condition(model.path))} -a ${fishQuote(sub.name)} -d ${fishQuote(sub.description)}`);
    }
    for (const option of model.options) {
      const flags = [option.short ? `-s ${option.short.slice(1)}` : '', option.long ? `-l ${option.long.slice(2)}` : ''].filter(Boolean).join(' ');
      const values = option.values;
      const value =
        values === undefined
          ? ''
          : 'words' in values
            ? values.words.length > 0
              ? ` -x -a ${fishQuote(values.words.join(' '))}`
              : ' -x'
            : values.kind === 'file'
              ? ' -r -F'
              : values.kind === 'dir'
                ? ` -x -a ${fishQuote('(__fish_complete_directories)')}`
                : ` -x -a ${fishQuote('(paddock profiles ls -o name 2>/dev/null)')}`;
      lines.push(`complete -c paddock -n ${fishQuote(condition(model.path))} ${flags}${value} -d ${fishQuote(option.description)}`);
    }
    const positions = model.args.map((values, index) => [String(index), values] as const);
    if (model.variadic) positions.push(['*', model.args.at(-1)]);
    for (const [index, values] of positions) {
      if (values === undefined) continue;
      const test = fishQuote(`__paddock_argument ${fishQuote(model.path)} ${index}`);
      if ('words' in values) lines.push(`complete -c paddock -n ${test} -a ${fishQuote(values.words.join(' '))}`);
      else if (values.kind === 'file') lines.push(`complete -c paddock -n ${test} -F`);
      else if (values.kind === 'dir') lines.push(`complete -c paddock -n ${test} -a '(__fish_complete_directories)'`);
    }
  }
  return `# fish completion for paddock, made from its commands by \`paddock completion fish\`.
# Now: paddock completion fish | source
# For good: paddock completion fish > ~/.config/fish/completions/paddock.fish

${fishCases(
  'subcommands',
  models.map((model) => [model.path, model.subcommands.map((sub) => sub.name).join(' ')]),
)}

${fishCases(
  'valued',
  models.map((model) => [
    model.path,
    model.options
      .filter((option) => option.values)
      .flatMap(flagsOf)
      .join(' '),
  ]),
)}

# The command path so far and the count of arguments after it, as "PATH|COUNT"; "--" after a --.
function __paddock_state
    set -l words (commandline -opc)
    set -e words[1]
    set -l cmdpath
    set -l skip 0
    set -l argc 0
    for word in $words
        if test $skip = 1
            set skip 0
            continue
        end
        switch $word
            case '--'
                echo -- --
                return
            case '--*=*'
                continue
            case '-*'
                if contains -- $word (__paddock_valued "$cmdpath")
                    set skip 1
                end
                continue
        end
        if test $argc = 0; and contains -- $word (__paddock_subcommands "$cmdpath")
            set cmdpath (string join ' ' -- $cmdpath $word)
        else
            set argc (math $argc + 1)
        end
    end
    echo -- "$cmdpath|$argc"
end

# Whether the cursor is after the command PATH (and no further than its subcommands).
function __paddock_at
    set -l state (string split '|' -- (__paddock_state))
    test "$state[1]" = "$argv[1]"
end

# Whether the cursor is at argument N (from 0; * for any past the last) of the command PATH.
function __paddock_argument
    set -l state (string split '|' -- (__paddock_state))
    test "$state[1]" = "$argv[1]"; or return 1
    if test "$argv[2]" = '*'
        test $state[2] -ge 0
    else
        test $state[2] = $argv[2]
    end
end

complete -c paddock -e
complete -c paddock -f -n 'test (__paddock_state) != --'
${lines.join('\n')}
`;
}

/** The completion script for `shell`, made from `root`'s commands. */
export function completionScript(root: Command, shell: string): string {
  const models = commandModels(root);
  if (shell === 'bash') return bashScript(models);
  if (shell === 'zsh') return zshScript(models);
  if (shell === 'fish') return fishScript(models);
  throw new UsageError(`no completion for ${shell}: the shells are ${shells.join(', ')}`);
}

export function addCompletionCommand(cli: Command): void {
  cli
    .command('completion')
    .description('print a shell completion script: bash, zsh or fish')
    .addArgument(new Argument('<shell>', 'bash, zsh or fish').choices(shells))
    .addHelpText(
      'after',
      `
Load it now, or install it for good:
  source <(paddock completion bash)      paddock completion bash > ~/.local/share/bash-completion/completions/paddock
  source <(paddock completion zsh)       paddock completion zsh > "\${fpath[1]}/_paddock"
  paddock completion fish | source       paddock completion fish > ~/.config/fish/completions/paddock.fish`,
    )
    .action((shell: string) => {
      process.stdout.write(completionScript(cli, shell));
    });
}
