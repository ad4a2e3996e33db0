// Logs for tests: the lines a part logs, kept as the JSON text it writes to stderr in production.
import { createLog, type Log } from '../../protocol/log.js';

/** A log whose JSON lines are pushed onto `lines` as they are written. */
export function captureLog(lines: string[], component = 'api'): Log {
  return createLog({ component, format: 'json', level: 'debug', destination: { write: (line: string) => void lines.push(line.trimEnd()) } });
}

/** A log whose lines' messages (`msg`) are pushed onto `messages`, for tests that read what a part said. */
export function captureMessages(messages: string[], component = 'api'): Log {
  return createLog({ component, format: 'json', level: 'debug', destination: { write: (line: string) => void messages.push(String(JSON.parse(line).msg)) } });
}

/** The JSON lines a process wrote (its stderr), parsed; a line that is not JSON fails the parse. */
export function parseLogLines(text: string): Record<string, unknown>[] {
  return text
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}
