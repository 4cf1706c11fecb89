import { InvalidArgumentError } from 'commander';
import { parseByteSize } from '@cascache/core';

/** Parses byte sizes given on the command line: `8192`, `8k`, `8KiB`, `64m`, `1MiB` (binary units). */
export function parseSize(value: string): number {
  try {
    return parseByteSize(value);
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
}

const AGE_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, min: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 };

/** Parses ages given on the command line: `0s`, `90s`, `15m`, `12h`, `30d`, `2w`. Returns ms. */
export function parseAge(value: string): number {
  const m = /^\s*(\d+)\s*(ms|s|m|min|h|d|w)\s*$/i.exec(value);
  if (!m) throw new InvalidArgumentError(`expected an age like 0s, 15m, 12h, 30d, got ${JSON.stringify(value)}`);
  return Number(m[1]) * AGE_UNITS[m[2]!.toLowerCase()]!;
}
