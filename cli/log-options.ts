// `--log-format` and `--log-level` of the long-running commands (serve, agent, runner): their
// lines go to stderr as JSON by default, or as text for a person when stderr is a terminal.
import { Option } from 'commander';
import type { Log, LogFormat, LogLevel } from '../protocol/log.js';

// The logger itself (pino) is loaded only by the commands that log, not by every `paddock` call.
const logFormats: LogFormat[] = ['json', 'text'];
const logLevels: LogLevel[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

export interface LogCommandOptions {
  logFormat?: LogFormat;
  logLevel?: LogLevel;
}

export const logFormatOption = () =>
  new Option('--log-format <format>', 'json: one JSON object a line; text: for a person (default: text when stderr is a terminal, else json)').choices(
    logFormats,
  );

export const logLevelOption = () => new Option('--log-level <level>', 'the least severe level logged').choices(logLevels).default('info');

/** The process's log on stderr, as its command line asks. */
export async function processLog(options: LogCommandOptions, component: string): Promise<Log> {
  const { createLog } = await import('../protocol/log.js');
  return createLog({ component, ...(options.logFormat ? { format: options.logFormat } : {}), ...(options.logLevel ? { level: options.logLevel } : {}) });
}
