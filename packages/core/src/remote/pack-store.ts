/**
 * A {@link BlobStore} over an object store that keeps blobs in packs (restic's repository layout,
 * adapted): object stores are slow and billed per request, so new blobs go out many to an object.
 *
 * ```
 * <prefix>/v1/packs/<pack digest>.pack    concatenated blob frames (codec.ts), ~16 MiB
 * <prefix>/v1/index/<pack digest>.json    zstd blob frame of {"blobs":[[digest,offset,length],..],"format":"cascache.pack-index/v1","pack":..}
 * <prefix>/v1/trees/<manifest digest>     zstd blob frame of {"chunks":[[pack#,offset,length],..],"format":"cascache.tree/v1","manifest":"<manifest JSON>","packs":[..]}
 * ```
 * A pack's name is the BLAKE3 digest of its bytes, so writing the same pack twice is harmless and a
 * damaged pack can be healed by rewriting it. The pack object is written before its index, and both
 * before the tree object that locates them, and that before any AC entry or root naming the tree: a
 * reader never finds a reference to something that is not there yet.
 *
 * Finding blobs: a writer learns what the remote holds by listing `v1/index/` once and fetching
 * the indexes it has not seen (new ones only, on later refreshes). A reader restoring one tree does
 * not list: the tree object (one GET, `loadTree`) holds the manifest and, for each of its unique chunks
 * in manifest order, the pack and byte range; `fetchMany` reads them with ranged GETs, coalescing neighbours in a pack into one request.
 *
 * Every blob read is verified against its digest; a damaged one is `E_INTEGRITY` once, then a miss
 * (its location is forgotten), so a layered store refetches it from another tier.
 */
import { Readable } from 'node:stream';
import { canonicalJson } from '../canonical-json';
import { decodeBlob, encodeBlob, MAX_BLOB_BYTES } from '../codec';
import { assertContentDigest, assertDigest, digestOf, isDigest, type Digest } from '../digest';
import { manifestChunks, parseManifest, type Manifest } from '../manifest';
import { CascacheError, ErrorCodes, isCascacheError } from '../errors';
import { Limiter } from '../limiter';
import { readAll } from '../streams';
import type { BlobInfo, BlobStore, PutOptions, PutResult } from '../store/types';
import type { ObjectStore } from './object-store';
import type { FetchedBlob } from './tier';

/** Format tag of pack index objects. */
export const PACK_INDEX_FORMAT = 'cascache.pack-index/v1';
/** Format tag of tree objects. */
export const TREE_FORMAT = 'cascache.tree/v1';
/** Default pack size target, bytes. */
export const DEFAULT_PACK_TARGET_BYTES = 16 * 1024 * 1024;
/** Largest pack index accepted, bytes. */
const MAX_META_BYTES = 64 * 1024 * 1024;

/** Where one blob lives: `length` bytes of pack `pack` from `offset`. */
export interface BlobLocation {
  pack: Digest;
  offset: number;
  length: number;
}

/** Options for {@link PackStore}. */
export interface PackStoreOptions {
  objects: ObjectStore;
  /** zstd level for blobs this store encodes. Default 3. */
  level?: number;
  /** Close a pack once it reaches this many bytes. Default 16 MiB. */
  packTargetBytes?: number;
  /** Merge ranged reads in one pack when the gap between them is at most this many bytes. Default 256 KiB. */
  coalesceGapBytes?: number;
  /** Largest single ranged read, bytes. Default 16 MiB. */
  maxRangeBytes?: number;
  /** Ranged reads and writes in flight. Default 4. */
  concurrency?: number;
  /** Minimum ms between two listings of the index prefix on misses. Default 0 (list on every miss). */
  refreshIntervalMs?: number;
  /** Called when a stored blob is found damaged (it is then forgotten). */
  onCorrupt?: (digest: Digest, location: BlobLocation, error: CascacheError) => void;
}

/** What {@link PackStore.putMany} sent. */
export interface PackUploadResult {
  /** Packs written. */
  packs: number;
  /** Blobs written (the rest were already present). */
  blobs: number;
  /** Bytes sent: packs plus their indexes. */
  bytes: number;
}

