/**
 * Trees in and out of the CAS: build a manifest plus chunk blobs from a directory or a tar stream,
 * and materialize a manifest into a directory or a tar stream. Everything streams chunk by chunk:
 * no file is ever held whole in memory, whatever its size.
 *
 * Tar input is hostile (DESIGN.md trust model): absolute paths, `..`, links out of the root, device
 * files and oversized entries are rejected with `E_BAD_INPUT` / `E_TOO_LARGE`. A failed ingest leaves
 * only unreferenced chunk blobs behind (GC removes them); no manifest is stored.
 */
import { chmodSync, createReadStream, lstatSync, mkdirSync, promises as fsp, readdirSync, readFileSync, readlinkSync, symlinkSync, writeFileSync, type Dirent } from 'node:fs';
import { dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import * as tarStream from 'tar-stream';
import { Chunker, chunkStream, DEFAULT_CHUNKER_PARAMS, type ChunkerParams } from './chunker';
import { looksCompressed, MAX_BLOB_BYTES } from './codec';
import { digestOf, type Digest } from './digest';
import { CascacheError, ErrorCodes, isCascacheError, toIoError } from './errors';
import { Limiter } from './limiter';
import {
  assertSafePath,
  createManifest,
  encodeManifest,
  MANIFEST_LIMITS,
  manifestChunks,
  normalizeEntryPath,
  parseManifest,
  permissionBits,
  type FileEntry,
  type Manifest,
  type ManifestEntry,
  type ManifestExtras,
} from './manifest';
import { yieldToEventLoop } from './store/fs';
import { inBatch, type BlobStore } from './store/types';
import { coalesce, readAll } from './streams';

/** Figures from one ingest. */
export interface IngestResult {
  /** Root digest: the digest of the manifest blob. */
  digest: Digest;
  manifest: Manifest;
  files: number;
  /** Sum of file sizes in bytes. */
  logicalBytes: number;
  /** Chunks referenced (with repeats). */
  chunks: number;
  /** Chunks this ingest wrote (absent from the store before). */
  newChunks: number;
  /** Bytes the store wrote for new chunks and the manifest (after compression and framing). */
  newBytes: number;
  /** Raw bytes of chunks that were already stored or repeated within the tree. */
  dedupBytes: number;
}

/** Options shared by the ingest functions. */
export interface IngestOptions {
  /** Chunker parameters; the store descriptor's, normally. Default 2 KiB / 8 KiB / 64 KiB. */
  chunker?: ChunkerParams;
  /** Most chunk puts in flight. Default 16. */
  putConcurrency?: number;
  /** Extras stored in the manifest. */
  extras?: ManifestExtras;
}

/** Limits for tar ingest. Every bound fails with `E_TOO_LARGE`. */
export interface TarLimits {
  /** Most entries. Default 1,000,000. */
  maxEntries?: number;
  /** Largest single file in bytes. Default 8 GiB. */
  maxFileBytes?: number;
  /** Largest total of file bytes. Default 32 GiB. */
  maxTotalBytes?: number;
}

/** Options for {@link ingestTar}. */
export interface TarIngestOptions extends IngestOptions {
  limits?: TarLimits;
  /**
   * Top-level tar entries to keep as manifest extras instead of files, with a decoder from their
   * bytes (Nx: `terminalOutput` as UTF-8, `code` as a 4-byte big-endian integer). At most
   * `MANIFEST_LIMITS.extraBytes` each.
   */
  extraEntries?: Record<string, (bytes: Buffer) => string | number | boolean>;
}

const DEFAULT_TAR_LIMITS: Required<TarLimits> = {
  maxEntries: 1_000_000,
  maxFileBytes: 8 * 1024 ** 3,
  maxTotalBytes: 32 * 1024 ** 3,
};

/** Files up to this size are read with one call; larger ones stream. */
const WHOLE_READ_BYTES = 4 * 1024 * 1024;

/**
 * Writes chunk blobs for file contents, deduplicating within the tree and against the store, with a
 * bounded number of puts in flight.
 */
class ChunkWriter {
  readonly chunker: Chunker;
  private readonly seen = new Set<Digest>();
  private readonly limiter: Limiter;
  files = 0;
  logicalBytes = 0;
  chunks = 0;
  newChunks = 0;
  newBytes = 0;
  dedupBytes = 0;

  constructor(
    private readonly store: BlobStore,
    options: IngestOptions,
  ) {
    this.chunker = new Chunker(options.chunker ?? DEFAULT_CHUNKER_PARAMS);
    this.limiter = new Limiter(options.putConcurrency ?? 16);
  }

  /** Chunks and stores one file's bytes; returns its size and chunk digests. */
  async writeFile(content: Buffer | AsyncIterable<Uint8Array>, maxBytes = Number.MAX_SAFE_INTEGER): Promise<{ size: number; chunks: Digest[] }> {
    const chunks: Digest[] = [];
    const puts: Promise<void>[] = [];
    let size = 0;
    let compressible: boolean | undefined;
    const take = (chunk: Buffer): void => {
      compressible ??= !looksCompressed(chunk);
      size += chunk.length;
      if (size > maxBytes) {
        throw new CascacheError(ErrorCodes.TOO_LARGE, `file exceeds the ${maxBytes}-byte limit`, { details: { limit: maxBytes } });
      }
      const digest = digestOf(chunk);
      chunks.push(digest);
      this.chunks++;
      if (this.seen.has(digest)) {
        this.dedupBytes += chunk.length;
        return;
      }
      this.seen.add(digest);
      const hint = compressible;
      puts.push(
        this.limiter.run(async () => {
          const r = await this.store.put(digest, chunk, { compressible: hint });
          if (r.created) {
            this.newChunks++;
            this.newBytes += r.storedBytes;
          } else {
            this.dedupBytes += chunk.length;
          }
        }),
      );
    };
    try {
      if (Buffer.isBuffer(content)) {
        for (let off = 0; off < content.length; ) {
          const n = this.chunker.cut(content, off, content.length);
          take(content.subarray(off, off + n));
          off += n;
          if (puts.length >= 64) await Promise.all(puts.splice(0));
        }
      } else {
        for await (const chunk of chunkStream(content, this.chunker.params)) {
          take(chunk);
          // Bound memory: wait for finished puts before reading far ahead.
          if (puts.length >= 64) await Promise.all(puts.splice(0));
        }
      }
    } finally {
      // Never leave puts running unobserved, even when the source failed.
      const settled = await Promise.allSettled(puts);
      const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
      if (failed) throw failed.reason;
    }
    this.files++;
    this.logicalBytes += size;
    return { size, chunks };
  }

  /** Stores the manifest blob and returns the result. */
  async finish(entries: ManifestEntry[], extras: ManifestExtras | undefined): Promise<IngestResult> {
    const manifest = createManifest(entries, extras);
    const { digest, storedBytes } = await putManifest(this.store, manifest);
    return {
      digest,
      manifest,
      files: this.files,
      logicalBytes: this.logicalBytes,
      chunks: this.chunks,
      newChunks: this.newChunks,
      newBytes: this.newBytes + storedBytes,
      dedupBytes: this.dedupBytes,
    };
  }
}

/**
 * Stores a manifest as a blob.
 * @returns its digest (the root digest) and the bytes the store wrote (0 when already present).
 */
export async function putManifest(store: BlobStore, manifest: Manifest): Promise<{ digest: Digest; storedBytes: number }> {
  const bytes = encodeManifest(manifest);
  const digest = digestOf(bytes);
  const r = await store.put(digest, bytes);
  return { digest, storedBytes: r.storedBytes };
}

/**
 * Loads and validates a manifest blob; `null` when absent.
 * @throws CascacheError `E_BAD_INPUT` when the blob is not a valid manifest, `E_INTEGRITY` when corrupt.
 */
export async function getManifest(store: BlobStore, digest: Digest): Promise<Manifest | null> {
  const bytes = await fetchBlob(store, digest);
  return bytes === null ? null : parseManifest(bytes);
}

/** Why a tree cannot be served from `store`, as {@link treeProblem} reports it. */
export interface TreeProblem {
  reason: 'manifest-missing' | 'manifest-invalid' | 'chunks-missing';
  detail: string;
}

/**
 * Whether the tree of `manifest` can be served from `store`: the manifest parses and every chunk it
 * names is present. Null when it can; else why not. Chunks are checked for presence, not re-hashed
 * (`verifyStore` re-hashes).
 * @throws store failures (`E_IO`...) unchanged: they say nothing about the tree.
 */
export async function treeProblem(store: BlobStore, manifest: Digest): Promise<TreeProblem | null> {
  let m: Manifest | null;
  try {
    m = await getManifest(store, manifest);
  } catch (err) {
    if (isCascacheError(err, ErrorCodes.BAD_INPUT) || isCascacheError(err, ErrorCodes.INTEGRITY)) return { reason: 'manifest-invalid', detail: err.message };
    throw err;
  }
  if (!m) return { reason: 'manifest-missing', detail: manifest };
  const chunks = manifestChunks(m);
  const present = await store.has(chunks);
  return present.size === chunks.length ? null : { reason: 'chunks-missing', detail: `${chunks.length - present.size} of ${chunks.length} chunks` };
}

/** A blob's raw bytes, through the store's `getBuffer` fast path when it has one. */
export async function fetchBlob(store: BlobStore, digest: Digest): Promise<Buffer | null> {
  const fast = (store as { getBuffer?: (d: Digest) => Promise<Buffer | null> }).getBuffer;
  if (typeof fast === 'function') return fast.call(store, digest);
  const body = await store.get(digest);
  return body === null ? null : readAll(body, MAX_BLOB_BYTES);
}

/** Options for {@link ingestDirectory}. */
export interface DirectoryIngestOptions extends IngestOptions {
  /** Files read at once. Default 8. */
  fileConcurrency?: number;
  /** Skips a path (relative, POSIX separators) and, for a directory, everything below it. */
  exclude?: (relativePath: string, type: ManifestEntry['type']) => boolean;
  /** Called as files finish: files and bytes done, out of the totals found by the walk. */
  onProgress?: (done: { files: number; bytes: number }, total: { files: number; bytes: number }) => void;
}

/**
 * Builds a manifest and chunk blobs from a directory tree. Symlinks are recorded, never followed.
 * @throws CascacheError `E_BAD_INPUT` for unsupported file types (sockets, devices, FIFOs) or links
 * that escape the root; `E_IO` for filesystem failures.
 */
export function ingestDirectory(store: BlobStore, root: string, options: DirectoryIngestOptions = {}): Promise<IngestResult> {
  // One batch: a local store appends the new chunks to one pack (store/packs.ts).
  return inBatch(store, (s) => ingestDirectoryInto(s, root, options));
}

async function ingestDirectoryInto(store: BlobStore, root: string, options: DirectoryIngestOptions): Promise<IngestResult> {
  const writer = new ChunkWriter(store, options);
  const entries: ManifestEntry[] = [];
  const files: Array<{ path: string; abs: string; mode: number; size: number }> = [];

  // The walk is synchronous: one lstat per entry, each waited for in turn on the thread pool, left
  // the ingest idle a quarter of the time; a walk of a build output's tree blocks for milliseconds,
  // in the CLI only (the agent ingests tars).
  const walk = (absDir: string, relDir: string): void => {
    let dirents: Dirent[];
    try {
      dirents = readdirSync(absDir, { withFileTypes: true });
    } catch (err) {
      throw toIoError(err, `reading directory ${absDir}`);
    }
    for (const d of dirents) visit(d, absDir, relDir);
  };
  const visit = (d: Dirent, absDir: string, relDir: string): void => {
    try {
      const rel = relDir === '' ? d.name : `${relDir}/${d.name}`;
      const abs = join(absDir, d.name);
      assertSafePath(rel);
      if (d.isSymbolicLink()) {
        if (options.exclude?.(rel, 'symlink')) return;
        entries.push({ path: rel, type: 'symlink', target: readlinkSync(abs) });
      } else if (d.isDirectory()) {
        if (options.exclude?.(rel, 'dir')) return;
        const st = lstatSync(abs);
        entries.push({ path: rel, type: 'dir', mode: permissionBits(st.mode) });
        walk(abs, rel);
      } else if (d.isFile()) {
        if (options.exclude?.(rel, 'file')) return;
        const st = lstatSync(abs);
        files.push({ path: rel, abs, mode: permissionBits(st.mode), size: st.size });
      } else {
        throw new CascacheError(ErrorCodes.BAD_INPUT, `${rel} is not a regular file, directory or symlink`, { details: { path: rel } });
      }
    } catch (err) {
      throw toIoError(err, `reading ${join(absDir, d.name)}`);
    }
  };
  walk(root, '');

  const total = { files: files.length, bytes: files.reduce((a, f) => a + f.size, 0) };
  const done = { files: 0, bytes: 0 };
  const readers = new Limiter(options.fileConcurrency ?? 8);
  const fileEntries = await Promise.all(
    files.map((f) =>
      readers.run(async (): Promise<FileEntry> => {
        let content: Buffer | AsyncIterable<Uint8Array>;
        try {
          // Small files in one synchronous read: far cheaper than the async round trips (see fs.ts).
          content = f.size <= WHOLE_READ_BYTES ? readFileSync(f.abs) : createReadStream(f.abs, { highWaterMark: 1 << 20 });
        } catch (err) {
          throw toIoError(err, `reading ${f.abs}`);
        }
        const { size, chunks } = await writer.writeFile(content);
        done.files++;
        done.bytes += size;
        options.onProgress?.(done, total);
        return { path: f.path, type: 'file', mode: f.mode, size, chunks };
      }),
    ),
  );
  return writer.finish(entries.concat(fileEntries), options.extras);
}

/**
 * Stores one byte stream as a tree of one file at `path` (mode 0644): for protocol bodies that must
 * come back byte for byte (a signed Turborepo artifact), chunked and deduplicated like any file.
 * @throws CascacheError `E_BAD_INPUT` for an unsafe path, `E_TOO_LARGE` past `maxBytes`.
 */
export function ingestStream(store: BlobStore, path: string, body: AsyncIterable<Uint8Array>, options: IngestOptions & { maxBytes?: number } = {}): Promise<IngestResult> {
  assertSafePath(path, 'stream path');
  return inBatch(store, async (s) => {
    const writer = new ChunkWriter(s, options);
    const { size, chunks } = await writer.writeFile(body, options.maxBytes);
    return writer.finish([{ path, type: 'file', mode: 0o644, size, chunks }], options.extras);
  });
}

/**
 * Builds a manifest and chunk blobs from a tar stream (ustar, pax, GNU long names; gunzip first if
 * needed). Hard links become copies of the file they name; the root entry (`./`) is skipped.
 * Later entries for the same path replace earlier ones, as tar extraction does.
 * @throws CascacheError `E_BAD_INPUT` for hostile or unsupported entries, `E_TOO_LARGE` past
 * `limits`, `E_BAD_INPUT` for a truncated or corrupt archive.
 */
export function ingestTar(store: BlobStore, tar: AsyncIterable<Uint8Array>, options: TarIngestOptions = {}): Promise<IngestResult> {
  // One batch: a local store appends the new chunks to one pack, and drops them if the tar is rejected.
  return inBatch(store, (s) => ingestTarInto(s, tar, options));
}

async function ingestTarInto(store: BlobStore, tar: AsyncIterable<Uint8Array>, options: TarIngestOptions): Promise<IngestResult> {
  const limits = { ...DEFAULT_TAR_LIMITS, ...options.limits };
  const writer = new ChunkWriter(store, options);
  const entries = new Map<string, ManifestEntry>();
  const extras: ManifestExtras = { ...options.extras };
  // Old-style (v7) headers carry no ustar magic; Nx's client writes its terminalOutput and code
  // entries that way (`tar::Header::new_old()`). Header checksums are still verified.
  const extract = tarStream.extract({ allowUnknownFormat: true } as Parameters<typeof tarStream.extract>[0]);
  const source = Readable.from(tar);
  source.on('error', (err) => extract.destroy(err));
  source.pipe(extract);
  let count = 0;
  let total = 0;
  try {
    for await (const entry of extract) {
      const h = entry.header;
      if (++count > limits.maxEntries) throw tooLarge(`tar has more than ${limits.maxEntries} entries`);
      const path = normalizeEntryPath(h.name);
      const decodeExtra = options.extraEntries && Object.hasOwn(options.extraEntries, path) ? options.extraEntries[path] : undefined;
      if (decodeExtra && (h.type === 'file' || h.type === 'contiguous-file')) {
        extras[path] = decodeExtra(await readAll(entry as unknown as AsyncIterable<Uint8Array>, MANIFEST_LIMITS.extraBytes));
        continue;
      }
      if (path === '') {
        entry.resume();
        continue;
      }
      assertSafePath(path, 'tar entry');
      switch (h.type) {
        case 'file':
        case 'contiguous-file': {
          const declared = h.size ?? 0;
          if (declared > limits.maxFileBytes) throw tooLarge(`${path} is ${declared} bytes, over the ${limits.maxFileBytes}-byte limit`);
          total += declared;
          if (total > limits.maxTotalBytes) throw tooLarge(`tar content exceeds ${limits.maxTotalBytes} bytes`);
          const { size, chunks } = await writer.writeFile(entry as unknown as AsyncIterable<Uint8Array>, limits.maxFileBytes);
          entries.set(path, { path, type: 'file', mode: permissionBits(h.mode ?? 0o644), size, chunks });
          break;
        }
        case 'directory':
          entry.resume();
          entries.set(path, { path, type: 'dir', mode: permissionBits(h.mode ?? 0o755) });
          break;
        case 'symlink':
          entry.resume();
          if (!h.linkname) throw new CascacheError(ErrorCodes.BAD_INPUT, `symlink ${path} has no target`);
          entries.set(path, { path, type: 'symlink', target: h.linkname });
          break;
        case 'link': {
          entry.resume();
          const targetPath = normalizeEntryPath(h.linkname ?? '');
          const target = entries.get(targetPath);
          if (!target || target.type !== 'file') {
            throw new CascacheError(ErrorCodes.BAD_INPUT, `hard link ${path} names ${JSON.stringify(h.linkname)}, which is not an earlier file`);
          }
          // A hard link shares its target's inode, so it has the target's mode too.
          entries.set(path, { ...target, path });
          break;
        }
        default:
          throw new CascacheError(ErrorCodes.BAD_INPUT, `tar entry ${path} has unsupported type ${h.type ?? 'unknown'}`);
      }
    }
  } catch (err) {
    source.destroy();
    extract.destroy();
    if (isCascacheError(err)) throw err;
    throw new CascacheError(ErrorCodes.BAD_INPUT, `tar stream is malformed or truncated: ${(err as Error).message}`, { cause: err });
  }
  return writer.finish([...entries.values()], extras);
}

function tooLarge(message: string): CascacheError {
  return new CascacheError(ErrorCodes.TOO_LARGE, message);
}

/**
 * Yields the raw bytes of `digests` in order, keeping up to `window` fetches in flight.
 * @throws CascacheError `E_NOT_FOUND` for a missing chunk, `E_INTEGRITY` for a corrupt one.
 */
export async function* readChunks(store: BlobStore, digests: readonly Digest[], window = 8): AsyncGenerator<Buffer> {
  const inflight: Promise<Buffer | null>[] = [];
  let next = 0;
  try {
    while (next < digests.length || inflight.length > 0) {
      while (next < digests.length && inflight.length < window) {
        const p = fetchBlob(store, digests[next++]!);
        p.catch(() => undefined); // observed below; avoid unhandled rejections while queued
        inflight.push(p);
      }
      const idx = next - inflight.length;
      const buf = await inflight.shift()!;
      if (buf === null) throw new CascacheError(ErrorCodes.NOT_FOUND, `chunk ${digests[idx]} is missing from ${store.name}`, { details: { digest: digests[idx] } });
      yield buf;
    }
  } finally {
    await Promise.allSettled(inflight);
  }
}

/** Options for the materialize functions. */
export interface MaterializeOptions {
  /** Chunk fetches in flight per file. Default 8. */
  window?: number;
}

/** Resolves a manifest argument (a manifest, or the digest of one) to a manifest. */
async function resolveManifest(store: BlobStore, manifest: Manifest | Digest): Promise<Manifest> {
  if (typeof manifest !== 'string') return manifest;
  const m = await getManifest(store, manifest);
  if (!m) throw new CascacheError(ErrorCodes.NOT_FOUND, `manifest ${manifest} is missing from ${store.name}`, { details: { digest: manifest } });
  return m;
}

/**
 * Writes a tree into `target`, which must not exist or be an empty directory. Files are created
 * exclusively (`wx`), never through a link; modes are applied after content (directories last,
 * deepest first) so read-only directories still restore.
 * @throws CascacheError `E_EXISTS` when `target` is not empty, `E_NOT_FOUND` / `E_INTEGRITY` for
 * missing or corrupt chunks (the partly written target is left for the caller to remove), `E_IO`.
 */
export async function materializeToDirectory(
  store: BlobStore,
  manifest: Manifest | Digest,
  target: string,
  options: MaterializeOptions = {},
): Promise<Manifest> {
  const m = await resolveManifest(store, manifest);
  try {
    const existing = await fsp.readdir(target);
    if (existing.length > 0) throw new CascacheError(ErrorCodes.EXISTS, `restore target ${target} is not empty`, { details: { target } });
  } catch (err) {
    if (isCascacheError(err)) throw err;
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw toIoError(err, `checking ${target}`);
  }
  try {
    await fsp.mkdir(target, { recursive: true });
    const made = new Set<string>([target]);
    const ensureParent = (abs: string): void => {
      const parent = dirname(abs);
      if (made.has(parent)) return;
      mkdirSync(parent, { recursive: true });
      made.add(parent);
    };
    const dirModes: Array<[string, number]> = [];
    let n = 0;
    for (const e of m.entries) {
      const abs = join(target, ...e.path.split('/'));
      ensureParent(abs);
      if (e.type === 'dir') {
        mkdirSync(abs, { recursive: true, mode: 0o700 });
        made.add(abs);
        dirModes.push([abs, e.mode]);
      } else if (e.type === 'symlink') {
        symlinkSync(e.target, abs);
      } else if (e.size <= WHOLE_READ_BYTES) {
        const parts: Buffer[] = [];
        for await (const buf of readChunks(store, e.chunks, options.window ?? 8)) parts.push(buf);
        const content = parts.length === 1 ? parts[0]! : Buffer.concat(parts);
        if (content.length !== e.size) throw sizeMismatch(e, content.length);
        writeFileSync(abs, content, { flag: 'wx', mode: 0o600 });
        chmodSync(abs, e.mode);
      } else {
        await writeFileFromChunks(store, e, abs, options.window ?? 8);
      }
      if (++n % 64 === 0) await yieldToEventLoop();
    }
    for (const [abs, mode] of dirModes.reverse()) chmodSync(abs, mode);
  } catch (err) {
    throw toIoError(err, `restoring into ${target}`);
  }
  return m;
}

function sizeMismatch(e: FileEntry, actual: number): CascacheError {
  return new CascacheError(ErrorCodes.INTEGRITY, `${e.path}: chunks hold ${actual} bytes, manifest says ${e.size}`, { details: { path: e.path } });
}

async function writeFileFromChunks(store: BlobStore, e: FileEntry, abs: string, window: number): Promise<void> {
  const fh = await fsp.open(abs, 'wx', 0o600);
  let written = 0;
  try {
    for await (const buf of readChunks(store, e.chunks, window)) {
      written += buf.length;
      if (written > e.size) break;
      await fh.write(buf);
    }
    if (written !== e.size) throw sizeMismatch(e, written);
    await fh.chmod(e.mode);
  } finally {
    await fh.close();
  }
}

/** Options for {@link materializeToTar}. */
export interface TarOutputOptions extends MaterializeOptions {
  /** Smallest piece the stream yields, bytes (the last may be shorter). Default 256 KiB. */
  pieceBytes?: number;
  /** mtime written for every entry. Default: now. */
  mtime?: Date;
  /**
   * Extras to write back as top-level files before the tree, with an encoder from the stored
   * value (the inverse of {@link TarIngestOptions.extraEntries}). Extras without an encoder are
   * not written.
   */
  extraEntries?: Record<string, (value: string | number | boolean) => Buffer>;
}

/**
 * Streams a tree as an uncompressed POSIX tar (pipe it through gzip or zstd as a protocol needs).
 * Reads chunks as the consumer pulls, so memory stays bounded by the prefetch window.
 * The stream errors with `E_NOT_FOUND` / `E_INTEGRITY` if a chunk is missing or corrupt.
 */
export async function materializeToTar(store: BlobStore, manifest: Manifest | Digest, options: TarOutputOptions = {}): Promise<Readable> {
  const m = await resolveManifest(store, manifest);
  const pack = tarStream.pack();
  const mtime = options.mtime ?? new Date();
  const addEntry = (header: Partial<tarStream.Header> & { name: string }, body?: Buffer): Promise<void> =>
    new Promise((resolve, reject) => {
      const cb = (err?: Error | null): void => (err ? reject(err) : resolve());
      if (body === undefined) pack.entry(header, cb);
      else pack.entry(header, body, cb);
    });

  const produce = async (): Promise<void> => {
    for (const [name, encode] of Object.entries(options.extraEntries ?? {})) {
      const value = m.extras?.[name];
      if (value !== undefined) await addEntry({ name, type: 'file', mode: 0o644, mtime }, encode(value));
    }
    for (const e of m.entries) {
      if (e.type === 'dir') {
        await addEntry({ name: `${e.path}/`, type: 'directory', mode: e.mode, mtime });
      } else if (e.type === 'symlink') {
        await addEntry({ name: e.path, type: 'symlink', linkname: e.target, mode: 0o777, mtime });
      } else {
        await writeTarFile(store, pack, e, mtime, options.window ?? 8);
      }
    }
    pack.finalize();
  };
  produce().catch((err) => pack.destroy(err as Error));
  // tar-stream 3 streams are streamx streams; expose a Node Readable, in large pieces.
  return Readable.from(coalesce(pack as unknown as AsyncIterable<Buffer>, options.pieceBytes ?? TAR_PIECE_BYTES), { objectMode: false });
}

/** Default piece size of {@link materializeToTar}'s output, bytes. */
const TAR_PIECE_BYTES = 256 * 1024;

async function writeTarFile(store: BlobStore, pack: tarStream.Pack, e: FileEntry, mtime: Date, window: number): Promise<void> {
  let done!: (err?: Error | null) => void;
  const finished = new Promise<void>((resolve, reject) => {
    done = (err) => (err ? reject(err) : resolve());
  });
  finished.catch(() => undefined); // awaited below on success; on failure the error travels through the pack
  const sink = pack.entry({ name: e.path, type: 'file', size: e.size, mode: e.mode, mtime }, (err) => done(err));
  sink.on('error', () => undefined); // the same failure reaches the consumer through the pack stream
  let written = 0;
  try {
    for await (const buf of readChunks(store, e.chunks, window)) {
      written += buf.length;
      if (written > e.size) break;
      if (!sink.write(buf)) {
        // Wake on close too: a consumer that goes away (a client disconnecting) must not leave
        // this loop waiting for a drain that never comes.
        await new Promise<void>((resolve) => {
          const wake = (): void => {
            sink.off('drain', wake);
            sink.off('close', wake);
            resolve();
          };
          sink.on('drain', wake);
          sink.on('close', wake);
        });
        if (sink.destroyed) throw new CascacheError(ErrorCodes.UNAVAILABLE, 'tar consumer went away');
      }
    }
    if (written !== e.size) throw sizeMismatch(e, written);
  } catch (err) {
    sink.destroy(err as Error);
    throw err;
  }
  sink.end(undefined);
  await finished;
}
