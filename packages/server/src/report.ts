/**
 * What the server did per Nx hash, with timestamps, so a client (the Nx plugin's summary) can ask
 * about exactly the tasks of its own run, from its own start time, even when several runs share one
 * agent. Bounded: at most `maxHashes` hashes (oldest first out) and 16 events per hash.
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
  /** Hits of the tool's own cache that the tool told about (Turborepo's events). */
  localHits: number;
}

export type ActivityTotals = HashActivity & { hashes: number };

const empty = (): HashActivity => ({ hits: 0, misses: 0, stored: 0, conflicts: 0, bytesReceived: 0, bytesStored: 0, bytesSent: 0, localHits: 0 });
const EVENTS_PER_HASH = 16;
/** Unservable-entry events kept for reports (oldest out). */
const UNSERVABLE_EVENTS = 10_000;

export class ActivityLog {
  private readonly byHash = new Map<string, Array<{ at: number; delta: Partial<HashActivity> }>>();
  readonly totals: HashActivity = empty();
  /** Entries found but not served, why (`AcMissReason`), and when: a run's summary says so. */
  private readonly unservable: Array<{ at: number; reason: string }> = [];

  constructor(
    private readonly maxHashes = 50_000,
    private readonly now: () => number = Date.now,
  ) {}

  /** Adds figures for one hash, stamped with the current time (ms since the epoch). */
  record(hash: string, delta: Partial<HashActivity>): void {
    const events = this.byHash.get(hash) ?? [];
    this.byHash.delete(hash);
    this.byHash.set(hash, events); // re-insert: most recent last
    events.push({ at: this.now(), delta });
    if (events.length > EVENTS_PER_HASH) events.shift();
    for (const [k, v] of Object.entries(delta) as Array<[keyof HashActivity, number]>) this.totals[k] += v;
    if (this.byHash.size > this.maxHashes) this.byHash.delete(this.byHash.keys().next().value!);
  }

  /** Notes one stored entry that was found but could not be served (its `AcMissReason`). */
  recordUnservable(reason: string): void {
    this.unservable.push({ at: this.now(), reason });
    if (this.unservable.length > UNSERVABLE_EVENTS) this.unservable.shift();
  }

  /** Entries found but not served at or after `since` (ms), counted by reason. */
  unservableSince(since = 0): Record<string, number> {
    const out: Record<string, number> = {};
    for (const e of this.unservable) if (e.at >= since) out[e.reason] = (out[e.reason] ?? 0) + 1;
    return out;
  }

  /** Ids starting with `prefix` that have figures recorded at or after `since` (ms). */
  idsWithPrefix(prefix: string, since = 0): string[] {
    const out: string[] = [];
    for (const [id, events] of this.byHash) if (id.startsWith(prefix) && events.some((e) => e.at >= since)) out.push(id);
    return out;
  }

  /** Per id, its figures recorded at or after `since` (ms). */
  detail(ids: Iterable<string>, since = 0): Array<HashActivity & { id: string }> {
    const out: Array<HashActivity & { id: string }> = [];
    for (const id of new Set(ids)) {
      const one = this.report([id], since);
      if (one.hashes === 0) continue;
      const { hashes: _, ...figures } = one;
      out.push({ id, ...figures });
    }
    return out;
  }

  /** Sums the figures of the given hashes recorded at or after `since` (ms; default all). */
  report(hashes: Iterable<string>, since = 0): ActivityTotals {
    const sum: ActivityTotals = { ...empty(), hashes: 0 };
    for (const h of new Set(hashes)) {
      const events = this.byHash.get(h)?.filter((e) => e.at >= since);
      if (!events?.length) continue;
      sum.hashes++;
      for (const e of events) for (const [k, v] of Object.entries(e.delta) as Array<[keyof HashActivity, number]>) sum[k] += v;
    }
    return sum;
  }
}
