// Durations on the command line: every option that takes a time (`--timeout`, `--lease`,
// `--queue-timeout`, `--expires`, `--time-limit`, `--check-interval`, `--heartbeat`) reads it here,
// with the server's own parser: bare seconds (`90`, `0.5`) or a number and a unit (`30s`, `5m`,
// `2h`, `30d`; `ms` too). The value is seconds. A word it cannot read is a usage error that says what
// it takes.
import { InvalidArgumentError } from 'commander';
import { parseDuration } from '../api/scheduler/units.js';

export const durationHint = 'a number of seconds or a number and a unit: 30s, 5m, 2h, 30d';

/** `value` in seconds, or an InvalidArgumentError naming what is wrong with it. */
export function durationSeconds(value: string, options: { zero?: boolean } = {}): number {
  const seconds = parseDuration(value);
  if (seconds === null) {
    const unit = /^\s*\d+(\.\d+)?\s*([A-Za-z]+)\s*$/.exec(value)?.[2];
    throw new InvalidArgumentError(
      unit ? `"${value}": unknown unit "${unit}" (the units are ms, s, m, h and d)` : `"${value}" is not a duration: ${durationHint}`,
    );
  }
  if (seconds === 0 && !options.zero) throw new InvalidArgumentError(`"${value}": give a duration longer than 0`);
  return seconds;
}

/** The commander argument parser of a duration option (more than 0), in seconds. */
export const duration = (value: string): number => durationSeconds(value);
/**
 * The same for a duration the server takes (a lease, an expiry): checked here, sent as written,
 * so that a bound the server refuses is quoted as the user wrote it (`"6000d"`).
 */
export const durationText = (value: string): string => (durationSeconds(value), value.trim());
/** The same, where 0 means "never" or "none" (`--check-interval 0`). */
export const durationOrZero = (value: string): number => durationSeconds(value, { zero: true });

/** Seconds as a person reads them: `90s`, `5m`, `2h`, `30d`, `1d 2h`. */
export function describeDuration(totalSeconds: number): string {
  const seconds = Math.round(totalSeconds);
  if (seconds < 60) return `${seconds}s`;
  const parts: string[] = [];
  let rest = seconds;
  for (const [unit, size] of [
    ['d', 86400],
    ['h', 3600],
    ['m', 60],
    ['s', 1],
  ] as const) {
    if (rest >= size) {
      parts.push(`${Math.floor(rest / size)}${unit}`);
      rest %= size;
    }
    if (parts.length === 2) break;
  }
  return parts.join(' ');
}
