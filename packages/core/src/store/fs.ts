/**
 * Local filesystem BlobStore: loose files, one per blob, sharded by the first two hex digits, and
 * pack files holding the blobs of one batch (store/packs.ts).
 *
 * ```
 * <root>/v1/blobs/ab/abcdef...   framed blob (see codec.ts)
 * <root>/v1/packs/<digest>.pack  framed blobs of one batch, with their index (packs.ts)
 * <root>/v1/tmp/                 writes in progress (never read)
 * <root>/v1/quarantine/          blobs and packs found corrupt, kept for inspection, never served
 * ```
 *
 * `put` writes a loose file and is durable when it resolves. Inside `withBatch(fn)` puts append to
 * this process's open pack instead; the pack is sealed (durable, visible to other processes) when
 * the batch ends, and dropped if the batch fails while no other batch is open, so a rejected upload
 * leaves nothing behind. Callers write an action-cache entry only after the batch that stored its
 * blobs has ended (tree.ts and layered.ts do).
 *
 * Writes follow cacache `lib/content/write.js`: hash the bytes, compare with the claimed digest,
 * write the frame to a unique temp file, rename it into place, clean up in `finally`. A partial file
 * never appears under a final name, and two concurrent puts of one digest both succeed (the renames
 * carry identical bytes). No fsync: a blob damaged by a crash is caught by verification on read.
 *
 * Reads, existence checks and writes are synchronous: blobs are small and bounded, and on the machines measured
 * (bench/) an async readFile costs four thread-pool round trips, about 6x the synchronous call (65 us
 * vs 11 us per blob). Writes were asynchronous until 16 puts in flight turned out to contend for
 * the one tmp directory's lock on the thread pool: ingesting a 20 MB bundle (2,004 chunks) took
 * 0.67-0.90 s that way and 0.53-0.66 s synchronously. Long loops yield to the event loop regularly
 * so a server stays responsive.
 */
