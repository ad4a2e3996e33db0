// The spec language: what a script asks for.
//
//   panda                              a type name: the same as type=panda
//   arch=armv7 ram>=1GiB cpus>=2 !flaky  terms separated by whitespace, all of which must hold
//
// Terms: `key=value`, `key!=value`, `key=a|b` (any of the alternatives; `!=` none of them),
// `key>=N`, `key<=N`, `key>N`, `key<N` (N a quantity: `4`, `2.5`, `2GiB`, `1024MiB`, `1GB` = 10^9),
// `key` (the key is present), `!key` (the key is absent).
// Keys are `[A-Za-z_][A-Za-z0-9_.-]*`; a value is a non-empty run of characters other than
// whitespace and `|` that does not start with an operator character (`=`, `!`, `<`, `>`).
//
// The one ambiguity, a bare word, is settled by counting words: a spec of exactly one word with no
// operator in it is a type name (`panda` ≡ `type=panda`, and a type name may start with a digit,
// `96boards`); in a spec of several terms a bare word means "present" (`arch=x86_64 kvm`).
import { parseQuantity } from './units.js';

export type TermOp = 'present' | 'absent' | 'eq' | 'ne' | 'ge' | 'le' | 'gt' | 'lt';
export type NumericOp = 'ge' | 'le' | 'gt' | 'lt';

export interface Term {
  /** The term as written in the spec. */
  readonly text: string;
  /** 0-based offset of `text` in the spec. */
  readonly start: number;
  readonly key: string;
  readonly op: TermOp;
  /** For `eq` and `ne`: the alternatives, at least one. */
  readonly values?: readonly string[];
  /** For `ge`, `le`, `gt`, `lt`: the quantity, units applied. */
  readonly number?: number;
}

export interface Spec {
  readonly text: string;
  readonly terms: readonly Term[];
}

/** A malformed spec: `position` is the 0-based offset where the parser expected something else. */
export class SpecError extends Error {
  override name = 'SpecError';

  constructor(
    readonly spec: string,
    readonly position: number,
    expected: string,
  ) {
    super(`${expected} at position ${position}`);
  }
}

export const opSymbols: Record<Exclude<TermOp, 'present' | 'absent'>, string> = {
  eq: '=',
  ne: '!=',
  ge: '>=',
  le: '<=',
  gt: '>',
  lt: '<',
};

const opsBySymbol = new Map(Object.entries(opSymbols).map(([op, symbol]) => [symbol, op as TermOp]));
const operatorList = '=, !=, >=, <=, >, <';
const keyPattern = /^[A-Za-z_][A-Za-z0-9_.-]*/;
const operatorRun = /^[=!<>]+/;
const operatorChar = /[=!<>]/;

export function isNumericOp(op: TermOp): op is NumericOp {
  return op === 'ge' || op === 'le' || op === 'gt' || op === 'lt';
}

export function parseSpec(text: string): Spec {
  const words = [...text.matchAll(/\S+/g)].map((match) => ({ word: match[0], start: match.index }));
  if (words.length === 0) {
    throw new SpecError(text, text.length, 'expected a type name or terms like key=value');
  }
  if (words.length === 1 && !/[=!<>|]/.test(words[0].word)) {
    const { word, start } = words[0];
    return freeze({ text, terms: [{ text: word, start, key: 'type', op: 'eq', values: [word] }] });
  }
  return freeze({ text, terms: words.map(({ word, start }) => parseTerm(text, word, start)) });
}

function parseTerm(spec: string, word: string, start: number): Term {
  const fail = (offset: number, expected: string): never => {
    throw new SpecError(spec, start + offset, expected);
  };
  const key = keyPattern.exec(word)?.[0];
  if (key === undefined) {
    if (word[0] === '!' && !operatorChar.test(word[1] ?? '')) {
      const absentKey = keyPattern.exec(word.slice(1))?.[0];
      if (absentKey === undefined) return fail(1, "expected a key after '!'");
      const after = 1 + absentKey.length;
      if (after < word.length) return fail(after, `unexpected '${word[after]}' after '!${absentKey}' (an absent key takes no value)`);
      return { text: word, start, key: absentKey, op: 'absent' };
    }
    const operator = operatorRun.exec(word)?.[0];
    if (operator !== undefined) return fail(0, `expected a key before '${operator}'`);
    return fail(0, `expected a key (a letter or _, then letters, digits, _ . -), not '${word[0]}'`);
  }
  if (key.length === word.length) return { text: word, start, key, op: 'present' };

  const operator = operatorRun.exec(word.slice(key.length))?.[0];
  if (operator === undefined) return fail(key.length, `unexpected '${word[key.length]}' after '${key}' (expected an operator: ${operatorList})`);
  const op = opsBySymbol.get(operator);
  if (op === undefined) return fail(key.length, `unknown operator '${operator}' (expected one of ${operatorList})`);

  const valueStart = key.length + operator.length;
  if (isNumericOp(op)) {
    const numberText = /^[^|]*/.exec(word.slice(valueStart))![0];
    const number = numberText === '' ? null : parseQuantity(numberText);
    if (number === null) return fail(valueStart, `expected a number after '${operator}'`);
    const bar = valueStart + numberText.length;
    if (bar < word.length) return fail(bar, `unexpected '|' after a number (alternatives go with = and != only)`);
    return { text: word, start, key, op, number };
  }

  const values: string[] = [];
  let offset = valueStart;
  for (const value of word.slice(valueStart).split('|')) {
    const after = offset === valueStart ? operator : '|';
    if (value === '') fail(offset, `expected a value after '${after}'`);
    if (operatorChar.test(value[0])) fail(offset, `expected a value after '${after}', not '${value[0]}'`);
    values.push(value);
    offset += value.length + 1;
  }
  return { text: word, start, key, op, values };
}

function freeze(spec: Spec): Spec {
  for (const term of spec.terms) {
    if (term.values) Object.freeze(term.values);
    Object.freeze(term);
  }
  Object.freeze(spec.terms);
  return Object.freeze(spec);
}

/**
 * A term in canonical form: `key`, `!key`, `key=a|b`, `key>=2GiB`. A type name comes out as
 * `type=panda`; a number keeps the way it was written when the term's text still says it.
 */
export function formatTerm(term: Term): string {
  if (term.op === 'present') return term.key;
  if (term.op === 'absent') return `!${term.key}`;
  const symbol = opSymbols[term.op];
  if (!isNumericOp(term.op)) return `${term.key}${symbol}${(term.values ?? []).join('|')}`;
  const written = term.text.slice(term.key.length + symbol.length);
  const number = written !== '' && parseQuantity(written) === term.number ? written : String(term.number);
  return `${term.key}${symbol}${number}`;
}

const cacheLimit = 1000;
const cache = new Map<string, Spec>();

/**
 * parseSpec with a memo of the last 1000 distinct specs (least recently used goes first): the
 * scheduler parses the same few specs on every pass. Specs are frozen, so sharing them is safe.
 * Malformed specs are not remembered; they throw every time.
 */
export function parseSpecCached(text: string): Spec {
  const hit = cache.get(text);
  if (hit) {
    cache.delete(text);
    cache.set(text, hit);
    return hit;
  }
  const spec = parseSpec(text);
  if (cache.size >= cacheLimit) cache.delete(cache.keys().next().value!);
  cache.set(text, spec);
  return spec;
}
