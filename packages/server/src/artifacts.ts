/**
 * The artifact service: what every protocol adapter (nx-api.ts, turbo-api.ts) does with a task
 * output, over one store. Adapters only translate their wire format (gzip or zstd, headers, status
 * codes); storing, looking up, hot bodies, deferred ingest and the activity log live here, so a new
 * protocol is a new adapter file, not a fork.
 *
 * - `store`: a tar stream in -> chunks and a manifest (one batch: a local pack) -> a write-once
 *   action-cache entry -> journaled for the remote tiers.
 * - `find`: an entry (through the remote tiers when there are any), or a hot body.
 * - `defer`: answer first, store behind the answer (the agent only; see `ServerOptions.deferIngest`).
 */
import { createReadStream, createWriteStream, mkdirSync, rmSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline, Transform, type Readable, type Writable } from 'node:stream';
import { pipeline as pipelineAsync } from 'node:stream/promises';
import { randomBytes } from 'node:crypto';
import type { FastifyBaseLogger } from 'fastify';
import {
  CascacheError,
  DigestStream,
  ErrorCodes,
  ingestStream,
  ingestTar,
  isCascacheError,
  Limiter,
  type AcHit,
  type ActionCache,
  type BlobStore,
  type Digest,
  type LayeredStore,
  type ManifestExtras,
  type TarLimits,
} from '@cascache/core';
import type { BodyCache } from './body-cache';
import type { ServerMetrics } from './metrics';
import type { ActivityLog } from './report';
import { ByteCounter, type UploadLimits } from './upload-guard';

/**
 * Named points of an upload where the fault suite kills the process (`CASCACHE_CRASH_AT` at the
 * edges): `spooled`: the body on disk, not answered yet (deferred ingest, the agent only: the kill
 * lands while the client waits); `ingested`: every chunk and the manifest written, no entry yet;
 * `entry-written`: the entry written, the upload neither journaled for remote tiers nor answered.
 */
export const CRASH_POINTS = ['spooled', 'ingested', 'entry-written'] as const;
export type CrashPoint = (typeof CRASH_POINTS)[number];

/**
 * Reads a crash point from configuration (`CASCACHE_CRASH_AT`); empty or absent is none.
 * @throws CascacheError `E_CONFIG` naming the valid points.
 */
export function parseCrashPoint(value: string | undefined, source: string): CrashPoint | undefined {
  if (!value) return undefined;
  if ((CRASH_POINTS as readonly string[]).includes(value)) return value as CrashPoint;
  throw new CascacheError(ErrorCodes.CONFIG, `${source} must be one of ${CRASH_POINTS.join(', ')}, not ${JSON.stringify(value)}`);
}

/** The outcome of one upload, whatever its protocol. */
export interface UploadEvent {
  /** The protocol's hash (Nx: decimal; Turbo: `turbo:<team>:<hash>`). */
  hash: string;
  outcome: 'stored' | 'conflict' | 'rejected' | 'failed';
  /** True when the body was stored after the upload was answered (`deferIngest`). */
  deferred?: boolean;
  /** Error code when rejected or failed. */
  code?: string;
  bytesReceived?: number;
  bytesStored?: number;
}

export interface ArtifactServiceOptions {
  blobs: BlobStore;
  actionCache: ActionCache;
  layered?: LayeredStore;
  limits: TarLimits & UploadLimits;
  bodies: BodyCache | null;
  activity: ActivityLog;
  log: FastifyBaseLogger;
  onUpload?: (event: UploadEvent) => void;
  metrics: ServerMetrics;
  deferIngest?: { spoolDir: string; concurrency?: number };
  /** Where GET bodies are assembled before they are answered ({@link ArtifactService.wholeBody}). */
  spoolDir: string;
  /** Called at each {@link CrashPoint} of an upload (the fault suite's kills); absent in normal use. */
  atPoint?: (point: CrashPoint) => void;
}

/** One artifact: where its entry lives and what the activity log and hot bodies call it. */
export interface ArtifactRef {
  /** The protocol it came through (metrics labels). */
  tool: 'nx' | 'turbo';
  namespace: string;
  key: Digest;
  /** Activity-log id (Nx: the hash itself, which the plugin's report asks about). */
  id: string;
  /** Hot-body id, `<protocol>-<alphanumerics>` (body-cache.ts). */
  bodyId: string;
}

