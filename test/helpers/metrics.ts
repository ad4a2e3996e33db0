// Reading Prometheus's text exposition format as a scrape sees it: samples with their labels, the
// value of one series, and the metric names a scrape exports.
import got from 'got';

/** One scrape, as Prometheus does it: no token. */
export async function scrape(url: string): Promise<string> {
  const response = await got(url, { throwHttpErrors: false });
  if (response.statusCode !== 200) throw new Error(`scrape of ${url} answered ${response.statusCode}`);
  return response.body;
}

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export function samples(text: string): Sample[] {
  const parsed: Sample[] = [];
  for (const line of text.split('\n')) {
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!match) continue;
    const labels: Record<string, string> = {};
    for (const label of (match[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[label[1]] = label[2];
    parsed.push({ name: match[1], labels, value: Number(match[3]) });
  }
  return parsed;
}

/** The value of the series with exactly these labels (0 when there is none: a counter not moved yet). */
export function value(text: string, name: string, labels: Record<string, string> = {}): number {
  const wanted = Object.entries(labels);
  const found = samples(text).find(
    (sample) => sample.name === name && Object.keys(sample.labels).length === wanted.length && wanted.every(([key, want]) => sample.labels[key] === want),
  );
  return found?.value ?? 0;
}

/** Metric names a scrape exports (histograms with their _bucket, _sum and _count series). */
export function exported(text: string): Set<string> {
  const names = new Set<string>();
  for (const [, name, type] of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
    names.add(name);
    if (type === 'histogram' || type === 'summary') for (const suffix of ['_bucket', '_sum', '_count']) names.add(`${name}${suffix}`);
  }
  return names;
}
