/**
 * Run-level prefetch: find the most relevant earlier run on the remote tiers (the newest run of
 * the same branch, else of the default branch) and fetch everything it produced into the local
 * tier, many entries at once, before the tool asks. The tool's own lookups then hit the local tier,
 * or join the download already under way (`LayeredStore.lookup` is single-flight per key). What the
 * run did not predict is looked up as always. Behind `cascache warm` and the agent's pre-run call.
 */
import type { Digest } from './digest';
import { Limiter } from './limiter';
import type { FetchTally, LayeredStore } from './layered';
import { decodeSharedRun, runPrefix, type SharedRun } from './remote/runs';

/** Which earlier run to prefetch. */
export interface RunQuery {
  /** `nx`, `turbo`... */
  tool: string;
  /** Branches to try, in order (e.g. the current branch, then the default branch). */
  branches: Array<string | null>;
  /** Prefer a run of exactly this commit among each branch's recent runs (40 hex). */
  commit?: string;
  /** An exact run record object key (as `cascache warm` prints it); overrides the rest. */
  runKey?: string;
}

/** A run found on a tier. */
export interface FoundRun {
  tier: string;
  /** Its object key on that tier. */
  key: string;
  run: SharedRun;
}

/** What a prefetch did. Bytes are raw (uncompressed) chunk bytes. */
export interface PrefetchReport {
  run: FoundRun | null;
  /** Entries the run lists. */
  entries: number;
  /** Of those, already in the local tier. */
  local: number;
  /** Fetched from a remote tier, trees complete. */
  fetched: number;
  /** Not found (or incomplete) anywhere. */
  missing: number;
  blobs: number;
  bytes: number;
  ms: number;
}

/** Runs looked at per branch, newest first. */
const RECENT_RUNS = 20;

/**
 * The most relevant run on the remote tiers, fastest tier first: the exact `runKey`; else, per branch
 * in order, a recent run of `commit` if there is one, else the newest. Records whose signature this
 * machine does not accept are skipped. Never throws for a remote's failure (the tier is skipped).
 */
export async function findRun(layered: LayeredStore, query: RunQuery): Promise<FoundRun | null> {
  const trust = layered.trust;
  if (!trust.verifies) return null;
  for (const tier of layered.remotes) {
    const entries = tier.entries;
    if (!entries.listRuns || !entries.getRun) continue;
    try {
      const read = async (key: string): Promise<FoundRun | null> => {
        const bytes = await entries.getRun!(key);
        const run = bytes && decodeSharedRun(bytes, trust);
        return run && run.tool === query.tool ? { tier: tier.name, key, run } : null;
      };
      if (query.runKey) {
        const found = await read(query.runKey);
        if (found) return found;
        continue;
      }
      for (const branch of query.branches) {
        const keys = await entries.listRuns(runPrefix(query.tool, branch), RECENT_RUNS);
        let newest: FoundRun | null = null;
        for (const key of keys) {
          const found = await read(key);
          if (!found) continue;
          if (!query.commit || found.run.commit === query.commit) return found;
          newest ??= found;
        }
        if (newest) return newest;
      }
    } catch {
      // A tier that cannot answer is skipped; lookups warn about it as they always do.
    }
  }
  return null;
}

/**
 * Fetches every entry a run lists (and its tree) into the local tier, `concurrency` at a time.
 * Never throws for a remote's failure: what could not be fetched counts as missing.
 */
export async function prefetchRun(
  layered: LayeredStore,
  found: FoundRun,
  options: { concurrency?: number; onProgress?: (done: number, total: number, bytes: number) => void } = {},
): Promise<PrefetchReport> {
  const t0 = performance.now();
  const report: PrefetchReport = { run: found, entries: found.run.keys.length, local: 0, fetched: 0, missing: 0, blobs: 0, bytes: 0, ms: 0 };
  const limiter = new Limiter(options.concurrency ?? 8);
  let done = 0;
  const one = async (key: Digest): Promise<void> => {
    try {
      if (await layered.local.actionCache.peek(found.run.namespace, key)) {
        report.local++;
        return;
      }
      const tally: FetchTally = { blobs: 0, bytes: 0 };
      const hit = await layered.lookup(found.run.namespace, key, tally);
      if (hit) report.fetched++;
      else report.missing++;
      report.blobs += tally.blobs;
      report.bytes += tally.bytes;
    } catch {
      report.missing++;
    } finally {
      options.onProgress?.(++done, report.entries, report.bytes);
    }
  };
  await Promise.all([...new Set(found.run.keys)].map((key) => limiter.run(() => one(key))));
  report.ms = performance.now() - t0;
  return report;
}
