// The server process: `paddock serve --config FILE` ends up here. Starts the embedded default
// (API, SQLite, local agent) and shuts it down cleanly on SIGTERM or SIGINT; a kill -9 loses
// nothing either, since every acknowledged change is committed first. SIGHUP reads the config file
// again and applies its machine list (api/serve.ts: reload). A config with problems exits 2; a
// database written by a newer Paddock exits 3 (NewerDatabaseError), so a service manager can stop
// retrying (systemd: RestartPreventExitStatus=2 3).
import { ConfigError } from '../api/config.js';
import { NewerDatabaseError } from '../api/db/index.js';
import { serve, type RunningServer } from './serve.js';
import { createLog, type Log } from '../protocol/log.js';

export async function runServer(options: {
  configPath?: string;
  listen?: string;
  dataDir?: string;
  database?: string;
  metricsListen?: string;
  log?: Log;
}): Promise<RunningServer> {
  const log = options.log ?? createLog({ component: 'api' });
  // A SIGHUP while starting (a service manager's reload) would end the process: it is kept for when the server runs.
  let reloadAsked = false;
  const early = () => (reloadAsked = true);
  process.on('SIGHUP', early);
  let server: RunningServer;
  try {
    // A lost leadership (api/leader.ts) ends the process: its service manager starts it again, as a follower.
    server = await serve({ ...options, log, onLeadershipLost: () => process.exit(1) });
  } catch (error) {
    if (error instanceof ConfigError) {
      console.error(`paddock: ${error.message}`);
      process.exit(2);
    }
    if (error instanceof NewerDatabaseError) {
      console.error(`paddock: ${error.message}`);
      process.exit(NewerDatabaseError.exitStatus);
    }
    throw error;
  }
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'stopping');
    server.close().then(
      () => process.exit(0),
      (error: unknown) => {
        log.error({ error: (error as Error).message }, 'error while stopping');
        process.exit(1);
      },
    );
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
  const reload = () => {
    if (stopping) return;
    log.info({ signal: 'SIGHUP' }, 'reading the configuration again');
    void server.reload();
  };
  process.on('SIGHUP', reload).off('SIGHUP', early);
  if (reloadAsked) reload();
  return server;
}

// `node --import tsx cli/server-process.ts --config FILE`: the same server without the CLI around it.
if (process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href) {
  const at = process.argv.indexOf('--config');
  await runServer(at > 0 ? { configPath: process.argv[at + 1] } : {});
}