import { randomBytes } from 'node:crypto';
import { accessSync, closeSync, mkdirSync, openSync, promises as fsp, readFileSync, readSync, renameSync, rmSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { BLOB_HEADER_BYTES, decodeBlob, encodeBlob, MAX_BLOB_BYTES, readBlobHeader, type BlobHeader } from '../codec';
import { assertContentDigest, assertDigest, isDigest, type Digest } from '../digest';
import { CascacheError, ErrorCodes, isCascacheError, toIoError } from '../errors';
import { readAll } from '../streams';
import { PackSet, type PackLocation } from './packs';
import type { BatchingBlobStore, BlobInfo, BlobStore, PutOptions, PutResult, StoreObserver } from './types';

/** Format directory name under a store root. A format change is a new directory. */
export const LAYOUT_VERSION = 'v1';

/** Options for {@link FsBlobStore}. */
export interface FsBlobStoreOptions {
  /** Store root; blobs live under `<root>/v1/blobs`. */
  root: string;
  /** zstd level for new blobs (0 = raw). Default 3. */
  level?: number;
  /**
   * Called when a corrupt blob is quarantined, or a pack whose index cannot be read is moved aside
   * (then `digest` is the pack's name). The store itself never logs.
   */
  onCorrupt?: (event: { digest: Digest; quarantinedAs: string; error: CascacheError }) => void;
  /** Told about every blob written, deleted or quarantined (the store index). */
  observer?: StoreObserver;
}

export class FsBlobStore implements BatchingBlobStore {
  readonly name: string;
  readonly root: string;
  private readonly blobsDir: string;
  /** Loose-blob directories (`<ab>`) found absent, and until when that is trusted (ms since the epoch). */
  private readonly absentShards = new Map<string, number>();
  private readonly tmpDir: string;
  private readonly quarantineDir: string;
  private readonly level: number;
  private readonly onCorrupt?: FsBlobStoreOptions['onCorrupt'];
  private readonly observer?: StoreObserver;
  private readonly madeDirs = new Set<string>();
  private readonly packs: PackSet;
  private readonly batchView: BlobStore;
  private batches = 0;

  constructor(options: FsBlobStoreOptions) {
    this.root = options.root;
    this.name = `fs:${options.root}`;
    const base = join(options.root, LAYOUT_VERSION);
    this.blobsDir = join(base, 'blobs');
    this.tmpDir = join(base, 'tmp');
    this.quarantineDir = join(base, 'quarantine');
    this.level = options.level ?? 3;
    this.onCorrupt = options.onCorrupt;
    this.observer = options.observer;
    this.packs = new PackSet({
      dir: join(base, 'packs'),
      tmpDir: this.tmpDir,
      quarantineDir: this.quarantineDir,
      writeLoose: (digest, frame) => this.writeLoose(digest, frame),
      onSealed: (blobs, mtimeMs) => {
        for (const b of blobs) this.observer?.blobWritten({ digest: b.digest, storedSize: b.length, rawSize: b.rawSize, codec: b.codec, mtimeMs });
      },
      onBadPack: (name, movedTo, reason) =>
        this.onCorrupt?.({
          digest: name,
          quarantinedAs: movedTo ?? join(base, 'packs', `${name}.pack`),
          error: new CascacheError(ErrorCodes.INTEGRITY, `pack ${name} cannot be read (${reason}); its blobs are misses until stored again`),
        }),
    });
    this.batchView = new BatchView(this);
  }

  /** Path of a blob's loose file (whether or not it exists). */
  pathOf(digest: Digest): string {
    return join(this.blobsDir, digest.slice(0, 2), digest);
  }

  /**
   * The file holding a blob: its sealed pack, or its loose file; null when neither holds it (a blob
   * only in this process's open pack has no file yet).
   */
  fileOf(digest: Digest): string | null {
    return this.locationOf(digest)?.file ?? null;
  }

  /**
   * Where a blob's frame is on disk: the file, and the frame's offset and length in bytes in it (a
   * loose file holds one frame, at 0). Null as for {@link fileOf}. For inspection and tests.
   */
  locationOf(digest: Digest): { file: string; offset: number; length: number } | null {
    assertDigest(digest);
    const packed = this.packs.locate(digest);
    const packFile = packed && this.packs.pathOf(packed);
    if (packed && packFile) return { file: packFile, offset: packed.offset, length: packed.length };
    try {
      return { file: this.pathOf(digest), offset: 0, length: statSync(this.pathOf(digest)).size };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw toIoError(err, `checking blob ${digest}`);
    }
  }

  async has(digests: Iterable<Digest>): Promise<Set<Digest>> {
    const found = new Set<Digest>();
    const missing: Digest[] = [];
    let n = 0;
    // One stat: another process may have removed packs (GC) since this one last looked, and a
    // writer must not deduplicate against a blob that is gone.
    this.packs.refresh();
    for (const d of new Set(digests)) {
      if (!isDigest(d)) continue;
      if (this.packs.locate(d) || existsSyncChecked(this.pathOf(d))) found.add(d);
      else missing.push(d);
      if (++n % YIELD_EVERY === 0) await yieldToEventLoop();
    }
    // Another process may have sealed a pack since this one last looked.
    if (missing.length > 0 && this.packs.refresh()) for (const d of missing) if (this.packs.locate(d)) found.add(d);
    return found;
  }

  /**
   * Runs `fn` with a view of this store whose puts append to a pack (see the module comment), and
   * seals that pack when `fn` resolves. When `fn` rejects and no other batch is open, what it put is
   * dropped. @throws what `fn` throws; CascacheError `E_IO` when the pack cannot be sealed.
   */
  async withBatch<T>(fn: (store: BlobStore) => Promise<T>): Promise<T> {
    this.batches++;
    let ok = false;
    try {
      const out = await fn(this.batchView);
      ok = true;
      return out;
    } finally {
      this.batches--;
      if (ok || this.batches > 0) this.packs.seal();
      else this.packs.discard();
    }
  }

  /**
   * Stores a frame that the caller has already decoded and verified against `digest` (a remote
   * tier's `fetchMany` does), in the open batch's pack, without compressing again. Must be called
   * inside `withBatch`; a frame that is not a valid frame of those bytes is the caller's bug, and
   * is caught, as any damage is, when the blob is read.
   * @returns true when stored, false when already present.
   */
  adoptFrame(digest: Digest, frame: Buffer, rawSize: number): boolean {
    if (this.batches === 0) throw new CascacheError(ErrorCodes.BAD_INPUT, 'adoptFrame outside a batch');
    if (frame.length < BLOB_HEADER_BYTES || Number(frame.readBigUInt64BE(8)) !== rawSize) throw new CascacheError(ErrorCodes.INTEGRITY, `frame of ${digest} does not declare ${rawSize} bytes`);
    // The caller found it missing just before (a loose copy written since would only be a duplicate).
    if (this.packs.locate(digest)) return false;
    this.packs.append(digest, frame);
    return true;
  }

  /** A put inside a batch: appended to the open pack. */
  putPacked(digest: Digest, body: Uint8Array | AsyncIterable<Uint8Array>, options: PutOptions = {}): Promise<PutResult> {
    return this.store(digest, body, options, true);
  }

  async get(digest: Digest): Promise<Readable | null> {
    const raw = await this.getBuffer(digest);
    return raw === null ? null : Readable.from([raw]);
  }

  /**
   * Like `get`, as one verified Buffer (blobs are bounded by `MAX_BLOB_BYTES`).
   * @throws CascacheError `E_INTEGRITY` after quarantining a corrupt file.
   */
  async getBuffer(digest: Digest): Promise<Buffer | null> {
    assertDigest(digest);
    const packed = await this.getPacked(digest);
    if (packed !== undefined) return packed;
    const path = this.pathOf(digest);
    let frame: Buffer;
    try {
      frame = readFileSync(path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw toIoError(err, `reading blob ${digest}`);
      if (!this.packs.refresh()) return null;
      return (await this.getPacked(digest)) ?? null;
    }
    try {
      return decodeBlob(frame, digest);
    } catch (err) {
      if (isCascacheError(err, ErrorCodes.INTEGRITY)) await this.quarantine(digest, path, err);
      throw err;
    }
  }

  /** A packed blob, verified; undefined when no pack holds it. */
  private async getPacked(digest: Digest): Promise<Buffer | null | undefined> {
    let loc = this.packs.locate(digest);
    if (!loc) return undefined;
    let frame = this.packs.readFrame(loc);
    if (frame === null) {
      // Another process rewrote that pack (GC): look again.
      this.packs.refresh();
      loc = this.packs.locate(digest);
      frame = loc ? this.packs.readFrame(loc) : null;
      if (!loc || frame === null) return undefined;
    }
    try {
      return decodeBlob(frame, digest);
    } catch (err) {
      if (isCascacheError(err, ErrorCodes.INTEGRITY)) await this.quarantinePacked(digest, frame, err);
      throw err;
    }
  }

  /**
   * The frame header of a stored blob (codec, raw length) without reading the payload; null when
   * absent. @throws CascacheError `E_INTEGRITY` for a malformed header.
   */
  header(digest: Digest): BlobHeader | null {
    assertDigest(digest);
    const loc: PackLocation | undefined = this.packs.locate(digest);
    const packed = loc && this.packs.readHeader(loc);
    if (packed) return readBlobHeader(packed);
    let fd: number;
    try {
      fd = openSync(this.pathOf(digest), 'r');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw toIoError(err, `reading blob ${digest}`);
      return this.packs.refresh() && this.packs.locate(digest) ? this.header(digest) : null;
    }
    try {
      const buf = Buffer.alloc(BLOB_HEADER_BYTES);
      return readBlobHeader(buf.subarray(0, readSync(fd, buf, 0, BLOB_HEADER_BYTES, 0)));
    } finally {
      closeSync(fd);
    }
  }

  put(digest: Digest, body: Uint8Array | AsyncIterable<Uint8Array>, options: PutOptions = {}): Promise<PutResult> {
    return this.store(digest, body, options, false);
  }

  /** Hashes, checks and frames a blob, then appends it to the open pack or writes it loose. */
  private async store(digest: Digest, body: Uint8Array | AsyncIterable<Uint8Array>, options: PutOptions, packed: boolean): Promise<PutResult> {
    assertDigest(digest);
    // A loose put is durable when it resolves, so only durable copies count for it: this process's
    // open pack may still be dropped. A packed put shares the open pack's fate.
    const inPack = () => (packed ? this.packs.locate(digest) !== undefined : this.packs.hasSealed(digest));
    if (inPack() || (this.looseShardMayExist(digest) && existsSyncChecked(this.pathOf(digest)))) {
      if (body instanceof Readable) body.destroy();
      return { created: false, storedBytes: 0 };
    }
    const raw = await readAll(body, MAX_BLOB_BYTES);
    assertContentDigest(digest, raw);
    // A concurrent packed put of the same digest may have appended it while this one read its body.
    if (packed && inPack()) return { created: false, storedBytes: 0 };
    const frame = encodeBlob(raw, { level: this.level, compressible: options.compressible });
    if (packed) this.packs.append(digest, frame);
    else this.writeLoose(digest, frame);
    return { created: true, storedBytes: frame.length };
  }

  async delete(digest: Digest): Promise<boolean> {
    return (await this.deleteMany([digest])).size > 0;
  }

  /**
   * Removes blobs: loose files are unlinked, and each pack holding any of them is rewritten without
   * them (store/packs.ts). Returns the digests that were removed. @throws CascacheError `E_IO`.
   */
  async deleteMany(digests: Iterable<Digest>): Promise<Set<Digest>> {
    const wanted = new Set<Digest>();
    for (const d of digests) wanted.add(assertDigest(d));
    const removed = this.packs.remove(wanted);
    let n = 0;
    for (const d of wanted) {
      try {
        unlinkSync(this.pathOf(d));
        removed.add(d);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw toIoError(err, `deleting blob ${d}`);
      }
      if (++n % YIELD_EVERY === 0) await yieldToEventLoop();
    }
    for (const d of removed) this.observer?.blobDeleted(d);
    return removed;
  }

  /** Closes the pack files this process holds open. Sealed data needs no closing. */
  close(): void {
    this.packs.close();
  }

  async *list(): AsyncIterable<BlobInfo> {
    const seen = new Set<Digest>();
    for (const b of this.packs.list()) {
      seen.add(b.digest);
      yield b;
    }
    let shards: string[];
    try {
      shards = (await fsp.readdir(this.blobsDir)).sort();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw toIoError(err, 'listing blobs');
    }
    for (const shard of shards) {
      if (!/^[0-9a-f]{2}$/.test(shard)) continue;
      const dir = join(this.blobsDir, shard);
      let names: string[];
      try {
        names = await fsp.readdir(dir);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
        throw toIoError(err, `listing ${dir}`);
      }
      for (const name of names) {
        if (!isDigest(name) || !name.startsWith(shard) || seen.has(name)) continue;
        try {
          const st = await fsp.stat(join(dir, name));
          yield { digest: name, storedSize: st.size, atimeMs: st.atimeMs, mtimeMs: st.mtimeMs };
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw toIoError(err, `stat of blob ${name}`);
        }
      }
    }
  }

  /** Writes a loose blob file (temp file, then rename) and tells the observer. */
  /**
   * False when the loose-blob directory a digest would be in was absent less than a second ago: a
   * store written in packs has none, and checking each new chunk's loose file cost a failing
   * `access` per chunk (15% of a cold ingest of small files). Another process writing a loose blob
   * meanwhile costs at most a second copy of it in a pack, never a wrong answer.
   */
  private looseShardMayExist(digest: Digest): boolean {
    const shard = digest.slice(0, 2);
    const now = Date.now();
    if ((this.absentShards.get(shard) ?? 0) > now) return false;
    if (existsSyncChecked(join(this.blobsDir, shard))) return true;
    this.absentShards.set(shard, now + ABSENT_SHARD_TRUST_MS);
    return false;
  }

  private writeLoose(digest: Digest, frame: Buffer): void {
    this.absentShards.delete(digest.slice(0, 2));
    this.writeAtomically(this.pathOf(digest), frame, digest);
    this.observer?.blobWritten({ digest, storedSize: frame.length, rawSize: Number(frame.readBigUInt64BE(8)), codec: frame[5]!, mtimeMs: Date.now() });
  }

  private writeAtomically(final: string, frame: Buffer, digest: Digest): void {
    this.ensureDirSync(this.tmpDir);
    const tmp = join(this.tmpDir, `${digest}.${randomBytes(6).toString('hex')}`);
    let renamed = false;
    try {
      writeFileSync(tmp, frame, { flag: 'wx' });
      const shardDir = join(this.blobsDir, digest.slice(0, 2));
      this.ensureDirSync(shardDir);
      try {
        renameSync(tmp, final);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
        // The shard directory vanished under us (an external clean-up): make it again, once.
        this.madeDirs.delete(shardDir);
        this.ensureDirSync(shardDir);
        renameSync(tmp, final);
      }
      renamed = true;
    } catch (err) {
      throw toIoError(err, `writing blob ${digest}`);
    } finally {
      if (!renamed) rmSync(tmp, { force: true });
    }
  }

  private async quarantine(digest: Digest, path: string, error: CascacheError): Promise<void> {
    await this.ensureDir(this.quarantineDir);
    const quarantinedAs = join(this.quarantineDir, `${digest}.${Date.now()}`);
    try {
      await fsp.rename(path, quarantinedAs);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return; // a concurrent reader moved it
      throw toIoError(err, `quarantining corrupt blob ${digest}`);
    }
    this.observer?.blobDeleted(digest);
    this.onCorrupt?.({ digest, quarantinedAs, error });
  }

  /** A packed blob found corrupt: a copy of its frame goes to quarantine, the pack is rewritten without it. */
  private async quarantinePacked(digest: Digest, frame: Buffer, error: CascacheError): Promise<void> {
    this.ensureDirSync(this.quarantineDir);
    const quarantinedAs = join(this.quarantineDir, `${digest}.${Date.now()}`);
    try {
      writeFileSync(quarantinedAs, frame);
    } catch {
      // The copy is for inspection only; removing the blob from service is what matters.
    }
    this.packs.remove(new Set([digest]));
    this.observer?.blobDeleted(digest);
    this.onCorrupt?.({ digest, quarantinedAs, error });
  }

  private async ensureDir(dir: string): Promise<void> {
    this.ensureDirSync(dir);
  }

  private ensureDirSync(dir: string): void {
    if (this.madeDirs.has(dir)) return;
    mkdirSync(dir, { recursive: true });
    this.madeDirs.add(dir);
  }
}

/** How long a loose-blob directory found absent is taken to stay absent, ms. */
const ABSENT_SHARD_TRUST_MS = 1000;

/** Checks per batch before yielding to the event loop in long synchronous loops. */
const YIELD_EVERY = 256;

/** Lets queued I/O callbacks and timers run during a long loop of synchronous calls. */
export function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

function existsSyncChecked(path: string): boolean {
  try {
    accessSync(path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw toIoError(err, `checking ${path}`);
  }
}

/** What a batch's callback sees: the store, with puts appended to the open pack. */
class BatchView implements BatchingBlobStore {
  readonly name: string;
  constructor(private readonly store: FsBlobStore) {
    this.name = store.name;
  }
  has(digests: Iterable<Digest>): Promise<Set<Digest>> {
    return this.store.has(digests);
  }
  get(digest: Digest): Promise<Readable | null> {
    return this.store.get(digest);
  }
  getBuffer(digest: Digest): Promise<Buffer | null> {
    return this.store.getBuffer(digest);
  }
  header(digest: Digest): BlobHeader | null {
    return this.store.header(digest);
  }
  put(digest: Digest, body: Uint8Array | AsyncIterable<Uint8Array>, options?: PutOptions): Promise<PutResult> {
    return this.store.putPacked(digest, body, options);
  }
  delete(digest: Digest): Promise<boolean> {
    return this.store.delete(digest);
  }
  list(): AsyncIterable<BlobInfo> {
    return this.store.list();
  }
  /** Already in a batch: runs `fn` in it. */
  withBatch<T>(fn: (store: BlobStore) => Promise<T>): Promise<T> {
    return fn(this);
  }
}