const packKey = (pack: Digest) => `v1/packs/${pack}.pack`;
const indexKey = (pack: Digest) => `v1/index/${pack}.json`;
const treeKey = (manifest: Digest) => `v1/trees/${manifest}`;
const condemnedKey = (pack: Digest) => `v1/condemned/${pack}`;
const INDEX_PREFIX = 'v1/index/';

export class PackStore implements BlobStore {
  readonly name: string;
  readonly objects: ObjectStore;
  private readonly level: number;
  private readonly packTarget: number;
  private readonly gap: number;
  private readonly maxRange: number;
  private readonly limiter: Limiter;
  private readonly refreshInterval: number;
  private readonly onCorrupt: PackStoreOptions['onCorrupt'];
  private readonly locations = new Map<Digest, BlobLocation>();
  /** Manifests that arrived inside tree objects, verified (the latest 1024). */
  private readonly inline = new Map<Digest, Buffer>();
  /** Trees known to exist in this store (written or read by this process). */
  private readonly knownTrees = new Set<Digest>();
  /** Trees found incomplete when read (a listed chunk was damaged): not trusted until rewritten. */
  private readonly distrusted = new Set<Digest>();
  /** The packs each loaded tree's chunks were in when it was read or written. */
  private readonly treePacks = new Map<Digest, Set<Digest>>();
  /** Packs GC has condemned (pack -> when, ms): still readable, never counted as holding a blob. */
  private readonly condemned = new Map<Digest, number>();
  private readonly loadedIndexes = new Set<Digest>();
  private readonly packTimes = new Map<Digest, number>();
  /** `pack:offset` of frames found damaged; never trusted again until the pack is rewritten. */
  private readonly damaged = new Set<string>();
  private lastRefresh = -Infinity;
  private refreshing: Promise<void> | null = null;

  constructor(options: PackStoreOptions) {
    this.objects = options.objects;
    this.name = options.objects.name;
    this.level = options.level ?? 3;
    this.packTarget = options.packTargetBytes ?? DEFAULT_PACK_TARGET_BYTES;
    this.gap = options.coalesceGapBytes ?? 256 * 1024;
    this.maxRange = options.maxRangeBytes ?? 16 * 1024 * 1024;
    this.limiter = new Limiter(options.concurrency ?? 4);
    this.refreshInterval = options.refreshIntervalMs ?? 0;
    this.onCorrupt = options.onCorrupt;
  }

  /** The location of a blob this store knows of, without any request. */
  locate(digest: Digest): BlobLocation | undefined {
    return this.locations.get(digest);
  }

  async has(digests: Iterable<Digest>): Promise<Set<Digest>> {
    const wanted = [...digests];
    if (wanted.some((d) => !this.locations.has(d) && !this.inline.has(d))) await this.refresh(false);
    const found = new Set<Digest>();
    for (const d of wanted) {
      const loc = this.locations.get(d);
      if ((loc && !this.condemned.has(loc.pack)) || this.inline.has(d)) found.add(d);
    }
    return found;
  }

  async get(digest: Digest): Promise<Readable | null> {
    const bytes = await this.getBuffer(digest);
    return bytes === null ? null : Readable.from([bytes]);
  }

  /** A blob's raw bytes, verified, or null. @throws `E_INTEGRITY` once for a damaged blob. */
  async getBuffer(digest: Digest): Promise<Buffer | null> {
    assertDigest(digest);
    const held = this.inline.get(digest);
    if (held) return held;
    if (!this.locations.has(digest)) await this.refresh(false);
    const loc = this.locations.get(digest);
    if (!loc) return null;
    let frame: Buffer | null;
    try {
      frame = await this.limiter.run(() => this.objects.get(packKey(loc.pack), { offset: loc.offset, length: loc.length }));
    } catch (err) {
      if (isCascacheError(err, ErrorCodes.INTEGRITY)) this.markDamaged(digest, loc, err);
      throw err;
    }
    if (frame === null) {
      this.forgetPack(loc.pack);
      return null;
    }
    return this.decode(digest, loc, frame);
  }

