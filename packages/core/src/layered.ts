/**
 * The layered store: the local tier in front of remote tiers (bazel-remote's disk cache in front of
 * its proxy backend; restic's cache in front of a repository).
 *
 * Reads (`lookup`, `fetchTree`): the local tier first, then each remote in order; the first tier
 * holding a verified AC entry with its whole tree wins, and the tree is promoted into the local
 * tier (missing blobs only, read from packs with coalesced ranged GETs) before the entry is written
 * locally. Faster writable remotes that missed get a journal record, so they fill in behind.
 *
 * Writes (`recordUpload`): the caller has already written the local tier. Each writable remote gets
 * a durable journal record first; then either the upload runs now (`sync`, for CI) or the
 * write-behind worker (`start`) replays records with bounded concurrency, retrying retryable
 * failures with exponential backoff and moving permanently failed records aside. Upload order per
 * record: packs and indexes, then the tree's locator, then the AC entry or root, so a reader on another
 * machine never sees an entry whose blobs are not there.
 *
 * Failures of a remote never fail a read or a write: they become `onEvent` warnings (at most one per
 * tier per `warnIntervalMs`) and misses, and the journal keeps the uploads.
 */
import { ActionCache, type AcHit } from './action-cache';
import type { Digest } from './digest';
import { CascacheError, ErrorCodes, isCascacheError } from './errors';
import { Limiter } from './limiter';
import type { LocalStore } from './local-store';
import { manifestChunks } from './manifest';
import { UploadJournal, type JournalItem, type JournalRecord } from './remote/journal';
import type { RemoteTier } from './remote/tier';
import { fetchBlob, getManifest, putManifest } from './tree';

/** Something a caller may want to log. Core never prints; the edges decide. */
export type LayeredEvent =
  | { type: 'warning'; tier: string; code: string; message: string }
  | { type: 'uploaded'; tier: string; record: JournalRecord; stats: UploadStats }
  | { type: 'promoted'; tier: string; blobs: number; bytes: number };

/** Counters of what uploads sent and what dedup saved. */
export interface UploadStats {
  /** Journal records completed. */
  records: number;
  packs: number;
  /** Blobs sent. */
  blobsSent: number;
  /** Bytes sent: packs, indexes, locators and AC entries. */
  bytesSent: number;
  /** Blobs the remote already had. */
  blobsDeduplicated: number;
  /** Raw (uncompressed) bytes of the blobs the remote already had. */
  bytesDeduplicated: number;
}

/** What {@link LayeredStore.drain} saw. */
export interface DrainReport {
  /** True when every writable tier's journal is empty. */
  drained: boolean;
  /** Records still pending, per tier name. */
  pending: Record<string, number>;
  /** Records moved aside after permanent failures, per tier name. */
  failed: Record<string, number>;
  /** Totals since this store was opened. */
  stats: UploadStats;
}

/** Options for {@link LayeredStore}. */
export interface LayeredStoreOptions {
  local: LocalStore;
  /** Remote tiers, fastest first. */
  remotes: RemoteTier[];
  /** The AC signing secret remote entries are verified with (the local store's secret). */
  secret: Uint8Array | null;
  /** Upload before `recordUpload` resolves (CI); on failure the record stays in the journal. */
  sync?: boolean;
  /** Journal records uploaded at once per tier. Default 2. */
  concurrency?: number;
  /** First retry delay after a retryable failure, ms; doubles up to `retryMaxMs`. Default 1000. */
  retryBaseMs?: number;
  /** Longest retry delay, ms. Default 60000. */
  retryMaxMs?: number;
  /** Shortest interval between two warnings about one tier, ms. Default 60000. */
  warnIntervalMs?: number;
  onEvent?: (event: LayeredEvent) => void;
}

const emptyStats = (): UploadStats => ({ records: 0, packs: 0, blobsSent: 0, bytesSent: 0, blobsDeduplicated: 0, bytesDeduplicated: 0 });

export class LayeredStore {
  readonly local: LocalStore;
  readonly remotes: readonly RemoteTier[];
  readonly journal: UploadJournal;
  /** Totals since this store was opened. */
  readonly stats: UploadStats = emptyStats();
  private readonly caches: ActionCache[];
  private readonly opts: LayeredStoreOptions;
  private readonly limiter: Map<string, Limiter> = new Map();
  private readonly inflight = new Map<string, Promise<void>>();
  private readonly lastWarning = new Map<string, number>();
  private readonly backoff = new Map<string, number>();
  private workers: Promise<void>[] = [];
  /** Idle workers, woken by new records and by close. */
  private readonly idle = new Set<() => void>();
  /** Backoff sleeps, cut short only by close. */
  private readonly sleepers = new Set<() => void>();
  private closed = false;

