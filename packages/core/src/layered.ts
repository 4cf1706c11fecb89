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
 * batch: packs and indexes, then tree objects, then AC entries and roots, so a reader on
 * another machine never sees an entry whose blobs are not there.
 *
 * Failures of a remote never fail a read or a write: they become `onEvent` warnings (at most one per
 * tier per `warnIntervalMs`) and misses, and the journal keeps the uploads.
 */
import { ActionCache, type AcEntry, type AcHit, type ActionCacheOptions } from './action-cache';
import type { Digest } from './digest';
import { CascacheError, ErrorCodes, isCascacheError } from './errors';
import { Limiter } from './limiter';
import type { LocalStore } from './local-store';
import { manifestChunks, parseManifest } from './manifest';
import { UploadJournal, type JournalItem, type JournalRecord } from './remote/journal';
import { encodeSharedRun, runObjectKey, type SharedRun } from './remote/runs';
import type { RemoteTier } from './remote/tier';
import { fetchBlob, getManifest, putManifest } from './tree';
import { Trust } from './trust';

/** Something a caller may want to log. Core never prints; the edges decide. */
export type LayeredEvent =
  | { type: 'warning'; tier: string; code: string; message: string }
  | { type: 'uploaded'; tier: string; records: number; stats: UploadStats }
  | { type: 'promoted'; tier: string; blobs: number; bytes: number }
  /** An upload found the tier holding another writer's entry for its key: the tier's entry is now the local one too. */
  | { type: 'yielded'; tier: string; namespace: string; key: Digest };

/** Counters of what uploads sent and what dedup saved. */
export interface UploadStats {
  /** Journal records completed. */
  records: number;
  packs: number;
  /** Blobs sent. */
  blobsSent: number;
  /** Bytes sent: packs, indexes, tree objects, AC entries and roots. */
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
  /**
   * Tiers the drain gave up on before its deadline, with the failure that decided it: their breaker
   * opened again (consecutive retryable failures, e.g. connection refused), so waiting longer would
   * only retry. Their records stay journaled.
   */
  unreachable: Record<string, string>;
  /** Totals since this store was opened. */
  stats: UploadStats;
}

/** Blobs and raw bytes a lookup fetched from remote tiers into the local one, added up by the caller. */
export interface FetchTally {
  blobs: number;
  bytes: number;
}

/** Options for {@link LayeredStore}. */
export interface LayeredStoreOptions {
  local: LocalStore;
  /** Remote tiers, fastest first. */
  remotes: RemoteTier[];
  /**
   * The AC signing secret remote entries and run records are verified with (the local store's
   * secret). Ignored when `trust` is given; with remotes, one of the two must verify something.
   */
  secret?: Uint8Array | null;
  /** Signing and per-namespace verification rules (Ed25519 keys, the secret); default: from `secret`. */
  trust?: Trust;
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
  /**
   * How long a lookup waits for a remote tier's action-cache entry (one small object), ms, before
   * it counts as that tier failing (its breaker counts it) and moves on: a tier that accepts
   * connections and never answers costs a build this once per breaker opening, not the client's
   * full timeout and retries per task. Default 5000.
   */
  lookupTimeoutMs?: number;
  onEvent?: (event: LayeredEvent) => void;
  /**
   * Told about each remote entry found but not served (another secret, an untrusted key, damage),
   * as the local action cache's `onWarning` is; the tier is in the `warning` event.
   */
  onEntryWarning?: ActionCacheOptions['onWarning'];
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
  private readonly lookups = new Map<string, Promise<AcHit | null>>();
  private readonly lastWarning = new Map<string, number>();
  private readonly backoff = new Map<string, number>();
  private readonly remembered = new Set<string>();
  /** Tiers whose backend was found to ignore conditional writes, and said so once. */
  private readonly toldUnconditional = new Set<string>();
  private readonly recent: Array<{ at: number; stats: UploadStats }> = [];
  private workers: Promise<void>[] = [];
  /** Idle workers, woken by new records and by close. */
  private readonly idle = new Set<() => void>();
  /** Backoff sleeps, cut short only by close. */
  private readonly sleepers = new Set<() => void>();
  private closed = false;

  /** Signs run records and verifies remote entries and run records. */
  readonly trust: Trust;

