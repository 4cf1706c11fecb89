/**
 * What the server did per Nx hash, so a client (the Nx plugin's summary) can ask about exactly the
 * tasks of its own run even when several runs share one agent. Bounded: oldest hashes drop first.
 */
export interface HashActivity {
  hits: number;
  misses: number;
  stored: number;
  conflicts: number;
  /** Request-body bytes received (tar.gz as Nx sent them). */
  bytesReceived: number;
  /** Bytes the store newly wrote for them, after dedup and compression. */
  bytesStored: number;
  /** Response-body bytes sent (tar.gz). */
  bytesSent: number;
}

export type ActivityTotals = HashActivity & { hashes: number };

const empty = (): HashActivity => ({ hits: 0, misses: 0, stored: 0, conflicts: 0, bytesReceived: 0, bytesStored: 0, bytesSent: 0 });

export class ActivityLog {
  private readonly byHash = new Map<string, HashActivity>();
  readonly totals: HashActivity = empty();

  constructor(private readonly maxHashes = 50_000) {}

  /** Adds figures for one hash. */
  record(hash: string, delta: Partial<HashActivity>): void {
    let a = this.byHash.get(hash);
    if (a) this.byHash.delete(hash);
    else a = empty();
    this.byHash.set(hash, a); // re-insert: most recent last
    for (const [k, v] of Object.entries(delta) as Array<[keyof HashActivity, number]>) {
      a[k] += v;
      this.totals[k] += v;
    }
    if (this.byHash.size > this.maxHashes) this.byHash.delete(this.byHash.keys().next().value!);
  }

  /** Sums the figures of the given hashes (unknown ones count as nothing). */
  report(hashes: Iterable<string>): ActivityTotals {
    const sum: ActivityTotals = { ...empty(), hashes: 0 };
    for (const h of new Set(hashes)) {
      const a = this.byHash.get(h);
      if (!a) continue;
      sum.hashes++;
      for (const k of Object.keys(a) as Array<keyof HashActivity>) sum[k] += a[k];
    }
    return sum;
  }
}