  /**
   * Reads many blobs with as few requests as possible: blobs are grouped by pack, sorted by offset,
   * and neighbours closer than `coalesceGapBytes` are read in one ranged GET (up to `maxRangeBytes`).
   * Yields each blob found, verified; absent ones are skipped and damaged ones reported through
   * `onCorrupt` and skipped, so the caller compares what arrived with what it asked for.
   */
  async *fetchMany(digests: Iterable<Digest>): AsyncGenerator<FetchedBlob> {
    const wanted: Digest[] = [];
    for (const d of new Set(digests)) {
      const held = this.inline.get(d);
      if (held) yield { digest: d, bytes: held };
      else wanted.push(d);
    }
    if (wanted.some((d) => !this.locations.has(d))) await this.refresh(false);
    const byPack = new Map<Digest, Array<{ digest: Digest; loc: BlobLocation }>>();
    for (const digest of wanted) {
      const loc = this.locations.get(digest);
      if (!loc) continue;
      let list = byPack.get(loc.pack);
      if (!list) byPack.set(loc.pack, (list = []));
      list.push({ digest, loc });
    }
    const reads: Array<{ pack: Digest; offset: number; length: number; members: Array<{ digest: Digest; loc: BlobLocation }> }> = [];
    for (const [pack, members] of byPack) {
      members.sort((a, b) => a.loc.offset - b.loc.offset);
      let cur: (typeof reads)[number] | null = null;
      for (const m of members) {
        const end = m.loc.offset + m.loc.length;
        if (cur && m.loc.offset - (cur.offset + cur.length) <= this.gap && end - cur.offset <= this.maxRange) {
          cur.length = Math.max(cur.length, end - cur.offset);
          cur.members.push(m);
        } else {
          cur = { pack, offset: m.loc.offset, length: m.loc.length, members: [m] };
          reads.push(cur);
        }
      }
    }
    // Keep up to `concurrency` ranged reads in flight; yield in request order.
    const pending = reads.map((r) => ({ r, p: null as Promise<Buffer | null> | null }));
    const start = (i: number) => {
      const slot = pending[i];
      if (slot && !slot.p) {
        slot.p = this.limiter.run(() => this.objects.get(packKey(slot.r.pack), { offset: slot.r.offset, length: slot.r.length }));
        slot.p.catch(() => undefined);
      }
    };
    try {
      for (let i = 0; i < pending.length; i++) {
        for (let j = i; j < Math.min(pending.length, i + this.limiter.limit); j++) start(j);
        const { r, p } = pending[i]!;
        let buf: Buffer | null;
        try {
          buf = await p!;
        } catch (err) {
          if (!isCascacheError(err, ErrorCodes.INTEGRITY)) throw err;
          for (const m of r.members) this.markDamaged(m.digest, m.loc, err);
          continue;
        }
        if (buf === null) {
          this.forgetPack(r.pack);
          continue;
        }
        for (const m of r.members) {
          const rel = m.loc.offset - r.offset;
          const frame = buf.subarray(rel, rel + m.loc.length);
          let bytes: Buffer;
          try {
            bytes = this.decode(m.digest, m.loc, frame);
          } catch (err) {
            if (isCascacheError(err, ErrorCodes.INTEGRITY)) continue;
            throw err;
          }
          yield { digest: m.digest, bytes, frame };
        }
      }
    } finally {
      await Promise.allSettled(pending.map((s) => s.p).filter(Boolean));
    }
  }

  async put(digest: Digest, body: Uint8Array | AsyncIterable<Uint8Array>, options: PutOptions = {}): Promise<PutResult> {
    assertDigest(digest);
    const raw = await readAll(body, MAX_BLOB_BYTES);
    assertContentDigest(digest, raw);
    if ((await this.has([digest])).size > 0) return { created: false, storedBytes: 0 };
    const frame = encodeBlob(raw, { level: this.level, compressible: options.compressible });
    await this.writePack([{ digest, frame }]);
    return { created: true, storedBytes: frame.length };
  }

