/**
 * Hot bodies: recently stored or served protocol bodies (an Nx tar.gz) kept whole on disk, so a hot
 * artifact is answered with a file stream instead of a tar rebuilt from chunks and compressed on every
 * request (bazel-remote answers a hit with one lookup and a sendfile). The chunk store stays the
 * truth: this is a bounded cache in front of it.
 *
 * ```
 * <dir>/<protocol>-<hash>.<manifest>.<blake3 of the body>.body    a body: the entry it serves, what it must hash to
 * <dir>/tmp/                                                      bodies being written
 * ```
 * - Bounded by `maxBytes`, least recently used out (access order kept in memory, rebuilt from write
 *   times at start). A body larger than a quarter of the bound is not kept.
 * - A body is hashed before it is first served by a process, and again whenever its file's size or
 *   mtime changed; one that does not match its name (a damaged disk) is deleted and reported as
 *   absent, so the caller rebuilds it from the chunks. Bodies up to 1 MiB are then served from
 *   memory (64 MiB in all, least recently used back to files).
 * - A body is bound to the entry it was stored or served for (its manifest digest): it is served
 *   only while the key's entry still names that manifest, so GC, eviction, invalidation, a healed
 *   entry and one replaced by a shared tier's winner (layered.ts) all reach it. Files in an older
 *   layout are deleted at start.
 */
import { randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, type ReadStream } from 'node:fs';
import { join } from 'node:path';
import { PassThrough, Writable } from 'node:stream';
import { digestFile, DigestHasher, digestOf, isDigest } from '@cascache/core';

const NAME_RE = /^([a-z]+-[0-9A-Za-z]{1,64})\.([0-9a-f]{64})\.([0-9a-f]{64})\.body$/;
/** Bodies up to this size are served from memory once read, bytes. */
const MEMORY_BODY_BYTES = 1024 * 1024;
/** Memory all such bodies may take together, bytes. */
const MEMORY_BYTES = 64 * 1024 * 1024;

export class BodyCache {
  /** Bodies by id (`nx-<hash>`), least recently used first. */
  private readonly bodies = new Map<string, { file: string; entry: string; digest: string; size: number; checked?: string; bytes?: Buffer }>();
  private total = 0;
  /** Bytes of bodies held in memory. */
  private memory = 0;
  private readonly tmp: string;

  /** @param maxBytes bound on the bodies kept, bytes (> 0). */
  constructor(
    readonly dir: string,
    readonly maxBytes: number,
  ) {
    // Each process writes in its own folder; folders an hour old are from processes that died.
    const tmpRoot = join(dir, 'tmp');
    mkdirSync(tmpRoot, { recursive: true });
    for (const name of readdirSync(tmpRoot)) {
      try {
        if (Date.now() - statSync(join(tmpRoot, name)).mtimeMs > 3_600_000) rmSync(join(tmpRoot, name), { recursive: true, force: true });
      } catch {
        /* removed meanwhile */
      }
    }
    this.tmp = join(tmpRoot, `${process.pid}.${randomBytes(4).toString('hex')}`);
    mkdirSync(this.tmp, { recursive: true });
    const found: Array<{ id: string; file: string; entry: string; digest: string; size: number; mtime: number }> = [];
    for (const name of readdirSync(dir)) {
      const m = NAME_RE.exec(name);
      if (!m || !isDigest(m[2]) || !isDigest(m[3])) {
        if (name.endsWith('.body')) rmSync(join(dir, name), { force: true }); // an older layout: not bound to an entry
        continue;
      }
      try {
        const st = statSync(join(dir, name));
        found.push({ id: m[1]!, file: join(dir, name), entry: m[2]!, digest: m[3]!, size: st.size, mtime: st.mtimeMs });
      } catch {
        /* removed meanwhile */
      }
    }
    for (const b of found.sort((x, y) => x.mtime - y.mtime)) {
      this.drop(b.id); // a body of the same key for an older entry
      this.add(b.id, b);
    }
    this.trim();
  }

  /** Whether a body is kept for `id` (a map lookup: no file is touched). */
  has(id: string): boolean {
    return this.bodies.has(id);
  }

  /**
   * A kept body as a stream, after checking it hashes to its name; null when absent, damaged or
   * kept for another entry than `entry` (a manifest digest; then deleted). Marks it recently used.
   */
  async open(id: string, entry: string): Promise<{ stream: ReadStream | Buffer; size: number } | null> {
    const b = this.bodies.get(id);
    if (!b) return null;
    if (b.entry !== entry) {
      this.drop(id);
      return null;
    }
    if (b.bytes) {
      this.bodies.delete(id);
      this.bodies.set(id, b);
      return { stream: b.bytes, size: b.size };
    }
    if (b.size <= MEMORY_BODY_BYTES) return this.load(id, b);
    // Bodies are never rewritten (renamed into place whole): hashed once per process, and again
    // only if the file's size or mtime changed since.
    let st;
    try {
      st = statSync(b.file);
    } catch {
      this.drop(id);
      return null;
    }
    if (b.checked !== `${st.size}:${st.mtimeMs}`) {
      let ok = false;
      try {
        ok = st.size === b.size && (await digestFile(b.file)) === b.digest;
      } catch {
        ok = false;
      }
      if (!ok) {
        this.drop(id);
        return null;
      }
      b.checked = `${st.size}:${st.mtimeMs}`;
    }
    this.bodies.delete(id);
    this.bodies.set(id, b);
    return { stream: createReadStream(b.file, { highWaterMark: Math.min(256 * 1024, Math.max(16 * 1024, b.size)) }), size: b.size };
  }