  constructor(options: LayeredStoreOptions) {
    this.opts = options;
    this.local = options.local;
    this.remotes = options.remotes;
    this.journal = new UploadJournal(options.local.root);
    this.caches = options.remotes.map(
      (tier) =>
        new ActionCache({
          entries: tier.entries,
          blobs: tier.blobs,
          secret: options.secret,
          onWarning: (w) => this.warn(tier.name, 'E_INTEGRITY', `action-cache entry ${w.namespace}/${w.key} not served: ${w.reason}${w.detail ? ` (${w.detail})` : ''}`),
        }),
    );
    for (const t of this.writable()) this.limiter.set(t.name, new Limiter(options.concurrency ?? 2));
  }

  /** The remote tiers uploads go to. */
  writable(): RemoteTier[] {
    return this.remotes.filter((t) => !t.readOnly);
  }

  /**
   * Looks an action key up in every tier, fastest first, promoting a remote hit into the local tier.
   * Never throws for a remote's failure (a warning and the next tier); a miss everywhere is null.
   * @throws `E_BAD_INPUT` for a malformed namespace or key; local `E_IO` propagates.
   */
  async lookup(namespace: string, key: Digest): Promise<AcHit | null> {
    const local = await this.local.actionCache.get(namespace, key);
    if (local) return local;
    for (let i = 0; i < this.remotes.length; i++) {
      const tier = this.remotes[i]!;
      try {
        const hit = await this.caches[i]!.get(namespace, key, { verifyChunks: false });
        if (!hit) continue;
        // The manifest came with the hit: keep it rather than fetch it again (canonical JSON, so
        // re-encoding yields the same digest; if it ever did not, fetchTree fetches it).
        await putManifest(this.local.blobs, hit.manifest);
        if (!(await this.fetchTree(hit.entry.manifest, i))) continue;
        await this.local.actionCache.put(namespace, key, { manifest: hit.entry.manifest, size: hit.entry.size, writer: hit.entry.writer });
        for (const faster of this.remotes.slice(0, i)) if (!faster.readOnly) await this.enqueue(faster, { kind: 'ac', namespace, key }).catch(() => undefined);
        return hit;
      } catch (err) {
        if (isCascacheError(err, ErrorCodes.BAD_INPUT)) throw err;
        this.warnError(tier.name, err);
      }
    }
    return null;
  }

  /**
   * Makes the local tier hold a whole tree (manifest and chunks), reading what it lacks from the
   * remotes in order, each blob verified. `from` limits the search to one remote (by position).
   * @returns true when the tree is complete locally.
   */
  async fetchTree(manifestDigest: Digest, from?: number): Promise<boolean> {
    const tiers = from === undefined ? this.remotes.map((t, i) => [t, i] as const) : [[this.remotes[from]!, from] as const];
    let manifest = await getManifest(this.local.blobs, manifestDigest).catch(() => null);
    if (!manifest) {
      for (const [tier] of tiers) {
        try {
          await tier.blobs.loadLocator(manifestDigest);
          const bytes = await tier.blobs.getBuffer(manifestDigest);
          if (!bytes) continue;
          await this.local.blobs.put(manifestDigest, bytes);
          manifest = await getManifest(this.local.blobs, manifestDigest);
          if (manifest) break;
        } catch (err) {
          this.warnError(tier.name, err);
        }
      }
    }
    if (!manifest) return false;
    const chunks = [...new Set(manifestChunks(manifest))];
    const present = await this.local.blobs.has(chunks);
    let missing = chunks.filter((d) => !present.has(d));
    for (const [tier] of tiers) {
      if (missing.length === 0) break;
      let blobs = 0;
      let bytes = 0;
      try {
        for await (const b of tier.blobs.fetchMany(missing)) {
          await this.local.blobs.put(b.digest, b.bytes);
          blobs++;
          bytes += b.bytes.length;
        }
      } catch (err) {
        this.warnError(tier.name, err);
      }
      if (blobs > 0) this.opts.onEvent?.({ type: 'promoted', tier: tier.name, blobs, bytes });
      const now = await this.local.blobs.has(missing);
      missing = missing.filter((d) => !now.has(d));
    }
    return missing.length === 0;
  }