  /**
   * Uploads many blobs as packs of about `packTargetBytes`, skipping those already present. Each
   * blob is hashed and checked against its digest before it is packed.
   * @throws `E_INTEGRITY` when a blob's bytes do not match its digest (nothing of that pack is written).
   */
  async putMany(blobs: AsyncIterable<{ digest: Digest; bytes: Uint8Array; compressible?: boolean }> | Iterable<{ digest: Digest; bytes: Uint8Array; compressible?: boolean }>): Promise<PackUploadResult> {
    const result: PackUploadResult = { packs: 0, blobs: 0, bytes: 0 };
    let batch: Array<{ digest: Digest; frame: Buffer }> = [];
    let batchBytes = 0;
    const inBatch = new Set<Digest>();
    const flush = async () => {
      if (batch.length === 0) return;
      const sent = await this.writePack(batch);
      result.packs++;
      result.blobs += batch.length;
      result.bytes += sent;
      batch = [];
      batchBytes = 0;
      inBatch.clear();
    };
    for await (const b of blobs) {
      assertDigest(b.digest);
      const at = this.locations.get(b.digest);
      if ((at && !this.condemned.has(at.pack)) || inBatch.has(b.digest)) continue;
      assertContentDigest(b.digest, b.bytes);
      const frame = encodeBlob(b.bytes, { level: this.level, compressible: b.compressible });
      batch.push({ digest: b.digest, frame });
      inBatch.add(b.digest);
      batchBytes += frame.length;
      if (batchBytes >= this.packTarget) await flush();
    }
    await flush();
    return result;
  }

  /**
   * Writes the tree object of a manifest whose chunks this store already holds: the manifest itself
   * and, for each unique chunk in manifest order (`manifestChunks`, first occurrences), its pack and
   * byte range. Written after the chunks and before any AC entry or root that names the tree.
   * @returns bytes sent.
   * @throws `E_NOT_FOUND` naming the first chunk this store does not hold; `E_INTEGRITY` when
   * `manifestBytes` do not hash to `manifest`.
   */
  async writeTree(manifest: Digest, manifestBytes: Buffer): Promise<number> {
    assertContentDigest(manifest, manifestBytes);
    const chunks = uniqueChunks(parseManifest(manifestBytes));
    if (chunks.some((d) => !this.locations.has(d))) await this.refresh(true);
    const packs: Digest[] = [];
    const packIndex = new Map<Digest, number>();
    const rows: Array<[number, number, number]> = [];
    for (const d of chunks) {
      const loc = this.locations.get(d);
      if (!loc) throw new CascacheError(ErrorCodes.NOT_FOUND, `${this.name} holds no chunk ${d}; cannot write the tree of ${manifest}`, { details: { digest: d } });
      let pi = packIndex.get(loc.pack);
      if (pi === undefined) {
        pi = packs.length;
        packs.push(loc.pack);
        packIndex.set(loc.pack, pi);
      }
      rows.push([pi, loc.offset, loc.length]);
    }
    const body = encodeBlob(Buffer.from(canonicalJson({ format: TREE_FORMAT, manifest: manifestBytes.toString('utf8'), packs, chunks: rows })), { level: 19 });
    await this.limiter.run(() => this.objects.put(treeKey(manifest), body));
    this.distrusted.delete(manifest);
    this.knownTrees.add(manifest);
    this.treePacks.set(manifest, new Set(packs));
    this.keepInline(manifest, manifestBytes);
    return body.length;
  }