/** What `store` needs besides the tar: how to read the tool's extra entries, and what it requires. */
export interface StoreRequest {
  ref: ArtifactRef;
  writer: string;
  /** The decompressed tar (or, with `asFile`, the bytes to keep). Errors it emits are reported as their cause. */
  body: AsyncIterable<Uint8Array>;
  /** Keep the body as it is, as the one file at this path, instead of unpacking a tar. */
  asFile?: string;
  received: ByteCounter;
  deferred: boolean;
  /** Tar entries that become manifest extras instead of files (Nx: `terminalOutput`, `code`). */
  extraEntries?: Record<string, (bytes: Buffer) => string | number | boolean>;
  /** Extras known from the request itself (Turbo: the duration header). */
  extras?: ManifestExtras;
  /** Throws E_BAD_INPUT when the stored manifest lacks something the protocol requires. */
  validate?: (extras: ManifestExtras) => void;
}

export interface Stored {
  digest: Digest;
  bytesReceived: number;
  bytesStored: number;
}

export class ArtifactService {
  /** Bodies answered and not yet stored (`deferIngest`), by activity id. Never rejects. */
  /** Uploads being stored behind their answer, by hot-body id (one per namespace and hash). */
  private readonly pending = new Map<string, { id: string; done: Promise<void> }>();
  private readonly ingestSlots: Limiter;

  constructor(private readonly o: ArtifactServiceOptions) {
    this.ingestSlots = new Limiter(o.deferIngest?.concurrency ?? 1);
  }

  get deferring(): boolean {
    return this.o.deferIngest !== undefined;
  }

  /** True while a body for this artifact is being stored behind its answer. */
  isPending(ref: ArtifactRef): boolean {
    return this.pending.has(ref.bodyId);
  }

  /**
   * True when the artifact is stored and servable (or being stored): a write-once key may not be
   * written again. An entry whose manifest or chunks are gone is not: a new upload of it heals it.
   */
  async exists(ref: ArtifactRef): Promise<boolean> {
    return this.pending.has(ref.bodyId) || (await this.o.actionCache.get(ref.namespace, ref.key)) !== null;
  }

  /**
   * A hot body for the artifact, served only while its entry here still names the manifest the body
   * was kept for; null otherwise. Waits for a body of it still being stored first.
   */
  async hot(ref: ArtifactRef): Promise<{ stream: Readable | Buffer; size: number } | null> {
    await this.pending.get(ref.bodyId)?.done;
    const bodies = this.o.bodies;
    if (!bodies?.has(ref.bodyId)) return null;
    const entry = await this.o.actionCache.peek(ref.namespace, ref.key);
    return entry ? bodies.open(ref.bodyId, entry.manifest) : null;
  }

  /**
   * The artifact's entry, through the remote tiers when there are any (a remote hit is promoted into
   * the local store). Null on a miss. @throws CascacheError for store failures (never a miss).
   */
  async find(ref: ArtifactRef): Promise<AcHit | null> {
    await this.pending.get(ref.bodyId)?.done;
    return this.o.layered ? this.o.layered.lookup(ref.namespace, ref.key) : this.o.actionCache.get(ref.namespace, ref.key);
  }

  /** The artifact's entry in the local store only (no remote lookups). Null on a miss. */
  async findLocal(ref: ArtifactRef): Promise<AcHit | null> {
    await this.pending.get(ref.bodyId)?.done;
    return this.o.actionCache.get(ref.namespace, ref.key);
  }

  /**
   * A GET body rebuilt from chunks, streamed: `tar` through the protocol's `encoder` (gzip, zstd),
   * copied into a hot body when they are kept, and its bytes recorded as sent once it has all gone
   * out. A chunk that fails verification mid-way cuts the response: only for clients that take a
   * cut body as a miss (turbo 2.x does); Nx's needs {@link wholeBody}.
   */
  rebuiltBody(ref: ArtifactRef, hit: AcHit, tar: Readable, encoder: Transform): Readable {
    const sent = new ByteCounter();
    const capture = this.o.bodies?.capture(ref.bodyId, hit.entry.manifest);
    const stages = capture ? [encoder, tee(capture)] : [encoder];
    return pipeline([tar, ...stages, sent], (err) => {
      if (err) this.o.log.error({ err }, `streaming ${ref.id} failed`);
      else {
        this.o.activity.record(ref.id, { bytesSent: sent.bytes });
        this.o.metrics.served(ref.tool, sent.bytes);
      }
    }) as unknown as Readable;
  }

