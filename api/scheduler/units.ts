// Quantities with units, for capacities (`ram: 2GiB`) and spec terms (`ram>=1024MiB`).
// Binary prefixes are powers of 1024, decimal ones powers of 1000 (`1GB` = 10^9 bytes).

const multipliers: Record<string, number> = {
  '': 1,
  k: 1e3,
  K: 1e3,
  M: 1e6,
  G: 1e9,
  T: 1e12,
  Ki: 1024,
  Mi: 1024 ** 2,
  Gi: 1024 ** 3,
  Ti: 1024 ** 4,
};

const quantityPattern = /^(\d+(?:\.\d+)?)\s*([kKMGT]i?)?(B)?$/;

/** Parses `4`, `2.5`, `2GiB`, `1024MiB`, `1GB`, `512M`; returns null when it is not a quantity. */
export function parseQuantity(text: string): number | null {
  const match = quantityPattern.exec(text.trim());
  if (!match) return null;
  const [, digits, prefix = ''] = match;
  const multiplier = multipliers[prefix];
  return multiplier === undefined ? null : Number(digits) * multiplier;
}

const durationPattern = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?$/;
const durationUnits: Record<string, number> = { ms: 0.001, s: 1, m: 60, h: 3600, d: 86400 };

/** Parses a duration (`90`, `90s`, `10m`, `2h`, `1d`) into seconds; null when malformed. */
export function parseDuration(value: number | string): number | null {
  if (typeof value === 'number') return Number.isFinite(value) && value >= 0 ? value : null;
  const match = durationPattern.exec(value.trim());
  if (!match) return null;
  return Number(match[1]) * durationUnits[match[2] ?? 's'];
}
