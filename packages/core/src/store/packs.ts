/**
 * Local pack files: the new blobs of one batch (a task output being stored, a tree being fetched)
 * appended to one file, instead of one file per blob.
 *
 * ```
 * <root>/v1/packs/<pack digest>.pack
 *   frames              blob frames back to back (codec.ts): the bytes a remote pack would hold
 *   index               one 44-byte row per frame: digest (32 bytes) | offset u64 BE | length u32 BE
 *   footer (24 bytes)   magic "CASPACK1" | row count u32 BE | reserved u32 0 | BLAKE3(index)[0..8]
 * ```
 * The pack digest is BLAKE3 over the frames. A pack is written under `v1/tmp/` and renamed into
 * place when sealed, so a partial pack never appears under a final name; once there it never
 * changes. Removing blobs from a pack (GC, eviction, quarantine) writes a new pack of the rest and
 * then unlinks the old one, so a reader sees each blob in the old pack, the new one, or both.
 *
 * Why packs: creating a file costs ~30 us on an idle ext4 disk and 0.3-0.6 ms while the build tool
 * writes its outputs beside it; appending a frame costs ~4 us either way (docs/decisions.md). git
 * (loose objects, then packs with an index) and restic (packs with an index) made the same choice.
 * Batches smaller than {@link PACK_MIN_BLOBS} blobs are written as loose files, so a one-line change
 * does not leave a pack behind.
 *
 * Other processes see a pack once it is sealed: a lookup that misses re-reads the directory when its
 * modification time changed (or is too recent to trust, as git handles "racy" index entries).
 */