  /**
   * @throws CascacheError `E_CONFIG` when remote tiers are given with nothing to verify their entries
   * (no secret, no trusted key): anyone with write access to a shared tier could poison builds.
   */
  constructor(options: LayeredStoreOptions) {
    this.trust = options.trust ?? new Trust({ secret: options.secret ?? null });
    if (options.remotes.length > 0 && !this.trust.verifies) {
      throw new CascacheError(
        ErrorCodes.CONFIG,
        'remote tiers need a signing secret (CASCACHE_SECRET, 32+ bytes, the same on every machine) or trusted public keys (CASCACHE_TRUSTED_KEYS): entries read from a shared tier must be verified',
      );
    }
    this.opts = options;
    this.local = options.local;
    this.remotes = options.remotes;
    this.journal = new UploadJournal(options.local.root);
    this.caches = options.remotes.map(
      (tier) =>
        new ActionCache({
          entries: tier.entries,
          blobs: tier.blobs,
          secret: null,
          trust: this.trust,
          onWarning: (w) => {
            options.onEntryWarning?.(w);
            this.warn(tier.name, 'E_INTEGRITY', `action-cache entry ${w.namespace}/${w.key} not served: ${w.reason}${w.detail ? ` (${w.detail})` : ''}`);
          },
        }),
    );
    for (const t of this.writable()) this.limiter.set(t.name, new Limiter(options.concurrency ?? 2));
  }

