import { CascacheError, ErrorCodes } from './errors';

/**
 * Valid namespaces (an action cache's, a Turborepo team): 1-64 of A-Z a-z 0-9 . _ -, starting with a
 * letter or digit. Here, in the light entry, so edges that only check names need not load the store.
 */
export const NAMESPACE_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** Human-readable byte counts in SI units (1 kB = 1000 B), as every cascache summary prints them. */
export function formatBytes(n: number): string {
  if (n < 1000) return `${n} B`;
  const units = ['kB', 'MB', 'GB', 'TB'];
  let v = n;
  let u = -1;
  while (v >= 1000 && u < units.length - 1) {
    v /= 1000;
    u++;
  }
  return `${v.toFixed(v < 10 ? 2 : 1)} ${units[u]}`;
}

const SIZE_UNITS: Record<string, number> = { '': 1, b: 1, k: 1024, kb: 1024, kib: 1024, m: 1024 ** 2, mb: 1024 ** 2, mib: 1024 ** 2, g: 1024 ** 3, gb: 1024 ** 3, gib: 1024 ** 3, t: 1024 ** 4, tb: 1024 ** 4, tib: 1024 ** 4 };

/**
 * Parses a byte size as people write it: `8192`, `8k`, `64KiB`, `10GiB` (binary units).
 * @throws CascacheError `E_CONFIG` for anything else.
 */
export function parseByteSize(value: string): number {
  const m = /^\s*(\d+)\s*([a-z]*)\s*$/i.exec(value);
  const unit = m ? SIZE_UNITS[m[2]!.toLowerCase()] : undefined;
  const n = m && unit !== undefined ? Number(m[1]) * unit : NaN;
  if (!Number.isSafeInteger(n)) throw new CascacheError(ErrorCodes.CONFIG, `expected a size like 8192, 8KiB or 10GiB, got ${JSON.stringify(value)}`);
  return n;
}
