// Does a machine satisfy a spec, and if not, which term fails and why.
//
// A key is looked up in a machine's labels (strings) and capacities (numbers):
// - `present` / `absent`: the key exists in either map, or in neither.
// - `eq`: a label equals one of the alternatives as a string, or a capacity equals one of them as a
//   number (`ram=2GiB` holds for a capacity of 2147483648).
// - `ne`: exactly when `eq` does not hold, so it holds when the key is absent.
// - `ge` `le` `gt` `lt`: compare the capacity, or else a label that reads as a quantity; a missing
//   key or a label that is not a number fails.
import { formatTerm, isNumericOp, opSymbols, type Spec, type Term } from './spec.js';
import { parseQuantity } from './units.js';

export interface MachineTraits {
  labels: Record<string, string>;
  capacities: Record<string, number>;
}

export type MatchResult = { ok: true } | { ok: false; term: Term; reason: string };

export interface Explanation {
  /** Names of the machines that satisfy the spec, sorted. */
  matches: string[];
  /** Every other machine, sorted by name, with the first term it fails (formatted) and why. */
  rejected: { machine: string; term: string; reason: string }[];
}

const own = (record: object, key: string) => Object.prototype.hasOwnProperty.call(record, key);

/** The first term of the spec (in spec order) that the machine fails, or ok. */
export function matchSpec(spec: Spec, machine: MachineTraits): MatchResult {
  for (const term of spec.terms) {
    const reason = termFailure(term, machine);
    if (reason !== undefined) return { ok: false, term, reason };
  }
  return { ok: true };
}

/** Why the machine fails the term, as a sentence; undefined when the term holds. */
export function termFailure(term: Term, machine: MachineTraits): string | undefined {
  const { key } = term;
  const label = own(machine.labels, key) ? machine.labels[key] : undefined;
  const capacity = own(machine.capacities, key) ? machine.capacities[key] : undefined;
  const present = label !== undefined || capacity !== undefined;
  const shown = capacity !== undefined ? formatQuantity(capacity) : label;

  if (term.op === 'present') return present ? undefined : `${key} is missing`;
  if (term.op === 'absent') return present ? `${key} is ${shown}, must be absent` : undefined;

  if (isNumericOp(term.op)) {
    const wanted = term.number ?? NaN;
    const needs = `needs ${opSymbols[term.op]} ${formatQuantity(wanted)}`;
    if (!present) return `${key} is missing, ${needs}`;
    const value = capacity ?? parseQuantity(label!);
    if (value === null) return `${key} is ${label}, not a number, ${needs}`;
    return compare(term.op, value, wanted) ? undefined : `${key} is ${formatQuantity(value)}, ${needs}`;
  }

  const values = term.values ?? [];
  const equal = (label !== undefined && values.includes(label)) || (capacity !== undefined && values.some((value) => parseQuantity(value) === capacity));
  const listed = values.length === 1 ? values[0] : `one of ${values.join(', ')}`;
  if (term.op === 'eq') {
    if (equal) return undefined;
    return `${key} is ${present ? shown : 'missing'}, needs ${listed}`;
  }
  return equal ? `${key} is ${shown}, must not be ${listed}` : undefined;
}

function compare(op: Term['op'], value: number, wanted: number): boolean {
  switch (op) {
    case 'ge':
      return value >= wanted;
    case 'le':
      return value <= wanted;
    case 'gt':
      return value > wanted;
    case 'lt':
      return value < wanted;
    default:
      return false;
  }
}

const binaryUnits: [string, number][] = [
  ['TiB', 1024 ** 4],
  ['GiB', 1024 ** 3],
  ['MiB', 1024 ** 2],
];

/**
 * A number as people wrote it in the config: sizes from 1MiB up that are a binary multiple (to two
 * decimals) come back with their unit (`2GiB`, `1.5GiB`); anything else stays a plain number, so
 * counts like `cpus` read as they are.
 */
export function formatQuantity(value: number): string {
  for (const [unit, size] of binaryUnits) {
    const scaled = Math.round((value / size) * 100) / 100;
    if (scaled >= 1 && scaled * size === value) return `${scaled}${unit}`;
  }
  return String(value);
}

/**
 * Which machines satisfy the spec and why each other machine does not, both sorted by name. The
 * reasons use the same words as `matchSpec`; `term` is the failing term in canonical form.
 */
export function explainSpec(spec: Spec, machines: readonly (MachineTraits & { name: string })[]): Explanation {
  const sorted = [...machines].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const explanation: Explanation = { matches: [], rejected: [] };
  for (const machine of sorted) {
    const result = matchSpec(spec, machine);
    if (result.ok) explanation.matches.push(machine.name);
    else explanation.rejected.push({ machine: machine.name, term: formatTerm(result.term), reason: result.reason });
  }
  return explanation;
}