  private cacheOf(tier: RemoteTier): ActionCache {
    return this.caches[this.remotes.indexOf(tier)]!;
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
  async lookup(namespace: string, key: Digest, fetched?: FetchTally): Promise<AcHit | null> {
    // Single-flight: a prefetch and the tool's own request for one key share one download.
    const id = `${namespace}/${key}`;
    const running = this.lookups.get(id);
    if (running) return running;
    const p = this.lookupOnce(namespace, key, fetched).finally(() => this.lookups.delete(id));
    this.lookups.set(id, p);
    return p;
  }

  private async lookupOnce(namespace: string, key: Digest, fetched?: FetchTally): Promise<AcHit | null> {
    const local = await this.local.actionCache.get(namespace, key);
    if (local) return local;
    // A namespace with neither trusted keys nor a secret is read from this machine only: a shared
    // tier's entries are never served unverified.
    if (this.trust.ruleFor(namespace) === 'none') return null;
    for (let i = 0; i < this.remotes.length; i++) {
      const tier = this.remotes[i]!;
      try {
        const hit = await this.withDeadline(tier, this.caches[i]!.get(namespace, key, { verifyChunks: false }), `looking up ${namespace}/${key}`);
        if (!hit) continue;
        // The manifest came with the hit: keep it rather than fetch it again (canonical JSON, so
        // re-encoding yields the same digest; if it ever did not, fetchTree fetches it).
        await putManifest(this.local.blobs, hit.manifest);
        if (!(await this.fetchTree(hit.entry.manifest, i, fetched))) continue;
        // Kept as its writer signed it: this machine may hold no key for the namespace.
        if (!(await this.local.actionCache.adopt(namespace, key, hit.bytes))) continue;
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
  async fetchTree(manifestDigest: Digest, from?: number, fetched?: FetchTally): Promise<boolean> {
    const tiers = from === undefined ? this.remotes.map((t, i) => [t, i] as const) : [[this.remotes[from]!, from] as const];
    let manifest = await getManifest(this.local.blobs, manifestDigest).catch(() => null);
    if (!manifest) {
      for (const [tier] of tiers) {
        try {
          // The tree object holds the manifest and every chunk's location (no listing needed).
          await tier.blobs.loadTree(manifestDigest);
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
      // One batch: the fetched chunks go into one local pack, sealed before the entry is written.
      // A remote failing half way is not the batch failing: what arrived verified is kept.
      // True when the tier listed the tree and answered every read: what is still missing then was
      // damaged or gone there, not lost to a network failure.
      let listedAndRead = false;
      await this.local.blobs.withBatch(async (local) => {
        try {
          const listed = await tier.blobs.loadTree(manifestDigest);
          for await (const b of tier.blobs.fetchMany(missing)) {
            // fetchMany verified the frame against its digest: keep it rather than compress again.
            if (b.frame) this.local.blobs.adoptFrame(b.digest, b.frame, b.bytes.length);
            else await local.put(b.digest, b.bytes);
            blobs++;
            bytes += b.bytes.length;
          }
          listedAndRead = listed;
        } catch (err) {
          this.warnError(tier.name, err);
        }
      });
      if (blobs > 0) this.opts.onEvent?.({ type: 'promoted', tier: tier.name, blobs, bytes });
      if (fetched) {
        fetched.blobs += blobs;
        fetched.bytes += bytes;
      }
      const now = await this.local.blobs.has(missing);
      missing = missing.filter((d) => !now.has(d));
      // The tier's tree lists chunks it could not deliver intact: the next upload of this output
      // must re-send them rather than deduplicate against the damaged copies (how a tier heals).
      if (listedAndRead && missing.length > 0) tier.blobs.distrustTree?.(manifestDigest);
    }
    return missing.length === 0;
  }

  /**
   * Another writer stored this key in the tier first (two machines or replicas built it at once):
   * write-once makes the tier's entry the one every reader gets, so this store keeps it too. The
   * same output needs nothing; another output is fetched from that tier and replaces the local
   * entry, so this store no longer serves the output that lost.
   * @returns false when the tier's entry can never be served (its tree is missing or damaged there):
   *   the caller replaces it with this store's.
   * @throws `E_UNAVAILABLE` (retryable: the record stays journaled) when the tier failed while its
   *   tree was being fetched; local `E_IO`.
   */
  private async yieldTo(tier: RemoteTier, namespace: string, key: Digest, theirs: AcEntry, bytes: Buffer): Promise<boolean> {
    const ours = await this.local.actionCache.peek(namespace, key);
    if (ours?.manifest === theirs.manifest) return true;
    if (await this.fetchTree(theirs.manifest, this.remotes.indexOf(tier))) {
      if (!(await this.local.actionCache.adopt(namespace, key, bytes, { overServable: true }))) return false;
      this.opts.onEvent?.({ type: 'yielded', tier: tier.name, namespace, key });
      return true;
    }
    // A tree the tier lists but could not deliver whole is distrusted by now (fetchTree): the
    // tier's entry cannot be served. Otherwise the tier failed meanwhile: try again later.
    if (!(await tier.blobs.hasTree(theirs.manifest))) return false;
    throw new CascacheError(ErrorCodes.UNAVAILABLE, `${tier.name}: could not fetch the entry another writer stored for ${namespace}/${key}`, { retryable: true });
  }

  /**
   * Records that the local tier gained an AC entry or a root that the remotes should have. Durable
   * (journaled) when it resolves; with `sync`, also uploaded, unless a remote failed (then it stays
   * journaled and a warning says so). Never throws for a remote's failure.
   * @throws `E_IO` when the journal cannot be written.
   */
  async recordUpload(record: JournalRecord): Promise<void> {
    // A namespace with nothing to verify it stays on this machine: no shared tier serves it (see
    // lookupOnce), so sending its entries and runs would only fill the bucket.
    const namespace = record.kind === 'ac' ? record.namespace : record.kind === 'run' ? record.run.namespace : null;
    if (namespace !== null && this.trust.ruleFor(namespace) === 'none') return;
    for (const tier of this.writable()) {
      const id = await this.enqueue(tier, record);
      if (this.opts.sync) {
        await this.runBatch(tier, [{ id, record }]).catch(() => undefined);
      }
    }
    this.wakeIdle();
  }

  /**
   * Journals a run record for every writable remote (uploaded after the entries journaled before
   * it, signed with the store's key or secret), so other machines can prefetch what the run produced.
   * Never throws for a remote's failure. @throws `E_IO` when the journal cannot be written.
   */
  async recordRun(run: SharedRun): Promise<void> {
    await this.recordUpload({ kind: 'run', run });
  }

  /** Starts the write-behind workers (one per writable tier); replays what the journal holds. */
  start(): void {
    if (this.workers.length > 0 || this.closed) return;
    this.workers = this.writable().map((tier) => this.worker(tier));
  }

  /**
   * Uploads every journal record now, waiting at most `timeoutMs` (default: no limit). Open circuit
   * breakers are reset first, so each tier gets real attempts; retryable failures are retried with
   * backoff until the deadline, or until the tier's breaker opens again (a tier that is down: it is
   * then reported in `unreachable` at once, not waited on). The report's stats cover uploads
   * completed since `since` (ms) when given, else all. `resetBreakers: false` trusts what this
   * process learned meanwhile instead (a tier whose breaker is open now is reported unreachable
   * without another attempt): for the wait at the end of a build that just found the tier down.
   */
  async drain(options: { timeoutMs?: number; since?: number; resetBreakers?: boolean } = {}): Promise<DrainReport> {
    const deadline = options.timeoutMs === undefined ? Infinity : Date.now() + options.timeoutMs;
    // An explicit drain is worth one real attempt even while a breaker is open.
    if (options.resetBreakers ?? true) for (const tier of this.writable()) tier.breaker.reset();
    const unreachable: Record<string, string> = {};
    await Promise.all(
      this.writable().map(async (tier) => {
        const verdict = await this.pump(tier, deadline);
        if (verdict) unreachable[tier.name] = verdict;
      }),
    );
    const pending: Record<string, number> = {};
    const failed: Record<string, number> = {};
    let drained = true;
    for (const tier of this.writable()) {
      const c = await this.journal.counts(tier.name);
      pending[tier.name] = c.pending;
      failed[tier.name] = c.failed;
      if (c.pending > 0) drained = false;
    }
    return { drained, pending, failed, unreachable, stats: options.since === undefined ? { ...this.stats } : this.statsSince(options.since) };
  }

  /** Totals of the uploads completed at or after `since` (ms since the epoch; last 10,000 uploads). */
  statsSince(since: number): UploadStats {
    const out = emptyStats();
    for (const u of this.recent) if (u.at >= since) add(out, u.stats);
    return out;
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
    if (!this.remembered.has(tier.name)) {
      await this.journal.remember(tier.name, tier.url);
      this.remembered.add(tier.name);
    }
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

  /**
   * Uploads a tier's pending records until none is left, the deadline passes, or the tier's breaker
   * opens (returns the failure that opened it; null otherwise).
   */
  private async pump(tier: RemoteTier, deadline: number): Promise<string | null> {
    const verdict = (): string => tier.breaker.lastFailure ?? `${tier.name} is unreachable`;
    while (Date.now() < deadline) {
      const items = await this.journal.pending(tier.name);
      if (items.length === 0) return null;
      // Uploads in flight to a tier that is down would only hold the wait until they time out.
      if (tier.breaker.isOpen) return verdict();
      const todo = items.filter((it) => !this.inflight.has(`${tier.name}/${it.id}`));
      if (todo.length === 0) {
        await Promise.race([...this.inflight.values()].map((p) => p.catch(() => undefined)));
        continue;
      }
      const ok = await this.pass(tier, todo);
      if (!ok && tier.breaker.isOpen) return verdict();
      if (!ok) await this.sleep(Math.min(this.nextBackoff(tier), Math.max(0, deadline - Date.now())));
    }
    return null;
  }

  /**
   * One pass over `items`, in batches of up to 64 records: each batch's new blobs share packs, so a
   * run of many small outputs costs a few pack PUTs, not one per output. False when a retryable
   * failure calls for a backoff.
   */
  private async pass(tier: RemoteTier, items: JournalItem[]): Promise<boolean> {
    const batches: JournalItem[][] = [];
    for (let i = 0; i < items.length; i += 64) batches.push(items.slice(i, i + 64));
    const results = await Promise.allSettled(batches.map((b) => this.runBatch(tier, b)));
    return results.every((r) => r.status === 'fulfilled');
  }

  /** Uploads a batch under the tier's limiter; each record is removed on success or permanent failure. */
  private runBatch(tier: RemoteTier, items: JournalItem[]): Promise<void> {
    const fresh = items.filter((it) => !this.inflight.has(`${tier.name}/${it.id}`));
    const p = this.limiter
      .get(tier.name)!
      .run(() => this.pushBatch(tier, fresh))
      .finally(() => {
        for (const it of fresh) this.inflight.delete(`${tier.name}/${it.id}`);
      });
    for (const it of fresh) this.inflight.set(`${tier.name}/${it.id}`, p);
    const others = items.filter((it) => !fresh.includes(it)).map((it) => this.inflight.get(`${tier.name}/${it.id}`));
    return Promise.all([p, ...others]).then(() => undefined);
  }

  /**
   * Uploads a batch. A tree the tier already has (its tree object exists, so its chunks do) costs
   * nothing; for the others, the chunks the tier lacks (one `has`, shared packs), then each tree
   * object; then every record's entry or root. A retryable failure leaves the records that did not
   * complete in the journal and rejects; a permanent one sets the record aside.
   */
  private async pushBatch(tier: RemoteTier, given: JournalItem[]): Promise<void> {
    // The worker and a flush each list the journal, then upload what is not in flight: a list read
    // just before another pass finished a record would upload it again (and count it twice).
    const items = (await Promise.all(given.map(async (it) => ((await this.journal.isPending(tier.name, it.id)) ? it : null)))).filter((it): it is JournalItem => it !== null);
    const stats = emptyStats();
    const finish = async (item: JournalItem) => {
      await this.journal.done(tier.name, item.id);
      stats.records++;
    };
    const setAside = async (item: JournalItem, err: unknown) => {
      const reason = err instanceof Error ? err.message : String(err);
      await this.journal.fail(tier.name, item.id, reason).catch(() => undefined);
      this.warn(tier.name, isCascacheError(err) ? err.code : 'E_INTERNAL', `upload of ${describeRecord(item.record)} failed permanently and was set aside: ${reason}`, true);
    };
    // What each record needs: its tree, read from the local tier.
    const work: Array<{ item: JournalItem; manifest: Digest; manifestBytes: Buffer; chunks: Digest[]; send: () => Promise<number> }> = [];
    const runs: Array<{ item: JournalItem; run: SharedRun }> = [];
    for (const item of items) {
      const r = item.record;
      try {
        if (r.kind === 'run') {
          runs.push({ item, run: r.run });
        } else if (r.kind === 'ac') {
          const entry = await this.local.actionCache.peek(r.namespace, r.key);
          const bytes = entry ? await this.local.entries.get(r.namespace, r.key) : null;
          if (!entry || !bytes) {
            await finish(item); // invalidated or evicted locally since: nothing to send
            continue;
          }
          const tree = await this.localTree(entry.manifest);
          work.push({
            item,
            ...tree,
            send: async () => {
              const put = await tier.entries.putIfAbsent(r.namespace, r.key, bytes);
              if (tier.entries.conditionalWrites === false && !this.toldUnconditional.has(tier.name)) {
                this.toldUnconditional.add(tier.name);
                this.warn(tier.name, 'E_CONFIG', 'this tier ignores conditional writes (S3 If-None-Match): two machines storing one task at the same moment can each keep their own output; every entry is read back after it is written to narrow that (AWS S3, GCS, MinIO and R2 honour the condition)', true);
              }
              if (put.created || put.existing.equals(bytes)) return put.created ? bytes.length : 0;
              // Write-once, unless what the tier holds can never be served (tampered, foreign
              // secret, a tree the tier lacks or holds damaged): then ours replaces it.
              const theirs = this.cacheOf(tier).check(r.namespace, r.key, put.existing);
              if (typeof theirs !== 'string' && (await this.yieldTo(tier, r.namespace, r.key, theirs, put.existing))) return 0;
              await tier.entries.replace(r.namespace, r.key, bytes);
              return bytes.length;
            },
          });
        } else {
          const root = await this.local.roots.get(r.digest);
          if (!root) {
            await finish(item);
            continue;
          }
          const tree = await this.localTree(root.digest);
          work.push({ item, ...tree, send: () => tier.entries.putRoot(root) });
        }
      } catch (err) {
        if (retryable(err)) throw err;
        await setAside(item, err);
      }
    }
    let failure: unknown = null;
    if (work.length > 0) {
      const newTrees = new Map<Digest, { manifestBytes: Buffer; chunks: Digest[] }>();
      try {
        for (const w of work) {
          if (newTrees.has(w.manifest) || (await tier.blobs.hasTree(w.manifest))) continue;
          newTrees.set(w.manifest, w);
        }
        // Chunks of new trees only: each manifest travels inside its tree object.
        const all = [...new Set([...newTrees.values()].flatMap((t) => t.chunks))];
        const present = await tier.blobs.has(all);
        const missing = all.filter((d) => !present.has(d));
        // Dedup saved = what the batch's outputs hold (distinct chunks per output) minus what is sent,
        // which does not depend on how records fall into batches: a chunk two outputs share counts
        // as saved once whether they travel together or apart (it used to count only apart).
        const rawOf = (d: Digest): number => this.local.blobs.header(d)?.rawLength ?? 0;
        for (const w of work) {
          stats.blobsDeduplicated += w.chunks.length;
          for (const d of w.chunks) stats.bytesDeduplicated += rawOf(d);
        }
        stats.blobsDeduplicated -= missing.length;
        for (const d of missing) stats.bytesDeduplicated -= rawOf(d);
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
        for (const [manifest, t] of newTrees) stats.bytesSent += await tier.blobs.writeTree(manifest, t.manifestBytes);
      } catch (err) {
        if (retryable(err)) failure = err;
        else for (const w of work) await setAside(w.item, err);
        work.length = 0;
      }
      // Entries and roots last, each after the tree it names is in the tier.
      for (const w of work) {
        try {
          stats.bytesSent += await w.send();
          await finish(w.item);
        } catch (err) {
          if (retryable(err)) failure ??= err;
          else await setAside(w.item, err);
        }
      }
    }
    // Run records last: they name entries, which are in the tier by now (or will be, journaled).
    for (const { item, run } of runs) {
      try {
        if (tier.entries.putRun && this.trust.scheme !== 'none') stats.bytesSent += await tier.entries.putRun(runObjectKey(run), encodeSharedRun(run, this.trust));
        await finish(item);
      } catch (err) {
        if (retryable(err)) failure ??= err;
        else await setAside(item, err);
      }
    }
    if (stats.records > 0 || stats.bytesSent > 0) {
      add(this.stats, stats);
      this.recent.push({ at: Date.now(), stats });
      if (this.recent.length > 10_000) this.recent.splice(0, this.recent.length - 10_000);
      this.opts.onEvent?.({ type: 'uploaded', tier: tier.name, records: stats.records, stats });
    }
    if (failure) {
      this.warnError(tier.name, failure);
      throw failure;
    }
  }

  /** A tree's manifest digest and unique chunks, from the local tier. */
  private async localTree(manifestDigest: Digest): Promise<{ manifest: Digest; manifestBytes: Buffer; chunks: Digest[] }> {
    const manifestBytes = await fetchBlob(this.local.blobs, manifestDigest);
    const manifest = manifestBytes && parseManifest(manifestBytes);
    if (!manifest || !manifestBytes) throw new CascacheError(ErrorCodes.NOT_FOUND, `manifest ${manifestDigest} is gone from the local tier`, { retryable: false });
    const chunks = [...new Set(manifestChunks(manifest))].filter((d) => d !== manifestDigest);
    const held = await this.local.blobs.has(chunks);
    if (held.size < chunks.length) throw new CascacheError(ErrorCodes.NOT_FOUND, `${chunks.length - held.size} chunk(s) of ${manifestDigest} are gone from the local tier`, { retryable: false });
    return { manifest: manifestDigest, manifestBytes, chunks };
  }

  /**
   * `call`, or an `E_UNAVAILABLE` after `lookupTimeoutMs` that the tier's breaker counts as a
   * failure (the call itself goes on and is ignored).
   */
  private withDeadline<T>(tier: RemoteTier, call: Promise<T>, what: string): Promise<T> {
    const ms = this.opts.lookupTimeoutMs ?? 5000;
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const err = new CascacheError(ErrorCodes.UNAVAILABLE, `${tier.name}: no answer within ${ms} ms ${what}`, { retryable: true, details: { timeout: true } });
        tier.breaker.failed?.(err);
        reject(err);
      }, ms);
      timer.unref();
    });
    call.catch(() => undefined);
    return Promise.race([call, late]).finally(() => clearTimeout(timer));
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
  if (r.kind === 'run') return `run record of ${r.run.tool} on ${r.run.branch ?? 'no branch'}`;
  return r.kind === 'ac' ? `action-cache entry ${r.namespace}/${r.key}` : `store root ${r.digest}`;
}

/**
 * Whether an upload failure may pass: a CascacheError says so itself; anything else is an error no
 * store classified (a bug, an unexpected SDK shape), and is retried rather than risk losing the upload.
 */
function retryable(err: unknown): boolean {
  return isCascacheError(err) ? err.retryable : true;
}