  /**
   * Records that the local tier gained an AC entry or a root that the remotes should have. Durable
   * (journaled) when it resolves; with `sync`, also uploaded, unless a remote failed (then it stays
   * journaled and a warning says so). Never throws for a remote's failure.
   * @throws `E_IO` when the journal cannot be written.
   */
  async recordUpload(record: JournalRecord): Promise<void> {
    for (const tier of this.writable()) {
      const id = await this.enqueue(tier, record);
      if (this.opts.sync) {
        await this.runItem(tier, { id, record }).catch(() => undefined);
      }
    }
    this.wakeIdle();
  }

  /** Starts the write-behind workers (one per writable tier); replays what the journal holds. */
  start(): void {
    if (this.workers.length > 0 || this.closed) return;
    this.workers = this.writable().map((tier) => this.worker(tier));
  }

  /**
   * Uploads every journal record now, waiting at most `timeoutMs` (default: no limit). Retryable
   * failures are retried with backoff until the deadline; open circuit breakers are reset first.
   */
  async drain(options: { timeoutMs?: number } = {}): Promise<DrainReport> {
    const deadline = options.timeoutMs === undefined ? Infinity : Date.now() + options.timeoutMs;
    // An explicit drain is worth one real attempt even while a breaker is open.
    for (const tier of this.writable()) tier.objects.reset();
    await Promise.all(this.writable().map((tier) => this.pump(tier, deadline)));
    const pending: Record<string, number> = {};
    const failed: Record<string, number> = {};
    let drained = true;
    for (const tier of this.writable()) {
      const c = await this.journal.counts(tier.name);
      pending[tier.name] = c.pending;
      failed[tier.name] = c.failed;
      if (c.pending > 0) drained = false;
    }
    return { drained, pending, failed, stats: { ...this.stats } };
  }

  /** Stops the workers after the uploads in flight; pending records stay in the journal. */
  async close(): Promise<void> {
    this.closed = true;
    this.wakeIdle();
    for (const s of [...this.sleepers]) s();
    await Promise.allSettled(this.workers);
    await Promise.allSettled([...this.inflight.values()]);
  }

  private async enqueue(tier: RemoteTier, record: JournalRecord): Promise<string> {
    return this.journal.add(tier.name, record);
  }

  private async worker(tier: RemoteTier): Promise<void> {
    while (!this.closed) {
      const items = await this.journal.pending(tier.name).catch(() => [] as JournalItem[]);
      const todo = items.filter((it) => !this.inflight.has(`${tier.name}/${it.id}`));
      if (todo.length === 0) {
        await new Promise<void>((resolve) => {
          this.idle.add(resolve);
          if (this.inflight.size > 0) void Promise.race(this.inflight.values()).then(resolve, resolve);
        });
        continue;
      }
      const ok = await this.pass(tier, todo);
      if (!ok) await this.sleep(this.nextBackoff(tier));
      else this.backoff.delete(tier.name);
    }
  }

  /** Uploads a tier's pending records until none is left or the deadline passes. */
  private async pump(tier: RemoteTier, deadline: number): Promise<void> {
    while (Date.now() < deadline) {
      const items = await this.journal.pending(tier.name);
      if (items.length === 0) return;
      const todo = items.filter((it) => !this.inflight.has(`${tier.name}/${it.id}`));
      if (todo.length === 0) {
        await Promise.race(this.inflight.values());
        continue;
      }
      const ok = await this.pass(tier, todo);
      if (!ok) await this.sleep(Math.min(this.nextBackoff(tier), Math.max(0, deadline - Date.now())));
    }
  }

  /** One pass over `items`; false when a retryable failure calls for a backoff. */
  private async pass(tier: RemoteTier, items: JournalItem[]): Promise<boolean> {
    const results = await Promise.allSettled(items.map((it) => this.runItem(tier, it)));
    return results.every((r) => r.status === 'fulfilled');
  }

  /** Uploads one record under the tier's limiter; removes it on success or permanent failure. */
  private runItem(tier: RemoteTier, item: JournalItem): Promise<void> {
    const key = `${tier.name}/${item.id}`;
    const existing = this.inflight.get(key);
    if (existing) return existing;
    const p = this.limiter
      .get(tier.name)!
      .run(async () => {
        try {
          const stats = await this.push(tier, item.record);
          await this.journal.done(tier.name, item.id);
          add(this.stats, stats);
          this.opts.onEvent?.({ type: 'uploaded', tier: tier.name, record: item.record, stats });
        } catch (err) {
          if (isCascacheError(err) && err.retryable) {
            this.warnError(tier.name, err);
            throw err;
          }
          const reason = err instanceof Error ? err.message : String(err);
          await this.journal.fail(tier.name, item.id, reason).catch(() => undefined);
          this.warn(tier.name, isCascacheError(err) ? err.code : 'E_INTERNAL', `upload of ${describeRecord(item.record)} failed permanently and was set aside: ${reason}`, true);
        }
      })
      .finally(() => this.inflight.delete(key));
    this.inflight.set(key, p);
    return p;
  }