  /**
   * Loads a tree object (one GET): its manifest becomes readable through this store and its chunks'
   * locations are learned, so the reads that follow need no listing. A missing or malformed tree,
   * or one whose manifest does not hash to `manifest`, is `false`, never an error. Locations are
   * hints: every chunk read through them is verified against its digest.
   */
  async loadTree(manifest: Digest): Promise<boolean> {
    assertDigest(manifest);
    if (this.inline.has(manifest)) return true;
    const body = await this.limiter.run(() => this.objects.get(treeKey(manifest)));
    if (body === null) return false;
    let doc: { format?: unknown; manifest?: unknown; packs?: unknown; chunks?: unknown };
    let manifestBytes: Buffer;
    let chunks: Digest[];
    try {
      doc = JSON.parse(decodeBlob(body).toString('utf8'));
      if (doc?.format !== TREE_FORMAT || typeof doc.manifest !== 'string' || !Array.isArray(doc.packs) || !Array.isArray(doc.chunks)) return false;
      manifestBytes = Buffer.from(doc.manifest, 'utf8');
      if (digestOf(manifestBytes) !== manifest) return false;
      chunks = uniqueChunks(parseManifest(manifestBytes));
    } catch {
      return false;
    }
    const packs = doc.packs as unknown[];
    const rows = doc.chunks as unknown[];
    if (!packs.every(isDigest) || rows.length !== chunks.length) return false;
    if (!rows.every((r) => Array.isArray(r) && r.length === 3 && isIndex(r[0], packs.length) && isOffset(r[1]) && isLength(r[2]))) return false;
    chunks.forEach((d, i) => {
      const [pi, offset, length] = rows[i] as [number, number, number];
      this.learn(d, { pack: packs[pi] as Digest, offset, length });
    });
    this.knownTrees.add(manifest);
    this.treePacks.set(manifest, new Set(packs as Digest[]));
    this.keepInline(manifest, manifestBytes);
    return true;
  }

  /** The chunks of a loaded tree, in row order, and the packs its object names; null when not loaded. */
  treeInfo(manifest: Digest): { chunks: Digest[]; packs: Set<Digest>; manifestBytes: Buffer } | null {
    const bytes = this.inline.get(manifest);
    const packs = this.treePacks.get(manifest);
    return bytes && packs ? { chunks: uniqueChunks(parseManifest(bytes)), packs, manifestBytes: bytes } : null;
  }

  /** Packs condemned by GC, with when (ms). */
  condemnedPacks(): ReadonlyMap<Digest, number> {
    return this.condemned;
  }

  /**
   * Condemns a pack (GC's first phase): writers stop counting its blobs as present from their next
   * refresh, readers still read it. It is deleted by a later GC pass, after the grace period, if it
   * is still dead then.
   */
  async condemn(pack: Digest, atMs = Date.now()): Promise<void> {
    await this.limiter.run(() => this.objects.put(condemnedKey(pack), Buffer.from(JSON.stringify({ at: atMs }))));
    this.condemned.set(pack, atMs);
  }

  /** Withdraws a condemnation (the pack turned out to be live). */
  async revive(pack: Digest): Promise<void> {
    await this.limiter.run(() => this.objects.delete(condemnedKey(pack)));
    this.condemned.delete(pack);
  }

  /** Deletes a pack: its index first (writers stop seeing it), then the pack, then the mark. */
  async deletePack(pack: Digest): Promise<void> {
    await this.limiter.run(() => this.objects.delete(indexKey(pack)));
    await this.limiter.run(() => this.objects.delete(packKey(pack)));
    await this.limiter.run(() => this.objects.delete(condemnedKey(pack)));
    this.forgetPack(pack);
    this.condemned.delete(pack);
  }

  /** See {@link TierBlobStore.distrustTree}: damaged frames are already forgotten as they are found. */
  distrustTree(manifest: Digest): void {
    this.distrusted.add(manifest);
    this.knownTrees.delete(manifest);
  }

  /** Deletes a tree object. */
  async deleteTree(manifest: Digest): Promise<void> {
    await this.limiter.run(() => this.objects.delete(treeKey(manifest)));
    this.knownTrees.delete(manifest);
    this.treePacks.delete(manifest);
    this.inline.delete(manifest);
  }

