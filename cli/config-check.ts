// `paddock config check FILE`: every problem of a server config file in one pass, each with its
// line and column, without starting anything (no port is taken, no database opened, no cloud
// asked). Exit status 0 when the file is good, 1 when it has problems (or cannot be read), 2 for a
// usage error. `--json` is for scripts: {file, valid, machines?, problems: [{line, column, path, message}]}.
import type { Command } from 'commander';

export function addConfigCommands(cli: Command, print: (value: unknown) => void): void {
  const config = cli.command('config').description('the server configuration file');
  config
    .command('check')
    .description('check a config file as `paddock serve --config` would: every problem at once, with its line and column; exits 1 if there is any')
    .argument('<file>', 'the YAML config')
    .option('--json', 'the result as JSON: {file, valid, machines, problems: [{line, column, path, message}]}')
    .action(async (file: string, options: { json?: boolean }) => {
      const { checkConfigFile, loadConfig } = await import('../api/config.js');
      const problems = checkConfigFile(file);
      // The machines a good file makes (pools expanded by count; an OpenStack pool counts once, its flavors are asked at start).
      const machines = problems.length === 0 ? loadConfig(file).machines.length : undefined;
      if (options.json) print({ file, valid: problems.length === 0, ...(machines === undefined ? {} : { machines }), problems });
      else {
        for (const problem of problems) {
          const where = problem.line === undefined ? '' : `${problem.line}:${problem.column ?? 1}:`;
          print(`${file}:${where} ${problem.path ? `${problem.path}: ` : ''}${problem.message}`);
        }
        print(
          problems.length === 0
            ? `${file}: valid (${machines} machine${machines === 1 ? '' : 's'})`
            : `${file}: ${problems.length} problem${problems.length === 1 ? '' : 's'}`,
        );
      }
      if (problems.length > 0) process.exitCode = 1;
    });
}