  /** Uploads one record's tree, then its entry or root. */
  private async push(tier: RemoteTier, record: JournalRecord): Promise<UploadStats> {
    const stats = emptyStats();
    stats.records = 1;
    if (record.kind === 'ac') {
      const entry = await this.local.actionCache.peek(record.namespace, record.key);
      const bytes = entry ? await this.local.entries.get(record.namespace, record.key) : null;
      if (!entry || !bytes) return stats; // invalidated or evicted locally since: nothing to send
      await this.pushTree(tier, entry.manifest, stats);
      const r = await tier.entries.putIfAbsent(record.namespace, record.key, bytes);
      if (r.created) stats.bytesSent += bytes.length;
      return stats;
    }
    const root = await this.local.roots.get(record.digest);
    if (!root) return stats;
    await this.pushTree(tier, root.digest, stats);
    await tier.putRoot(root);
    return stats;
  }

  private async pushTree(tier: RemoteTier, manifestDigest: Digest, stats: UploadStats): Promise<void> {
    const manifest = await getManifest(this.local.blobs, manifestDigest);
    if (!manifest) throw new CascacheError(ErrorCodes.NOT_FOUND, `manifest ${manifestDigest} is gone from the local tier`, { retryable: false });
    const chunks = [...new Set(manifestChunks(manifest))];
    const all = [manifestDigest, ...chunks.filter((d) => d !== manifestDigest)];
    const present = await tier.blobs.has(all);
    const missing = all.filter((d) => !present.has(d));
    for (const d of present) {
      stats.blobsDeduplicated++;
      stats.bytesDeduplicated += this.local.blobs.header(d)?.rawLength ?? 0;
    }
    const local = this.local.blobs;
    const sent = await tier.blobs.putMany(
      (async function* () {
        for (const digest of missing) {
          const bytes = await fetchBlob(local, digest);
          if (!bytes) throw new CascacheError(ErrorCodes.NOT_FOUND, `blob ${digest} is gone from the local tier`, { retryable: false });
          yield { digest, bytes };
        }
      })(),
    );
    stats.packs += sent.packs;
    stats.blobsSent += sent.blobs;
    stats.bytesSent += sent.bytes;
    stats.bytesSent += await tier.blobs.writeLocator(manifestDigest, chunks);
  }

  private nextBackoff(tier: RemoteTier): number {
    const base = this.opts.retryBaseMs ?? 1000;
    const prev = this.backoff.get(tier.name);
    const next = prev === undefined ? base : Math.min(prev * 2, this.opts.retryMaxMs ?? 60000);
    this.backoff.set(tier.name, next);
    return next;
  }

  private wakeIdle(): void {
    const waiting = [...this.idle];
    this.idle.clear();
    for (const w of waiting) w();
  }

  private sleep(ms: number): Promise<void> {
    if (this.closed) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(t);
        this.sleepers.delete(done);
        resolve();
      };
      const t = setTimeout(done, ms);
      this.sleepers.add(done);
    });
  }

  private warnError(tier: string, err: unknown): void {
    const code = isCascacheError(err) ? err.code : 'E_INTERNAL';
    this.warn(tier, code, err instanceof Error ? err.message : String(err));
  }

  private warn(tier: string, code: string, message: string, always = false): void {
    const now = Date.now();
    const last = this.lastWarning.get(tier);
    if (!always && last !== undefined && now - last < (this.opts.warnIntervalMs ?? 60000)) return;
    this.lastWarning.set(tier, now);
    this.opts.onEvent?.({ type: 'warning', tier, code, message });
  }
}

function add(into: UploadStats, s: UploadStats): void {
  into.records += s.records;
  into.packs += s.packs;
  into.blobsSent += s.blobsSent;
  into.bytesSent += s.bytesSent;
  into.blobsDeduplicated += s.blobsDeduplicated;
  into.bytesDeduplicated += s.bytesDeduplicated;
}

function describeRecord(r: JournalRecord): string {
  return r.kind === 'ac' ? `action-cache entry ${r.namespace}/${r.key}` : `store root ${r.digest}`;
}