  /**
   * Reads a small body into memory (verified), where it is served from next time without a file
   * operation: per GET, a file stream costs an open, a stat, reads and a close on the thread pool.
   */
  private load(id: string, b: { file: string; entry: string; digest: string; size: number; bytes?: Buffer }): { stream: Buffer; size: number } | null {
    let bytes: Buffer;
    try {
      bytes = readFileSync(b.file);
    } catch {
      this.drop(id);
      return null;
    }
    if (bytes.length !== b.size || digestOf(bytes) !== b.digest) {
      this.drop(id);
      return null;
    }
    b.bytes = bytes;
    this.memory += bytes.length;
    // Memory is bounded too: the least recently used bodies go back to being files.
    for (const [other, o] of this.bodies) {
      if (this.memory <= MEMORY_BYTES) break;
      if (o.bytes && other !== id) {
        this.memory -= o.bytes.length;
        o.bytes = undefined;
      }
    }
    this.bodies.delete(id);
    this.bodies.set(id, b);
    return { stream: bytes, size: b.size };
  }

  /** Whether a body of `size` bytes would be kept (a quarter of the bound at most). */
  fits(size: number): boolean {
    return size <= this.maxBytes / 4;
  }

  /**
   * Takes a finished body file (moved, not copied) whose bytes hash to `digest`, the body of the
   * entry naming manifest `entry`; it replaces a body kept for another entry. With `hashed`, the
   * caller hashed the bytes as it wrote them: the first `open` in this process need not hash again.
   */
  keep(id: string, entry: string, path: string, digest: string, size: number, options: { hashed?: boolean } = {}): void {
    if (!this.fits(size) || this.bodies.get(id)?.entry === entry) {
      rmSync(path, { force: true });
      return;
    }
    this.drop(id);
    const file = join(this.dir, `${id}.${entry}.${digest}.body`);
    try {
      renameSync(path, file);
    } catch {
      rmSync(path, { force: true });
      return;
    }
    this.add(id, { file, entry, digest, size });
    if (options.hashed) {
      try {
        const st = statSync(file);
        if (st.size === size) this.bodies.get(id)!.checked = `${st.size}:${st.mtimeMs}`;
      } catch {
        /* checked on first open */
      }
    }
    this.trim();
  }

  /**
   * A sink that copies a body as it is sent and keeps it if it ends whole and within bounds. Never
   * fails the stream it is fed from: on any error the copy is dropped.
   */
  capture(id: string, entry: string): Writable {
    if (this.bodies.get(id)?.entry === entry) return new PassThrough().resume();
    const path = join(this.tmp, `${id}.${randomBytes(6).toString('hex')}`);
    const out = createWriteStream(path);
    const hasher = new DigestHasher();
    let size = 0;
    let failed = false;
    /** A write waiting for the file to drain; released by an error too, so the body never stalls. */
    let waiting: (() => void) | null = null;
    const release = (): void => {
      const w = waiting;
      waiting = null;
      w?.();
    };
    out.on('error', () => {
      failed = true;
      release();
    });
    out.on('drain', release);
    return new Writable({
      write: (chunk: Buffer, _enc, done) => {
        size += chunk.length;
        if (failed || size > this.maxBytes / 4) {
          failed = true;
          done();
          return;
        }
        hasher.update(chunk);
        if (out.write(chunk)) done();
        else waiting = () => done();
      },
      final: (done) => {
        const finish = (): void => {
          if (failed) rmSync(path, { force: true });
          else this.keep(id, entry, path, hasher.digest(), size);
          done();
        };
        if (failed) {
          out.destroy();
          finish();
        } else out.end(finish);
      },
      destroy: (_err, done) => {
        out.destroy();
        rmSync(path, { force: true });
        done(null);
      },
    });
  }

  /** Forgets and deletes a body. */
  drop(id: string): void {
    const b = this.bodies.get(id);
    if (!b) return;
    this.bodies.delete(id);
    this.total -= b.size;
    if (b.bytes) this.memory -= b.bytes.length;
    rmSync(b.file, { force: true });
  }

  private add(id: string, b: { file: string; entry: string; digest: string; size: number }): void {
    this.bodies.set(id, { file: b.file, entry: b.entry, digest: b.digest, size: b.size });
    this.total += b.size;
  }

  private trim(): void {
    for (const id of this.bodies.keys()) {
      if (this.total <= this.maxBytes) break;
      this.drop(id);
    }
  }
}
