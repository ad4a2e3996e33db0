// What commands print on stdout. A command prints text for people, or, asked for data (`--output
// json|yaml|name`, `--json` being `--output json`), the value itself: JSON, YAML, or one name per
// line (`paddock ls -o name | xargs paddock release`). Every command that has `--json` has
// `--output` (cli/habits.ts adds it), and `print` renders whatever the command hands it in the
// format asked for.
import { Option } from 'commander';
import { UsageError } from './usage-error.js';

export const outputFormats = ['json', 'yaml', 'name'] as const;
export type OutputFormat = (typeof outputFormats)[number];

let format: OutputFormat = 'json';
let nameKeys: readonly string[] = ['id', 'name'];
let yaml: { stringify(value: unknown): string } | undefined;

/**
 * The format of this call, and which field names a thing in it (by the command: an image is named
 * by its `ref`, a job by its `name`; else `id`, then `name`).
 */
export async function useOutput(chosen: OutputFormat, keys?: readonly string[]): Promise<void> {
  format = chosen;
  if (keys) nameKeys = keys;
  if (format === 'yaml') yaml = await import('yaml');
}

/** A line of text as it is; any other value in the format asked for (JSON by default). */
export function print(value: unknown): void {
  const text = render(value);
  // An empty list of names is no line at all (`paddock ls -o name | xargs …` gets nothing).
  if (text !== '' || typeof value === 'string') process.stdout.write(`${text}\n`);
}

export function render(value: unknown): string {
  if (typeof value === 'string') return value;
  if (format === 'yaml' && yaml) return yaml.stringify(value).trimEnd();
  if (format === 'name') return names(value).join('\n');
  return JSON.stringify(value, null, 2);
}

function names(value: unknown): string[] {
  if (Array.isArray(value)) return value.flatMap(names);
  if (value && typeof value === 'object') {
    for (const key of nameKeys) {
      const name = (value as Record<string, unknown>)[key];
      if (typeof name === 'string') return [name];
    }
  }
  throw new UsageError('what this command prints has no names: use --output json or --output yaml');
}

/** The `-o, --output` option of a command that has `--json`. */
export const outputOption = (): Option =>
  new Option('-o, --output <format>', 'print data, not text: json, yaml, or name (one name a line); --json is --output json').choices(outputFormats);

/** Rows as aligned columns, the first row the header. */
export function table(rows: string[][]): string {
  const widths = rows[0].map((_, column) => Math.max(...rows.map((row) => row[column].length)));
  return rows
    .map((row) =>
      row
        .map((cell, column) => cell.padEnd(widths[column]))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}