  /**
   * A GET body rebuilt from chunks and assembled whole before it is answered: `tar` through the
   * protocol's `encoder` into a file in the spool dir, then kept as a hot body when it fits (served
   * from there) or streamed once from its file and deleted. Nx's client fails the whole run on a
   * body that ends early (Nx 24: "Failed to read remote cache response body: error decoding response
   * body"), so a damaged chunk must surface before the status line is sent: as the error it throws
   * here, which the adapter answers as a miss.
   * @returns the body and its size in bytes; bytes sent are recorded here.
   * @throws CascacheError `E_INTEGRITY` / `E_NOT_FOUND` for a damaged or vanished chunk (quarantined
   *   by the store), `E_IO` for the spool file. The spool file is removed on every failure.
   */
  async wholeBody(ref: ArtifactRef, hit: AcHit, tar: Readable, encoder: Transform): Promise<{ stream: Readable | Buffer; size: number }> {
    mkdirSync(this.o.spoolDir, { recursive: true });
    const path = join(this.o.spoolDir, `get-${ref.bodyId}.${randomBytes(6).toString('hex')}`);
    const hashed = new DigestStream();
    try {
      await pipelineAsync(tar, encoder, hashed, createWriteStream(path));
    } catch (err) {
      rmSync(path, { force: true });
      throw err;
    }
    const size = hashed.length;
    const bodies = this.o.bodies;
    this.o.activity.record(ref.id, { bytesSent: size });
    this.o.metrics.served(ref.tool, size);
    if (bodies?.fits(size)) {
      // Another GET of it may have kept the same body meanwhile: serve that one (it is verified).
      const other = bodies.has(ref.bodyId) ? await bodies.open(ref.bodyId, hit.entry.manifest) : null;
      if (other) {
        rmSync(path, { force: true });
        return other;
      }
      bodies.keep(ref.bodyId, hit.entry.manifest, path, hashed.digest(), size, { hashed: true });
      const kept = await bodies.open(ref.bodyId, hit.entry.manifest);
      if (!kept) throw new CascacheError(ErrorCodes.IO, `the body of ${ref.id} could not be kept in ${bodies.dir}`);
      return kept;
    }
    // Not kept (too large, or no hot bodies): streamed once from its open file, already unlinked
    // (libuv opens files shareable for delete on Windows too), so no exit path leaves it behind.
    let file: FileHandle;
    try {
      file = await open(path, 'r');
    } finally {
      rmSync(path, { force: true });
    }
    return { stream: file.createReadStream({ highWaterMark: 256 * 1024 }), size };
  }

  /**
   * True when a GET failed on a damaged or vanished chunk (the store has quarantined it): logged and
   * counted as a miss, which the adapter answers 404, so the client runs the task and its upload
   * repairs the entry. False for any other error (a store failure is never a miss).
   */
  damagedIsMiss(ref: ArtifactRef, err: unknown, log: FastifyBaseLogger): boolean {
    if (!isCascacheError(err, ErrorCodes.INTEGRITY) && !isCascacheError(err, ErrorCodes.NOT_FOUND)) return false;
    log.warn({ err: { code: err.code, message: err.message }, id: ref.id }, 'stored artifact failed verification; answered as a miss');
    this.o.activity.record(ref.id, { misses: 1 });
    this.o.metrics.lookup(ref.tool, ref.namespace, false);
    return true;
  }

  /**
   * Stores one artifact: unpacks, chunks and writes the tar, then the write-once AC entry, then
   * journals it for the remote tiers. Reports the outcome to the activity log and `onUpload`.
   * @returns the stored figures, or null on a conflict (the key was stored meanwhile).
   * @throws CascacheError E_BAD_INPUT / E_TOO_LARGE / E_INTEGRITY for a hostile body, E_IO.
   */
  async store(r: StoreRequest): Promise<Stored | null> {
    const { ref, deferred } = r;
    try {
      let result;
      try {
        result = r.asFile
          ? await ingestStream(this.o.blobs, r.asFile, r.body, { extras: r.extras, maxBytes: this.o.limits.maxCompressedBytes })
          : await ingestTar(this.o.blobs, r.body, { limits: this.o.limits, extraEntries: r.extraEntries, extras: r.extras });
      } catch (err) {
        // Failures inside the caller's pipeline (decompression, limits) surface as its error: report the cause.
        const cause = (err as { cause?: unknown }).cause;
        throw isCascacheError(cause) ? cause : err;
      }
      r.validate?.(result.manifest.extras ?? {});
      this.o.atPoint?.('ingested');
      const put = await this.o.actionCache.put(ref.namespace, ref.key, { manifest: result.digest, size: result.logicalBytes, writer: r.writer });
      if (!put.created) {
        this.o.activity.record(ref.id, { conflicts: 1 });
        this.uploaded(ref, { outcome: 'conflict', deferred });
        return null;
      }
      this.o.atPoint?.('entry-written');
      if (this.o.layered) {
        // Stored locally already; a journal failure must not turn the upload into an error.
        await this.o.layered.recordUpload({ kind: 'ac', namespace: ref.namespace, key: ref.key }).catch((err) => this.o.log.warn({ err }, 'could not journal the upload to remote tiers'));
      }
      this.o.activity.record(ref.id, { stored: 1, bytesReceived: r.received.bytes, bytesStored: result.newBytes });
      this.uploaded(ref, { outcome: 'stored', bytesReceived: r.received.bytes, bytesStored: result.newBytes, deferred });
      return { digest: result.digest, bytesReceived: r.received.bytes, bytesStored: result.newBytes };
    } catch (err) {
      const rejected = isCascacheError(err) && err.code !== ErrorCodes.IO && err.code !== ErrorCodes.UNAVAILABLE;
      this.uploaded(ref, {
        outcome: isCascacheError(err, ErrorCodes.EXISTS) ? 'conflict' : rejected ? 'rejected' : 'failed',
        code: isCascacheError(err) ? err.code : undefined,
        deferred,
      });
      throw err;
    }
  }

