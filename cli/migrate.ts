// `paddock migrate --from sqlite FILE --to postgres://…`: moves a lab's data from its SQLite file into
// an empty PostgreSQL database (api/db/move.ts says what is checked and how). The switch: stop
// `paddock serve`, move, set `database:` in the config, start the servers.
import type { Command } from 'commander';
import { Option } from 'commander';

export function addMigrateCommand(cli: Command, print: (value: unknown) => void): void {
  cli
    .command('migrate')
    .description(
      "move a lab's data from its SQLite file into an empty PostgreSQL database (stop the server first: what it writes during the move is not moved)",
    )
    .argument('<file>', "the SQLite database: the data directory's paddock.sqlite")
    .addOption(new Option('--from <engine>', 'the engine FILE is of').choices(['sqlite']).makeOptionMandatory())
    .requiredOption('--to <url>', 'the PostgreSQL database, empty: postgres://user@host:5432/name (a password goes in ~/.pgpass or PGPASSWORD)')
    .option('--json', 'the result as JSON: {rows: {table: count}, to, seconds}')
    .action(async (file: string, options: { from: 'sqlite'; to: string; json?: boolean }) => {
      const [{ parseDatabase }, { moveSqliteToPostgres }] = await Promise.all([import('../api/config.js'), import('../api/db/move.js')]);
      const result = await moveSqliteToPostgres(file, parseDatabase(options.to));
      if (options.json) return print(result);
      const moved = Object.entries(result.rows).map(([table, count]) => `${count} ${table}`);
      print(`moved to ${result.to}: ${moved.join(', ')} (${result.seconds.toFixed(1)} s)`);
    });
}