  /**
   * Copies the blobs of `pack` that are in `keep` into a new pack (GC's repack), verifying each,
   * and points them there. The old pack is left for the caller to condemn.
   * @returns bytes written.
   */
  async copyOut(pack: Digest, keep: ReadonlySet<Digest>): Promise<number> {
    const frames: Array<{ digest: Digest; frame: Buffer }> = [];
    for (const [digest, loc] of [...this.locations]) {
      if (loc.pack !== pack || !keep.has(digest)) continue;
      const frame = await this.limiter.run(() => this.objects.get(packKey(pack), { offset: loc.offset, length: loc.length }));
      if (!frame) continue;
      try {
        decodeBlob(frame, digest);
      } catch {
        continue; // a damaged survivor is not copied
      }
      frames.push({ digest, frame });
    }
    return frames.length > 0 ? this.writePack(frames) : 0;
  }

  /** True when the tier holds the tree object of `manifest` (one small GET unless already known). */
  async hasTree(manifest: Digest): Promise<boolean> {
    if (this.distrusted.has(manifest)) return false;
    if (this.knownTrees.has(manifest)) return true;
    return this.loadTree(manifest);
  }

  private keepInline(manifest: Digest, bytes: Buffer): void {
    this.inline.set(manifest, bytes);
    if (this.inline.size > 1024) this.inline.delete(this.inline.keys().next().value!);
  }

  async delete(digest: Digest): Promise<boolean> {
    assertDigest(digest);
    await this.refresh(true);
    const loc = this.locations.get(digest);
    if (!loc) return false;
    // Survivors go to a new pack before the old one is deleted: a concurrent reader loses nothing else.
    const survivors = new Set([...this.locations].filter(([d, l]) => l.pack === loc.pack && d !== digest).map(([d]) => d));
    await this.copyOut(loc.pack, survivors);
    await this.deletePack(loc.pack);
    return true;
  }

  async *list(): AsyncIterable<BlobInfo> {
    await this.refresh(true);
    for (const [digest, loc] of [...this.locations]) yield { digest, storedSize: loc.length, mtimeMs: this.packTimes.get(loc.pack) };
  }

  /** Every pack this store knows of, with its blobs (for GC's pack planning). */
  async packs(): Promise<Map<Digest, { blobs: Array<{ digest: Digest; length: number }>; mtimeMs?: number }>> {
    await this.refresh(true);
    const out = new Map<Digest, { blobs: Array<{ digest: Digest; length: number }>; mtimeMs?: number }>();
    for (const [digest, loc] of this.locations) {
      let p = out.get(loc.pack);
      if (!p) out.set(loc.pack, (p = { blobs: [], mtimeMs: this.packTimes.get(loc.pack) }));
      p.blobs.push({ digest, length: loc.length });
    }
    return out;
  }

  /**
   * Lists the index prefix and loads every index not seen yet. `force` ignores `refreshIntervalMs`.
   * Concurrent callers share one refresh.
   */
  async refresh(force: boolean): Promise<void> {
    if (this.refreshing) return this.refreshing;
    if (!force && Date.now() - this.lastRefresh < this.refreshInterval) return;
    this.refreshing = (async () => {
      for await (const o of this.objects.list('v1/condemned/')) {
        const m = /^v1\/condemned\/([0-9a-f]{64})$/.exec(o.key);
        if (!m || this.condemned.has(m[1]!)) continue;
        const body = await this.objects.get(o.key);
        let at = o.mtimeMs ?? Date.now();
        try {
          const v = (JSON.parse(body?.toString('utf8') ?? '') as { at?: unknown }).at;
          if (Number.isSafeInteger(v)) at = v as number;
        } catch {
          /* a mark without a readable time counts from when it was written */
        }
        this.condemned.set(m[1]!, at);
      }
      const listed: Array<{ pack: Digest; mtimeMs?: number }> = [];
      for await (const o of this.objects.list(INDEX_PREFIX)) {
        const m = /^v1\/index\/([0-9a-f]{64})\.json$/.exec(o.key);
        if (m) listed.push({ pack: m[1]!, mtimeMs: o.mtimeMs });
      }
      const present = new Set(listed.map((l) => l.pack));
      for (const pack of [...this.loadedIndexes]) if (!present.has(pack)) this.forgetPack(pack);
      await Promise.all(
        listed
          .filter((l) => !this.loadedIndexes.has(l.pack))
          .map((l) =>
            this.limiter.run(async () => {
              const body = await this.objects.get(indexKey(l.pack));
              if (body === null) return;
              const rows = parseIndex(body, l.pack);
              if (!rows) return; // a malformed index is ignored; its pack is unreachable until GC
              for (const [d, offset, length] of rows) this.learn(d, { pack: l.pack, offset, length });
              this.loadedIndexes.add(l.pack);
              if (l.mtimeMs !== undefined) this.packTimes.set(l.pack, l.mtimeMs);
            }),
          ),
      );
      this.lastRefresh = Date.now();
    })().finally(() => {
      this.refreshing = null;
    });
    return this.refreshing;
  }