import { randomBytes } from 'node:crypto';
import {
  closeSync,
  fstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  readSync,
  renameSync,
  rmSync,
  statSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { blake3 } from '@napi-rs/blake-hash';
import { BLOB_HEADER_BYTES } from '../codec';
import { DigestHasher, type Digest } from '../digest';
import { toIoError } from '../errors';

/** A batch with fewer new blobs than this is written as loose files, not as a pack. */
export const PACK_MIN_BLOBS = 16;
/** A pack is sealed once its frames reach this many bytes, and a new one started. */
export const PACK_TARGET_BYTES = 32 * 1024 * 1024;
/** Frames kept in memory before the pack file is created (a batch may still end up loose), and between writes to it, bytes. */
const BUFFER_BYTES = 1024 * 1024;
const PACK_MAGIC = Buffer.from('CASPACK1', 'ascii');
const ROW_BYTES = 44;
const FOOTER_BYTES = 24;
const PACK_NAME = /^([0-9a-f]{64})\.pack$/;
/** Pack files kept open for reads. */
const MAX_OPEN_FDS = 64;
/** A directory modified more recently than this may change again within the same timestamp. */
const RACY_MS = 100;

/** A sealed pack. */
interface SealedPack {
  readonly name: Digest;
  readonly path: string;
  readonly rows: Digest[];
  /** Frame offset and length of each row, bytes. */
  readonly offsets: number[];
  readonly lengths: number[];
  readonly mtimeMs: number;
}

/** A pack being written by this process. */
interface OpenPack {
  fd: number | null;
  tmpPath: string | null;
  /** Bytes of frames so far (the offset of the next frame). */
  size: number;
  rows: OpenRow[];
  hasher: DigestHasher;
  /** Rows appended since the file was last written (their frames are still in memory), and their bytes. */
  unwritten: OpenRow[];
  unwrittenBytes: number;
}

/** A frame in the open pack; `frame` is kept until it is written to the pack file. */
interface OpenRow {
  digest: Digest;
  offset: number;
  length: number;
  codec: number;
  rawSize: number;
  frame: Buffer | null;
}

/** A blob made durable by a seal, for the store's observer. */
export interface SealedBlob {
  digest: Digest;
  /** Frame bytes. */
  length: number;
  codec: number;
  /** Raw (uncompressed) bytes. */
  rawSize: number;
}

/** Where a blob's frame is. */
export interface PackLocation {
  pack: SealedPack | OpenPack;
  offset: number;
  length: number;
  /** Set while the blob is in this process's open pack. */
  row?: OpenRow;
}

/** One blob as listed from the packs. */
export interface PackedBlob {
  digest: Digest;
  storedSize: number;
  mtimeMs: number;
}

export interface PackSetOptions {
  /** `<root>/v1/packs` */
  dir: string;
  /** `<root>/v1/tmp` */
  tmpDir: string;
  /** Told about each frame once it is durable under a final name (a sealed pack). */
  onSealed(blobs: SealedBlob[], mtimeMs: number): void;
  /** Writes a frame as a loose file (a batch too small for a pack). */
  writeLoose(digest: Digest, frame: Buffer): void;
  /** Told about a pack whose index cannot be read (it is moved aside, its blobs become misses). */
  onBadPack?(name: string, movedTo: string | null, reason: string): void;
  /** `<root>/v1/quarantine` */
  quarantineDir: string;
}

/** The packs of one local store, as this process sees them. Synchronous: see store/fs.ts. */
export class PackSet {
  private readonly locs = new Map<Digest, PackLocation>();
  private readonly packs = new Map<Digest, SealedPack>();
  private readonly fds = new Map<Digest, number>();
  private open: OpenPack | null = null;
  /** Directory mtime (ns) when last read; null: not read yet or too recent to trust. */
  private seenStamp: bigint | null = null;
  private loaded = false;

  constructor(private readonly opts: PackSetOptions) {}

  /** Where a blob is (sealed or in this process's open pack), or undefined. */
  locate(digest: Digest): PackLocation | undefined {
    if (!this.loaded) this.refresh();
    return this.locs.get(digest);
  }

  /** True when the blob is in a sealed pack (durable), ignoring this process's open pack. */
  hasSealed(digest: Digest): boolean {
    const loc = this.locate(digest);
    return loc !== undefined && isSealed(loc.pack);
  }

  /**
   * Re-reads the pack directory if it changed since the last read. Returns true when the set of
   * packs changed. @throws CascacheError `E_IO`.
   */
  refresh(): boolean {
    let stamp: bigint;
    try {
      const st = statSync(this.opts.dir, { bigint: true });
      stamp = st.mtimeNs;
      if (this.loaded && this.seenStamp !== null && stamp === this.seenStamp) return false;
      this.seenStamp = BigInt(Date.now()) * 1_000_000n - stamp > BigInt(RACY_MS) * 1_000_000n ? stamp : null;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw toIoError(err, `reading ${this.opts.dir}`);
      this.loaded = true;
      this.seenStamp = null;
      return false;
    }
    this.loaded = true;
    let names: string[];
    try {
      names = readdirSync(this.opts.dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw toIoError(err, `listing ${this.opts.dir}`);
    }
    let changed = false;
    const present = new Set<Digest>();
    for (const file of names) {
      const m = PACK_NAME.exec(file);
      if (m) present.add(m[1]!);
    }
    // Vanished packs first: a repacked blob moves from a vanished pack to a new one, and must end
    // up mapped to the new one.
    for (const name of [...this.packs.keys()]) {
      if (present.has(name)) continue;
      this.forget(this.packs.get(name)!);
      changed = true;
    }
    for (const name of present) if (!this.packs.has(name) && this.load(name)) changed = true;
    return changed;
  }

  /**
   * The frame bytes at a location, or null when the pack vanished (another process repacked it;
   * call `refresh` and look again). A short read returns the bytes there are (decoding rejects them).
   * @throws CascacheError `E_IO`.
   */
  readFrame(loc: PackLocation): Buffer | null {
    if (loc.row?.frame) return loc.row.frame;
    return this.readAt(loc.pack, loc.offset, loc.length);
  }

  /** The first `n` bytes of a frame (its header), or null as for `readFrame`. */
  readHeader(loc: PackLocation): Buffer | null {
    if (loc.row?.frame) return loc.row.frame.subarray(0, BLOB_HEADER_BYTES);
    return this.readAt(loc.pack, loc.offset, Math.min(loc.length, BLOB_HEADER_BYTES));
  }

  /** Appends a frame to this process's open pack (started if needed). @throws CascacheError `E_IO`. */
  append(digest: Digest, frame: Buffer): void {
    const open = (this.open ??= { fd: null, tmpPath: null, size: 0, rows: [], hasher: new DigestHasher(), unwritten: [], unwrittenBytes: 0 });
    const row: OpenRow = {
      digest,
      offset: open.size,
      length: frame.length,
      codec: frame[5] ?? 0,
      rawSize: frame.length >= BLOB_HEADER_BYTES ? Number(frame.readBigUInt64BE(8)) : 0,
      frame,
    };
    if (open.fd !== null) {
      // Written in runs of ~1 MiB, not one write per frame (a cold ingest of small files made
      // thousands); until then the frame is read from memory.
      open.unwritten.push(row);
      open.unwrittenBytes += frame.length;
      if (open.unwrittenBytes >= BUFFER_BYTES) this.writeUnwritten(open);
    }
    open.hasher.update(frame);
    open.size += frame.length;
    open.rows.push(row);
    this.locs.set(digest, { pack: open, offset: row.offset, length: row.length, row });
    if (open.fd === null && (open.rows.length >= PACK_MIN_BLOBS || open.size >= BUFFER_BYTES)) this.spill(open);
    if (open.size >= PACK_TARGET_BYTES) this.seal();
  }

  /**
   * Makes everything appended so far durable: a pack of at least {@link PACK_MIN_BLOBS} blobs is
   * indexed, closed and renamed into place; fewer are written loose. @throws CascacheError `E_IO`.
   */
  seal(): void {
    const open = this.open;
    if (!open) return;
    this.open = null;
    // Rows whose location moved (quarantined, or appended twice) are dead bytes in this pack.
    const live = open.rows.filter((r) => this.locs.get(r.digest)?.row === r);
    try {
      if (open.fd === null) {
        for (const r of live) {
          this.opts.writeLoose(r.digest, r.frame!);
          this.locs.delete(r.digest);
        }
        return;
      }
      if (live.length === 0) {
        this.discardFile(open);
        return;
      }
      this.writeUnwritten(open);
      const index = Buffer.allocUnsafe(live.length * ROW_BYTES);
      live.forEach((r, i) => {
        Buffer.from(r.digest, 'hex').copy(index, i * ROW_BYTES);
        index.writeBigUInt64BE(BigInt(r.offset), i * ROW_BYTES + 32);
        index.writeUInt32BE(r.length, i * ROW_BYTES + 40);
      });
      writeFully(open.fd, index, open.size, open.tmpPath!);
      writeFully(open.fd, footer(index, live.length), open.size + index.length, open.tmpPath!);
      const name = open.hasher.digest();
      const path = join(this.opts.dir, `${name}.pack`);
      mkdirSync(this.opts.dir, { recursive: true });
      renameSync(open.tmpPath!, path);
      const pack: SealedPack = { name, path, rows: live.map((r) => r.digest), offsets: live.map((r) => r.offset), lengths: live.map((r) => r.length), mtimeMs: Date.now() };
      // The same bytes sealed twice (a retry) name the same pack: keep one registration.
      const previous = this.packs.get(name);
      if (previous) this.forget(previous);
      this.packs.set(name, pack);
      this.keepFd(name, open.fd);
      for (const r of live) this.locs.set(r.digest, { pack, offset: r.offset, length: r.length });
      this.opts.onSealed(
        live.map((r) => ({ digest: r.digest, length: r.length, codec: r.codec, rawSize: r.rawSize })),
        pack.mtimeMs,
      );
    } catch (err) {
      this.dropOpen(open);
      throw toIoError(err, 'sealing a pack');
    }
  }

  /** Drops everything appended since the last seal (a batch that failed alone). */
  discard(): void {
    const open = this.open;
    if (!open) return;
    this.open = null;
    this.dropOpen(open);
  }

  /** The sealed pack file holding a location, or null for the open pack. */
  pathOf(loc: PackLocation): string | null {
    return isSealed(loc.pack) ? loc.pack.path : null;
  }

  /** Every blob in a sealed pack, each digest once, with its pack's current modification time. */
  list(): PackedBlob[] {
    this.refresh();
    const mtimes = new Map<SealedPack, number>();
    for (const pack of this.packs.values()) {
      try {
        mtimes.set(pack, statSync(pack.path).mtimeMs);
      } catch {
        mtimes.set(pack, pack.mtimeMs);
      }
    }
    const out: PackedBlob[] = [];
    for (const [digest, loc] of this.locs) if (isSealed(loc.pack)) out.push({ digest, storedSize: loc.length, mtimeMs: mtimes.get(loc.pack) ?? loc.pack.mtimeMs });
    return out;
  }

  /**
   * Removes blobs from every pack holding them: a pack left with nothing is unlinked, any other is
   * rewritten without them (its remaining frames copied, unverified, into a new pack) and then
   * unlinked. Returns the digests that were in a sealed pack. @throws CascacheError `E_IO`.
   */
  remove(digests: Set<Digest>, onProgress?: () => void): Set<Digest> {
    this.refresh();
    const removed = new Set<Digest>();
    const open = this.open;
    if (open) for (const d of digests) if (this.locs.get(d)?.pack === open) this.locs.delete(d);
    for (const pack of [...this.packs.values()]) {
      if (!pack.rows.some((d) => digests.has(d))) continue;
      const keep = pack.rows.filter((d) => !digests.has(d));
      for (const d of pack.rows) if (digests.has(d)) removed.add(d);
      for (const d of keep) {
        const loc = this.locs.get(d);
        if (loc?.pack !== pack) continue; // another copy is the one in use
        const frame = this.readAt(pack, loc.offset, loc.length);
        if (frame) this.append(d, frame);
      }
      if (keep.length > 0) this.seal();
      try {
        unlinkSync(pack.path);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw toIoError(err, `removing pack ${pack.path}`);
      }
      this.forget(pack);
      onProgress?.();
    }
    return removed;
  }

  /** Closes the files this process holds open (sealing nothing). */
  close(): void {
    for (const fd of this.fds.values()) closeQuietly(fd);
    this.fds.clear();
  }

  private load(name: Digest): boolean {
    const path = join(this.opts.dir, `${name}.pack`);
    let fd: number;
    try {
      fd = openSync(path, 'r');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw toIoError(err, `opening pack ${path}`);
    }
    try {
      const st = fstatSync(fd);
      const rows = readIndex(fd, st.size);
      if (typeof rows === 'string') {
        closeQuietly(fd);
        this.moveAside(name, path, rows);
        return false;
      }
      const pack: SealedPack = { name, path, rows: rows.map((r) => r.digest), offsets: rows.map((r) => r.offset), lengths: rows.map((r) => r.length), mtimeMs: st.mtimeMs };
      this.packs.set(name, pack);
      for (const r of rows) if (!this.locs.has(r.digest)) this.locs.set(r.digest, { pack, offset: r.offset, length: r.length });
      this.keepFd(name, fd);
      return true;
    } catch (err) {
      closeQuietly(fd);
      throw toIoError(err, `reading pack ${path}`);
    }
  }

  private moveAside(name: Digest, path: string, reason: string): void {
    let movedTo: string | null = join(this.opts.quarantineDir, `${name}.pack.${Date.now()}`);
    try {
      mkdirSync(this.opts.quarantineDir, { recursive: true });
      renameSync(path, movedTo);
    } catch {
      movedTo = null;
    }
    this.opts.onBadPack?.(name, movedTo, reason);
  }

  /** Drops a pack; a blob it held that another loaded pack also holds is mapped to that copy. */
  private forget(pack: SealedPack): void {
    this.packs.delete(pack.name);
    const orphans = new Set<Digest>();
    for (const d of pack.rows) {
      if (this.locs.get(d)?.pack !== pack) continue;
      this.locs.delete(d);
      orphans.add(d);
    }
    const fd = this.fds.get(pack.name);
    if (fd !== undefined) {
      this.fds.delete(pack.name);
      closeQuietly(fd);
    }
    if (orphans.size === 0) return;
    for (const other of this.packs.values()) {
      other.rows.forEach((d, i) => {
        if (orphans.has(d) && !this.locs.has(d)) this.locs.set(d, { pack: other, offset: other.offsets[i]!, length: other.lengths[i]! });
      });
    }
  }

  private readAt(pack: SealedPack | OpenPack, offset: number, length: number): Buffer | null {
    let fd: number | null;
    if (isSealed(pack)) {
      fd = this.fdFor(pack);
      if (fd === null) {
        this.forget(pack);
        return null;
      }
    } else fd = pack.fd;
    if (fd === null) return null;
    const buf = Buffer.allocUnsafe(length);
    let got = 0;
    try {
      while (got < length) {
        const n = readSync(fd, buf, got, length - got, offset + got);
        if (n === 0) break;
        got += n;
      }
    } catch (err) {
      throw toIoError(err, 'reading a pack');
    }
    return got === length ? buf : buf.subarray(0, got);
  }

  private fdFor(pack: SealedPack): number | null {
    const cached = this.fds.get(pack.name);
    if (cached !== undefined) {
      // Least recently used goes first: move this one to the end.
      this.fds.delete(pack.name);
      this.fds.set(pack.name, cached);
      return cached;
    }
    try {
      const fd = openSync(pack.path, 'r');
      this.keepFd(pack.name, fd);
      return fd;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw toIoError(err, `opening pack ${pack.path}`);
    }
  }

  private keepFd(name: Digest, fd: number): void {
    this.fds.set(name, fd);
    while (this.fds.size > MAX_OPEN_FDS) {
      const [oldest, oldFd] = this.fds.entries().next().value as [Digest, number];
      this.fds.delete(oldest);
      closeQuietly(oldFd);
    }
  }

  private spill(open: OpenPack): void {
    mkdirSync(this.opts.tmpDir, { recursive: true });
    open.tmpPath = join(this.opts.tmpDir, `pack-${process.pid}-${randomBytes(6).toString('hex')}.tmp`);
    try {
      open.fd = openSync(open.tmpPath, 'wx+');
      open.unwritten = [...open.rows];
      open.unwrittenBytes = open.size;
      this.writeUnwritten(open);
    } catch (err) {
      this.dropOpen(open);
      if (this.open === open) this.open = null;
      throw toIoError(err, 'starting a pack');
    }
  }

  /** Writes the frames appended since the last write, in one write. @throws CascacheError `E_IO`. */
  private writeUnwritten(open: OpenPack): void {
    const rows = open.unwritten;
    if (rows.length === 0 || open.fd === null) return;
    writeFully(open.fd, rows.length === 1 ? rows[0]!.frame! : Buffer.concat(rows.map((r) => r.frame!), open.unwrittenBytes), rows[0]!.offset, open.tmpPath!);
    for (const r of rows) r.frame = null;
    open.unwritten = [];
    open.unwrittenBytes = 0;
  }

  private dropOpen(open: OpenPack): void {
    for (const r of open.rows) if (this.locs.get(r.digest)?.pack === open) this.locs.delete(r.digest);
    this.discardFile(open);
  }

  private discardFile(open: OpenPack): void {
    if (open.fd !== null) closeQuietly(open.fd);
    if (open.tmpPath) rmSync(open.tmpPath, { force: true });
    open.fd = null;
  }
}

function isSealed(pack: SealedPack | OpenPack): pack is SealedPack {
  return 'name' in pack;
}

function footer(index: Buffer, count: number): Buffer {
  const f = Buffer.alloc(FOOTER_BYTES);
  PACK_MAGIC.copy(f, 0);
  f.writeUInt32BE(count, 8);
  blake3(index).copy(f, 16, 0, 8);
  return f;
}

/** A pack's index rows, or why it cannot be read. */
function readIndex(fd: number, size: number): Array<{ digest: Digest; offset: number; length: number }> | string {
  if (size < FOOTER_BYTES) return 'shorter than a footer';
  const f = Buffer.alloc(FOOTER_BYTES);
  readSync(fd, f, 0, FOOTER_BYTES, size - FOOTER_BYTES);
  if (!f.subarray(0, 8).equals(PACK_MAGIC) || f.readUInt32BE(12) !== 0) return 'bad footer';
  const count = f.readUInt32BE(8);
  const indexBytes = count * ROW_BYTES;
  const framesEnd = size - FOOTER_BYTES - indexBytes;
  if (count === 0 || framesEnd < 0) return 'bad row count';
  const index = Buffer.allocUnsafe(indexBytes);
  if (readSync(fd, index, 0, indexBytes, framesEnd) !== indexBytes) return 'short index';
  if (!blake3(index).subarray(0, 8).equals(f.subarray(16, 24))) return 'index checksum mismatch';
  const rows: Array<{ digest: Digest; offset: number; length: number }> = [];
  for (let i = 0; i < count; i++) {
    const at = i * ROW_BYTES;
    const offset = Number(index.readBigUInt64BE(at + 32));
    const length = index.readUInt32BE(at + 40);
    if (length < BLOB_HEADER_BYTES || offset + length > framesEnd) return `row ${i} points outside the frames`;
    rows.push({ digest: index.toString('hex', at, at + 32), offset, length });
  }
  return rows;
}

function writeFully(fd: number, buf: Buffer, position: number, path: string): void {
  let done = 0;
  try {
    while (done < buf.length) done += writeSync(fd, buf, done, buf.length - done, position + done);
  } catch (err) {
    throw toIoError(err, `writing ${path}`);
  }
}

function closeQuietly(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    /* already closed */
  }
}