  /** Records a conflict (a write-once key written again). */
  conflict(ref: ArtifactRef): void {
    this.o.activity.record(ref.id, { conflicts: 1 });
    this.uploaded(ref, { outcome: 'conflict' });
  }

  /** Tells `onUpload` and the metrics how an upload ended. */
  private uploaded(ref: ArtifactRef, e: Omit<UploadEvent, 'hash'>): void {
    this.o.metrics.upload(ref.tool, ref.namespace, e.outcome, e.bytesReceived, e.bytesStored);
    this.o.onUpload?.({ hash: ref.id, ...e });
  }

  /**
   * Spools a request body to disk, then stores it behind the answer with `store(file)`, one body at
   * a time; `find`, `hot` and `exists` of the artifact wait for it meanwhile. Kept hot when stored.
   * @returns false when another upload of the artifact finished spooling first (a conflict).
   * @throws CascacheError `E_IO` when spooling fails; `E_TOO_LARGE` past the upload limit.
   */
  async defer(ref: ArtifactRef, body: Readable, received: ByteCounter, store: (file: string) => Promise<Stored | null>): Promise<boolean> {
    const spool = this.o.deferIngest!.spoolDir;
    mkdirSync(spool, { recursive: true });
    const file = join(spool, `${ref.bodyId}.${randomBytes(6).toString('hex')}.body`);
    const spooled = new DigestStream();
    try {
      await pipelineAsync(body, received, spooled, createWriteStream(file, { flags: 'wx' }));
    } catch (err) {
      rmSync(file, { force: true });
      throw isCascacheError(err) ? err : new CascacheError(ErrorCodes.IO, `spooling the upload failed: ${(err as Error).message}`, { cause: err });
    }
    this.o.atPoint?.('spooled');
    if (this.pending.has(ref.bodyId)) {
      rmSync(file, { force: true });
      return false;
    }
    const job = this.ingestSlots
      .run(async () => {
        const stored = await store(file);
        // What the client sent is the body a GET would rebuild: keep it hot.
        if (stored && this.o.bodies) this.o.bodies.keep(ref.bodyId, stored.digest, file, spooled.digest(), received.bytes);
      })
      .catch((err) => this.o.log.warn({ err: { code: (err as { code?: string }).code, message: (err as Error).message }, hash: ref.id }, 'dropped an upload stored behind its answer'))
      .finally(() => {
        rmSync(file, { force: true });
        this.pending.delete(ref.bodyId);
      });
    this.pending.set(ref.bodyId, { id: ref.id, done: job.then(() => undefined) });
    return true;
  }

  /** A fresh read of a spooled body. */
  static open(file: string): Readable {
    return createReadStream(file);
  }

  /** How many of these activity ids are still being stored. */
  stillStoring(ids: Iterable<string>): number {
    const wanted = new Set(ids);
    return new Set([...this.pending.values()].filter((p) => wanted.has(p.id)).map((p) => p.id)).size;
  }

  /** Waits until the given artifacts (all, by default) are stored or dropped, at most `timeoutMs`. */
  async settled(ids?: Iterable<string>, timeoutMs = 60_000): Promise<void> {
    const wanted = ids ? new Set(ids) : null;
    const waits = [...this.pending.values()].filter((p) => !wanted || wanted.has(p.id)).map((p) => p.done);
    if (waits.length === 0) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.all(waits), new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs)))]);
    clearTimeout(timer);
  }
}

export { ByteCounter };

/** Passes bytes through and copies them into `sink` (never failing the stream for the copy's sake). */
function tee(sink: Writable): Transform {
  return new Transform({
    transform(chunk: Buffer, _enc, done) {
      sink.write(chunk, () => done(null, chunk));
    },
    flush(done) {
      sink.end(() => done());
    },
    destroy(err, done) {
      sink.destroy();
      done(err);
    },
  });
}
