/**
 * Store-wide figures: what is stored, what it stands for, and how much dedup and compression save.
 *
 * - `logicalBytes`: the sizes of all trees the store holds (action-cache entries and roots), as if
 *   each were stored whole.
 * - `uniqueBytes`: raw bytes of the distinct blobs (read from frame headers).
 * - `storedBytes`: what the blobs take on disk.
 * - `dedupRatio` = logical / unique; `compressionRatio` = unique / stored.
 */
import type { LocalStore } from './local-store';

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
    const e = await store.actionCache.peek(namespace, key);
    if (!e) continue;
    acEntries++;
    logicalBytes += e.size;
  }
  const roots = await store.roots.list();
  for (const r of roots) logicalBytes += r.size;
  const ratio = (a: number, b: number): number => (b > 0 ? Math.round((a / b) * 100) / 100 : 0);
  return {
    blobs,
    storedBytes,
    uniqueBytes,
    acEntries,
    roots: roots.length,
    logicalBytes,
    dedupRatio: ratio(logicalBytes, uniqueBytes),
    compressionRatio: ratio(uniqueBytes, storedBytes),
    avgChunkBytes: blobs > 0 ? Math.round(uniqueBytes / blobs) : 0,
  };
}
