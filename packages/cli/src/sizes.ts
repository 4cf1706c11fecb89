/** Parses byte sizes given on the command line: `8192`, `8k`, `8KiB`, `64m`, `1MiB` (binary units). */
import { InvalidArgumentError } from 'commander';

const UNITS: Record<string, number> = { '': 1, b: 1, k: 1024, kb: 1024, kib: 1024, m: 1024 ** 2, mb: 1024 ** 2, mib: 1024 ** 2, g: 1024 ** 3, gb: 1024 ** 3, gib: 1024 ** 3 };

export function parseSize(value: string): number {
  const m = /^\s*(\d+)\s*([a-z]*)\s*$/i.exec(value);
  const unit = m ? UNITS[m[2]!.toLowerCase()] : undefined;
  if (!m || unit === undefined) throw new InvalidArgumentError(`expected a size like 8192, 8KiB or 1MiB, got ${JSON.stringify(value)}`);
  const n = Number(m[1]) * unit;
  if (!Number.isSafeInteger(n)) throw new InvalidArgumentError(`size ${value} is too large`);
  return n;
}

const AGE_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, min: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 };

/** Parses ages given on the command line: `0s`, `90s`, `15m`, `12h`, `30d`, `2w`. Returns ms. */
export function parseAge(value: string): number {
  const m = /^\s*(\d+)\s*(ms|s|m|min|h|d|w)\s*$/i.exec(value);
  if (!m) throw new InvalidArgumentError(`expected an age like 0s, 15m, 12h, 30d, got ${JSON.stringify(value)}`);
  return Number(m[1]) * AGE_UNITS[m[2]!.toLowerCase()]!;
}