  private learn(digest: Digest, loc: BlobLocation): void {
    if (this.damaged.has(`${loc.pack}:${loc.offset}`)) return;
    const had = this.locations.get(digest);
    if (!had || (this.condemned.has(had.pack) && !this.condemned.has(loc.pack))) this.locations.set(digest, loc);
  }

  private forgetPack(pack: Digest): void {
    for (const [d, l] of [...this.locations]) if (l.pack === pack) this.locations.delete(d);
    this.loadedIndexes.delete(pack);
  }

  private decode(digest: Digest, loc: BlobLocation, frame: Buffer): Buffer {
    try {
      return decodeBlob(frame, digest);
    } catch (err) {
      if (isCascacheError(err, ErrorCodes.INTEGRITY)) this.markDamaged(digest, loc, err);
      throw err;
    }
  }

  private markDamaged(digest: Digest, loc: BlobLocation, err: CascacheError): void {
    this.damaged.add(`${loc.pack}:${loc.offset}`);
    if (this.locations.get(digest) === loc) this.locations.delete(digest);
    this.onCorrupt?.(digest, loc, err);
  }

  /** Writes one pack, then its index; records the locations. @returns bytes sent. */
  private async writePack(frames: Array<{ digest: Digest; frame: Buffer }>): Promise<number> {
    const rows: Array<[Digest, number, number]> = [];
    let offset = 0;
    for (const f of frames) {
      rows.push([f.digest, offset, f.frame.length]);
      offset += f.frame.length;
    }
    const body = Buffer.concat(frames.map((f) => f.frame), offset);
    const pack = digestOf(body);
    const index = encodeBlob(Buffer.from(canonicalJson({ format: PACK_INDEX_FORMAT, pack, blobs: rows })), { level: 19 });
    await this.limiter.run(() => this.objects.put(packKey(pack), body));
    await this.limiter.run(() => this.objects.put(indexKey(pack), index));
    for (const [d, off, len] of rows) {
      this.damaged.delete(`${pack}:${off}`);
      this.locations.set(d, { pack, offset: off, length: len });
    }
    this.loadedIndexes.add(pack);
    this.packTimes.set(pack, Date.now());
    return body.length + index.length;
  }
}

/** A manifest's chunks, each once, in first-occurrence order (the order of a tree's rows). */
function uniqueChunks(manifest: Manifest): Digest[] {
  return [...new Set(manifestChunks(manifest))];
}

function parseIndex(body: Buffer, pack: Digest): Array<[Digest, number, number]> | null {
  if (body.length > MAX_META_BYTES) return null;
  let doc: { format?: unknown; pack?: unknown; blobs?: unknown };
  try {
    doc = JSON.parse(decodeBlob(body).toString('utf8'));
  } catch {
    return null;
  }
  if (doc?.format !== PACK_INDEX_FORMAT || doc.pack !== pack || !Array.isArray(doc.blobs)) return null;
  for (const row of doc.blobs as unknown[]) {
    if (!Array.isArray(row) || row.length !== 3 || !isDigest(row[0]) || !isOffset(row[1]) || !isLength(row[2])) return null;
  }
  return doc.blobs as Array<[Digest, number, number]>;
}

const isOffset = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;
const isLength = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) > 0 && (v as number) <= MAX_BLOB_BYTES + 64;
const isIndex = (v: unknown, n: number): v is number => Number.isInteger(v) && (v as number) >= 0 && (v as number) < n;
