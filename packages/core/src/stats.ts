/**
 * Store-wide figures: what is stored, what it stands for, and how much dedup and compression save.
 *
 * - `logicalBytes`: the sizes of all trees the store holds (well-formed action-cache entries, signed or
 *   not, and roots), as if each were stored whole.
 * - `uniqueBytes`: raw bytes of the distinct blobs (read from frame headers).
 * - `storedBytes`: what the blobs take on disk.
 * - `dedupRatio` = logical / unique; `compressionRatio` = unique / stored.
 *
 * Read from the store's SQLite index when it has one (refreshed first: rebuilt if it fell behind), so
 * the cost does not grow with the number of blobs; else, and when the index cannot be brought up to
 * date (a full disk), counted from the files.
 */
import { describeAcEntry } from './action-cache';
import { ErrorCodes, isCascacheError } from './errors';
import type { LocalStore } from './local-store';
import type { RunSummary, StoreIndex, TaskMisses, ToolStats } from './store-index';

export interface StoreStats {
  blobs: number;
  storedBytes: number;
  uniqueBytes: number;
  acEntries: number;
  roots: number;
  logicalBytes: number;
  dedupRatio: number;
  compressionRatio: number;
  avgChunkBytes: number;
}

export async function storeStats(store: LocalStore): Promise<StoreStats> {
  if (store.index) {
    try {
      await store.index.refresh(store);
      return indexStats(store.index);
    } catch (err) {
      // The index cannot be brought up to date (a full disk): it is a cache, count from the files.
      if (!isCascacheError(err, ErrorCodes.IO)) throw err;
    }
  }
  let blobs = 0;
  let storedBytes = 0;
  let uniqueBytes = 0;
  for await (const b of store.blobs.list()) {
    blobs++;
    storedBytes += b.storedSize;
    uniqueBytes += store.blobs.header(b.digest)?.rawLength ?? 0;
  }
  let acEntries = 0;
  let logicalBytes = 0;
  for await (const { namespace, key } of store.entries.list()) {
    // Well-formed entries, as the index counts them (it holds no secret to check signatures with).
    const bytes = await store.entries.get(namespace, key);
    const e = bytes && describeAcEntry(bytes, namespace, key);
    if (!e) continue;
    acEntries++;
    logicalBytes += e.size;
  }
  const roots = await store.roots.list();
  for (const r of roots) logicalBytes += r.size;
  return withRatios({ blobs, storedBytes, uniqueBytes, acEntries, roots: roots.length, logicalBytes });
}

/** The same figures from an index as it stands (the caller has refreshed it). */
export function indexStats(index: StoreIndex): StoreStats {
  const c = index.counts();
  return withRatios({ blobs: c.blobs, storedBytes: c.storedBytes, uniqueBytes: c.rawBytes, acEntries: c.entries, roots: c.roots, logicalBytes: c.logicalBytes });
}

function withRatios(t: Omit<StoreStats, 'dedupRatio' | 'compressionRatio' | 'avgChunkBytes'>): StoreStats {
  const ratio = (a: number, b: number): number => (b > 0 ? Math.round((a / b) * 100) / 100 : 0);
  return {
    ...t,
    dedupRatio: ratio(t.logicalBytes, t.uniqueBytes),
    compressionRatio: ratio(t.uniqueBytes, t.storedBytes),
    avgChunkBytes: t.blobs > 0 ? Math.round(t.uniqueBytes / t.blobs) : 0,
  };
}

/** Tools every report lists, with zeros before their first run. */
export const REPORTED_TOOLS = ['nx', 'cascache cache'] as const;

/**
 * What `cascache stats --json` prints and the dashboard draws, from one index: the store's figures,
 * what each tool got from it (those in {@link REPORTED_TOOLS} always, then any other that ran), the
 * latest `runs` runs and the `topMisses` tasks that missed most.
 */
export interface StoreReport {
  store: StoreStats;
  tools: ToolStats[];
  runs: RunSummary[];
  topMisses: TaskMisses[];
}

/** See {@link StoreReport}; `store` is computed by the caller (from the index, or the files). */
export function storeReport(index: StoreIndex | null, store: StoreStats, options: { runs: number; topMisses: number }): StoreReport {
  const recorded = index?.toolStats() ?? [];
  const always: readonly string[] = REPORTED_TOOLS;
  const tools: ToolStats[] = [
    ...always.map((tool) => recorded.find((t) => t.tool === tool) ?? { tool, runs: 0, hits: 0, localHits: 0, misses: 0, hitRate: 0, savedMs: tool === 'nx' ? 0 : null }),
    ...recorded.filter((t) => !always.includes(t.tool)),
  ];
  return {
    store,
    tools,
    runs: options.runs > 0 ? (index?.recentRuns(options.runs) ?? []) : [],
    topMisses: options.topMisses > 0 ? (index?.topMisses(options.topMisses) ?? []) : [],
  };
}
