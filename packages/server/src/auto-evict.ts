/**
 * Keeps a store under a maximum size, like bazel-remote's `--max_size`: after uploads (debounced)
 * and on a timer, never on the request path. When the blobs exceed the maximum, least recently used
 * cache entries are evicted down to 90% of it (so one upload does not trigger the next eviction),
 * and what became unreferenced is swept after the usual grace period.
 *
 * The size check is `storeStats`: the store's SQLite index (one SUM over the blobs table, refreshed
 * first if it fell behind), so checking after every upload does not list every blob file; without an
 * index it counts the files.
 */
import { executeGc, planEvict, storeStats, type GcResult, type LocalStore } from '@cascache/core';

export interface AutoEvictOptions {
  maxBytes: number;
  /** Keep unreferenced blobs younger than this, ms (default 1 h: protects writes in progress). */
  graceMs?: number;
  /** Wait after an upload before checking, ms. Default 2 s. */
  debounceMs?: number;
  /** Also check this often, ms. Default 5 min. */
  intervalMs?: number;
  /** Told about every eviction that freed something, and every failure. */
  onEvict?: (event: { before: number; result: GcResult } | { error: unknown }) => void;
}

export class AutoEvictor {
  private running: Promise<void> | null = null;
  private timer: NodeJS.Timeout | undefined;
  private readonly interval: NodeJS.Timeout;

  constructor(
    private readonly store: LocalStore,
    private readonly options: AutoEvictOptions,
  ) {
    this.interval = setInterval(() => void this.check(), options.intervalMs ?? 5 * 60_000);
    this.interval.unref();
  }

  /** Schedules a check soon (called after each stored upload). */
  kick(): void {
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.check();
    }, this.options.debounceMs ?? 2000);
    this.timer.unref();
  }

  /** Checks now; resolves when done. Never runs twice at once. */
  check(): Promise<void> {
    this.running ??= this.run().finally(() => {
      this.running = null;
    });
    return this.running;
  }

  stop(): void {
    clearInterval(this.interval);
    if (this.timer) clearTimeout(this.timer);
  }

  private async run(): Promise<void> {
    try {
      const total = (await storeStats(this.store)).storedBytes;
      if (total <= this.options.maxBytes) return;
      const plan = await planEvict(this.store, { toSizeBytes: Math.floor(this.options.maxBytes * 0.9), graceMs: this.options.graceMs });
      const result = await executeGc(this.store, plan);
      this.options.onEvict?.({ before: total, result });
    } catch (error) {
      this.options.onEvict?.({ error });
    }
  }
}
