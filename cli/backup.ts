// `paddock backup FILE`: an online backup of the server's database, made on the API's host while
// the server runs (api/db/backup.ts says how and why it reads the file directly). Restoring is
// stop, copy in place, start (README: Running Paddock for a lab).
import type { Command } from 'commander';

export function addBackupCommand(cli: Command, print: (value: unknown) => void): void {
  cli
    .command('backup')
    .description("copy the server's SQLite database to FILE while it runs (on the API's host, as its user or root): consistent, checked, mode 0600")
    .argument('<file>', 'the backup to write (refused if it exists, unless --force)')
    .option('--data <dir>', "the server's data directory (default: the config's dataDir with --config, else ./paddock-data)")
    .option('--config <file>', "the server's config file, for its dataDir")
    .option('--force', 'replace FILE if it exists')
    .option('--json', 'the result as JSON: {file, bytes, migrations, seconds}')
    .action(async (file: string, options: { data?: string; config?: string; force?: boolean; json?: boolean }) => {
      const { backupDatabase } = await import('../api/db/backup.js');
      let dataDir = options.data ?? 'paddock-data';
      if (options.data === undefined && options.config !== undefined) {
        const { loadConfig } = await import('../api/config.js');
        const config = loadConfig(options.config);
        dataDir = config.dataDir;
        if (config.database !== undefined) {
          const { BackupError } = await import('../api/db/backup.js');
          throw new BackupError(
            'this server keeps its data in PostgreSQL: back it up with pg_dump (README: Several API servers); paddock backup copies a SQLite file',
          );
        }
      }
      const result = await backupDatabase(dataDir, file, { force: options.force === true });
      if (options.json) return print(result);
      const schema = result.migrations.at(-1) ?? 'empty';
      print(`${result.file}: ${result.bytes} bytes, schema ${schema}, integrity ok (${result.seconds.toFixed(1)} s)`);
    });
}
