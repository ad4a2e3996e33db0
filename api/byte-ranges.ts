// HTTP byte ranges (RFC 9110 §13.1.5, §14): what a download answers to `Range` and `If-Range`.
// One range is served as a 206; ranges that overlap or touch are merged into one first. A request
// whose satisfiable ranges stay apart after that gets the whole file (a server may always ignore
// Range; no multipart/byteranges here). A Range header that does not parse, or holds a range whose
// end comes before its start, is ignored (200, the whole file); one that parses but asks only for
// bytes past the end is unsatisfiable (416). If-Range makes the Range count only while the file is
// still the one the client has: its strong ETag, compared exactly; a date or a weak tag never
// matches (the file has no Last-Modified), so the whole file comes instead.

export type RangeAnswer = { kind: 'whole' } | { kind: 'part'; start: number; end: number } | { kind: 'unsatisfiable' };

export interface RangeRequest {
  /** The Range header ('' or undefined when absent). */
  range?: string;
  /** The If-Range header ('' or undefined when absent). */
  ifRange?: string;
  /** The file's strong ETag, quoted: `"…"`. */
  etag: string;
}

const whole: RangeAnswer = { kind: 'whole' };

/** What to send of a file of `size` bytes for this request. */
export function byteRange(request: RangeRequest, size: number): RangeAnswer {
  const header = request.range?.trim();
  if (!header) return whole;
  if (request.ifRange && request.ifRange.trim() !== request.etag) return whole;
  const specs = parseRangeSet(header);
  if (!specs) return whole;
  const wanted: { start: number; end: number }[] = [];
  for (const spec of specs) {
    if (spec.suffix !== undefined) {
      if (spec.suffix > 0 && size > 0) wanted.push({ start: Math.max(0, size - spec.suffix), end: size - 1 });
    } else if (spec.first < size) {
      wanted.push({ start: spec.first, end: Math.min(spec.last ?? size - 1, size - 1) });
    }
  }
  if (wanted.length === 0) return { kind: 'unsatisfiable' };
  wanted.sort((a, b) => a.start - b.start);
  const merged = [wanted[0]];
  for (const next of wanted.slice(1)) {
    const last = merged[merged.length - 1];
    if (next.start <= last.end + 1) last.end = Math.max(last.end, next.end);
    else merged.push(next);
  }
  return merged.length === 1 ? { kind: 'part', ...merged[0] } : whole;
}

type RangeSpec = { first: number; last?: number; suffix?: undefined } | { suffix: number };

/** `bytes=` and a comma list of `a-b`, `a-` or `-n` (empty list elements allowed); undefined if anything else. */
function parseRangeSet(header: string): RangeSpec[] | undefined {
  const set = /^bytes=(.*)$/i.exec(header)?.[1];
  if (set === undefined) return undefined;
  const specs: RangeSpec[] = [];
  for (const element of set.split(',')) {
    const text = element.trim();
    if (text === '') continue;
    const match = /^(\d*)-(\d*)$/.exec(text);
    if (!match || (match[1] === '' && match[2] === '')) return undefined;
    if (match[1] === '') {
      specs.push({ suffix: Number(match[2]) });
      continue;
    }
    const first = Number(match[1]);
    const last = match[2] === '' ? undefined : Number(match[2]);
    // An end before the start makes the whole header invalid, not just unsatisfiable.
    if (last !== undefined && last < first) return undefined;
    specs.push({ first, ...(last === undefined ? {} : { last }) });
  }
  return specs.length > 0 ? specs : undefined;
}
