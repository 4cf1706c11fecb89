/**
 * `createServer(options)`: a Fastify app over a cascache store, built without listening.
 *
 * Routes:
 * - `GET /healthz`: liveness, store signing mode; a wrong token is 401 (so clients can tell their
 *   own agent from a stranger on the port).
 * - Nx self-hosted cache API, as Nx's client uses it (nrwl/nx
 *   `packages/nx/src/native/cache/http_remote_cache.rs`): `GET /v1/cache/{hash}` -> 200 gzip tar or
 *   404; `PUT /v1/cache/{hash}` -> 200 stored, 409 exists, 403 read-only token, 401 no or bad token,
 *   400 malformed hash or hostile body. Keys are write-once. The tar's `terminalOutput` and `code`
 *   (4-byte big-endian) entries are kept as manifest extras.
 * - `POST /_cascache/report` `{hashes: string[], since?: ms, waitMs?: ms}`: what the server did for
 *   those Nx hashes (since a time, for one run's figures), after waiting up to `waitMs` for bodies
 *   still being stored (`pending`: how many still are), plus upload totals to remote tiers.
 * - cascache's chunk API under `/cas/v1/` (chunk-api.ts), with `chunkApi`.
 * - Run records and prefetch, `/_cascache/run` and `/_cascache/prefetch` (runs-api.ts).
 * - `POST /_cascache/flush` `{timeoutMs?: ms}`: waits until the upload journal is drained (or the
 *   timeout passes) and reports what was sent and what dedup saved; for CI jobs that must not end
 *   with uploads pending.
 *
 * With `layered`, lookups go through the remote tiers (promoting hits into the local store) and every
 * stored entry is journaled for upload; without it the server is local-only.
 *
 * Errors map to statuses here and only here: E_BAD_INPUT/E_TOO_LARGE/E_INTEGRITY on input -> 400,
 * E_EXISTS -> 409, anything else -> 500 (logged); a store failure is never reported as a miss.
 */
import { randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { pipeline, Transform, type Readable, type Writable } from 'node:stream';
import { pipeline as pipelineAsync } from 'node:stream/promises';
import { createGzip, createGunzip, constants as zlibConstants } from 'node:zlib';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest, type FastifyServerOptions } from 'fastify';
import {
  CascacheError,
  computeActionKey,
  DigestStream,
  ErrorCodes,
  ingestTar,
  isCascacheError,
  Limiter,
  materializeToTar,
  type AcStore,
  type ActionCache,
  type BlobStore,
  type FsBlobStore,
  type LayeredStore,
  type RootStore,
  type TarLimits,
} from '@cascache/core';
import { Authorizer, type Access, type Principal, type TokenConfig } from './auth';
import { BodyCache } from './body-cache';
import { registerChunkApi } from './chunk-api';
import { ActivityLog } from './report';
import { registerRunsApi } from './runs-api';
import { ByteCounter, DEFAULT_UPLOAD_LIMITS, InflateGuard, type UploadLimits } from './upload-guard';

/** Options for {@link createServer}. */
export interface ServerOptions {
  blobs: BlobStore;
  actionCache: ActionCache;
  /** Remote tiers behind the local store (`blobs` and `actionCache` must be its local tier). */
  layered?: LayeredStore;
  /** Serve cascache's chunk API (`/cas/v1/...`) from this store, so others can use it as an HTTP tier. */
  chunkApi?: { blobs: FsBlobStore; entries: AcStore; roots: RootStore; maxUploadBytes?: number };
  /** Action-cache namespace for Nx entries. Default `default`. */
  namespace?: string;
  /** Tokens; none configured means every request may read and write (bind to loopback only). */
  tokens?: TokenConfig;
  /**
   * gzip level of GET bodies: 0 (stored blocks, no compression work: loopback, the agent) or
   * 1 (fast, default) to 9. Nx's client inflates any level.
   */
  gzipLevel?: number;
  /** Bounds on uploads: tar entry count and sizes, compressed size, decompression ratio. */
  limits?: TarLimits & UploadLimits;
  /** Fastify/pino logger options; default off. */
  logger?: FastifyServerOptions['logger'];
  /** Called on every request (the agent's idle timer). */
  onRequest?: () => void;
  /** Told how every upload ended (metrics, tests). */
  onUpload?: (event: UploadEvent) => void;
  /**
   * Answer an Nx PUT once its body is on disk and store it behind the answer (the agent). Nx waits
   * for each PUT before it starts the task's dependents, so an inline ingest put chunking, hashing
   * and compression on the build's critical path. A GET, a second PUT or a report for a hash whose
   * body is still being stored waits for it; a body that turns out hostile is dropped (logged) rather
   * than answered 400, so use this only where the client is trusted (a loopback agent). Off by default.
   */
  deferIngest?: { spoolDir: string; concurrency?: number };
  /**
   * Keep recently stored and served Nx bodies whole on disk, up to `maxBytes`, and answer a GET of
   * one with a file stream instead of rebuilding its tar (body-cache.ts). Off by default.
   */
  hotBodies?: { dir: string; maxBytes: number };
}

/** The outcome of one `PUT /v1/cache/{hash}`. */
export interface UploadEvent {
  hash: string;
  outcome: 'stored' | 'conflict' | 'rejected' | 'failed';
  /** True when the body was stored after the PUT was answered (`deferIngest`). */
  deferred?: boolean;
  /** Error code when rejected or failed. */
  code?: string;
  bytesReceived?: number;
  bytesStored?: number;
}

/** Nx stores the task's exit code as 4 big-endian bytes and its terminal output as UTF-8. */
const NX_EXTRAS_IN = {
  terminalOutput: (b: Buffer) => b.toString('utf8'),
  code: (b: Buffer) => {
    if (b.length !== 4) throw new Error('code entry must be 4 bytes');
    return b.readUInt32BE(0);
  },
};
const NX_EXTRAS_OUT = {
  terminalOutput: (v: string | number | boolean) => Buffer.from(String(v), 'utf8'),
  code: (v: string | number | boolean) => {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(Number(v) >>> 0);
    return b;
  },
};

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

/**
 * zlib's output piece size for GET bodies, bytes. Each piece is a thread-pool round trip; the
 * default 16 KiB made gzip cost more than reading and decompressing the chunks (bench/).
 */
const GZIP_CHUNK_BYTES = 256 * 1024;

/** An optional duration or time in a request body: absent, or a finite number >= 0 (ms). */
const isOptionalMs = (v: unknown): boolean => v === undefined || (Number.isFinite(v) && (v as number) >= 0);

/** Nx task hashes are decimal strings. */
const NX_HASH_RE = /^[0-9]{1,64}$/;

export type CascacheServer = FastifyInstance & { activity: ActivityLog };

export function createServer(options: ServerOptions): CascacheServer {
  const namespace = options.namespace ?? 'default';
  const auth = new Authorizer(options.tokens);
  const limits = { ...DEFAULT_UPLOAD_LIMITS, ...options.limits };
  const activity = new ActivityLog();
  const app = Fastify({ logger: options.logger ?? false, bodyLimit: 1 << 20 }) as unknown as CascacheServer;
  app.decorate('activity', activity);

  // Upload bodies are streamed by the handlers themselves, never buffered by Fastify.
  app.addContentTypeParser('*', (_req, _payload, done) => done(null, undefined));
  if (options.onRequest) {
    const tick = options.onRequest;
    app.addHook('onRequest', async () => tick());
  }

  const bodies = options.hotBodies && options.hotBodies.maxBytes > 0 ? new BodyCache(options.hotBodies.dir, options.hotBodies.maxBytes) : null;

  const authorize = (req: FastifyRequest, reply: FastifyReply, access: Access): Principal | null => {
    const r = auth.check(req.headers.authorization, access);
    if (r.ok) return r.principal;
    void reply.code(r.status).send({ error: r.status === 401 ? 'unauthorized' : 'forbidden' });
    return null;
  };

  const fail = (req: FastifyRequest, reply: FastifyReply, err: unknown): FastifyReply => {
    if (isCascacheError(err, ErrorCodes.EXISTS)) return reply.code(409).send({ error: err.code, message: err.message });
    if (isCascacheError(err, ErrorCodes.BAD_INPUT) || isCascacheError(err, ErrorCodes.TOO_LARGE) || isCascacheError(err, ErrorCodes.INTEGRITY)) {
      req.log.warn({ err: { code: err.code, message: err.message } }, 'rejected upload');
      return reply.code(400).send({ error: err.code, message: err.message });
    }
    req.log.error({ err }, 'request failed');
    return reply.code(500).send({ error: isCascacheError(err) ? err.code : 'E_INTERNAL', message: 'the cache failed; see server logs' });
  };

  if (options.chunkApi) registerChunkApi(app, { ...options.chunkApi, authorize, fail });
  registerRunsApi(app, { layered: options.layered, namespace, authorize, fail });

  app.get('/healthz', async (req, reply) => {
    if (req.headers.authorization && !auth.check(req.headers.authorization, 'read').ok) return reply.code(401).send({ error: 'unauthorized' });
    return { status: 'ok', signing: options.actionCache.signing };
  });

  app.get<{ Params: { hash: string } }>('/v1/cache/:hash', async (req, reply) => {
    if (!authorize(req, reply, 'read')) return reply;
    const { hash } = req.params;
    if (!NX_HASH_RE.test(hash)) return reply.code(400).send({ error: ErrorCodes.BAD_INPUT, message: 'hash must be a decimal string' });
    try {
      await pending.get(hash); // a body answered and still being stored
      const key = computeActionKey(['nx', namespace, hash]);
      // A hot body is served as it was stored, while its entry is still a hit here.
      const id = `nx-${hash}`;
      const hot = bodies?.has(id) && (await options.actionCache.peek(namespace, key)) ? await bodies.open(id) : null;
      if (hot) {
        activity.record(hash, { hits: 1, bytesSent: hot.size });
        return reply.code(200).type('application/octet-stream').send(hot.stream);
      }
      const hit = options.layered ? await options.layered.lookup(namespace, key) : await options.actionCache.get(namespace, key);
      if (!hit) {
        activity.record(hash, { misses: 1 });
        return reply.code(404).send({ error: 'not found' });
      }
      const tar = await materializeToTar(options.blobs, hit.manifest, { extraEntries: NX_EXTRAS_OUT });
      const sent = new ByteCounter();
      const gzip = createGzip({ level: options.gzipLevel ?? 1, flush: zlibConstants.Z_NO_FLUSH, chunkSize: GZIP_CHUNK_BYTES });
      const stages = bodies ? [gzip, tee(bodies.capture(`nx-${hash}`))] : [gzip];
      const body = pipeline([tar, ...stages, sent], (err) => {
        if (err) req.log.error({ err }, `streaming ${hash} failed`);
        else activity.record(hash, { bytesSent: sent.bytes });
      });
      activity.record(hash, { hits: 1 });
      return reply.code(200).type('application/octet-stream').send(body);
    } catch (err) {
      return fail(req, reply, err);
    }
  });

  /**
   * Stores one Nx body (gzip tar) under `hash`: unpacks, chunks and writes it, then the write-once AC
   * entry, then journals it for remote tiers. Reports the outcome to the activity log and `onUpload`.
   * @returns the stored figures, or null on a conflict (the hash was stored meanwhile).
   * @throws CascacheError E_BAD_INPUT / E_TOO_LARGE / E_INTEGRITY for a hostile body, E_IO.
   */
  const storeBody = async (hash: string, writer: string, body: Readable, received: ByteCounter, deferred: boolean) => {
    const key = computeActionKey(['nx', namespace, hash]);
    try {
      const guard = new InflateGuard(received, limits);
      const tar = pipeline(body, received, createGunzip({ chunkSize: GZIP_CHUNK_BYTES }), guard, () => undefined);
      let result;
      try {
        result = await ingestTar(options.blobs, tar, { limits, extraEntries: NX_EXTRAS_IN });
      } catch (err) {
        // Failures inside the pipeline (gzip, limits) surface as the guard's error: report the cause.
        const cause = (err as { cause?: unknown }).cause;
        throw isCascacheError(cause) ? cause : err;
      }
      if (result.manifest.extras?.code === undefined) throw new CascacheError(ErrorCodes.BAD_INPUT, 'an Nx cache entry needs a 4-byte "code" entry');
      const put = await options.actionCache.put(namespace, key, { manifest: result.digest, size: result.logicalBytes, writer });
      if (!put.created) {
        activity.record(hash, { conflicts: 1 });
        options.onUpload?.({ hash, outcome: 'conflict', deferred });
        return null;
      }
      if (options.layered) {
        // Stored locally already; a journal failure must not turn the PUT into an error.
        await options.layered.recordUpload({ kind: 'ac', namespace, key }).catch((err) => app.log.warn({ err }, 'could not journal the upload to remote tiers'));
      }
      activity.record(hash, { stored: 1, bytesReceived: received.bytes, bytesStored: result.newBytes });
      options.onUpload?.({ hash, outcome: 'stored', bytesReceived: received.bytes, bytesStored: result.newBytes, deferred });
      return { digest: result.digest, bytesReceived: received.bytes, bytesStored: result.newBytes };
    } catch (err) {
      const rejected = isCascacheError(err) && err.code !== ErrorCodes.IO && err.code !== ErrorCodes.UNAVAILABLE;
      options.onUpload?.({ hash, outcome: isCascacheError(err, ErrorCodes.EXISTS) ? 'conflict' : rejected ? 'rejected' : 'failed', code: isCascacheError(err) ? err.code : undefined, deferred });
      throw err;
    }
  };

  /** Bodies answered and not yet stored (`deferIngest`), by hash. Never rejects. */
  const pending = new Map<string, Promise<void>>();
  const ingestSlots = new Limiter(options.deferIngest?.concurrency ?? 1);
  /** Waits until the given hashes (all, by default) are stored or dropped, at most `timeoutMs`. */
  const settled = async (hashes?: Iterable<string>, timeoutMs = 60_000): Promise<void> => {
    const waits = hashes ? [...new Set(hashes)].map((h) => pending.get(h)).filter((p) => p !== undefined) : [...pending.values()];
    if (waits.length === 0) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.all(waits), new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs)))]);
    clearTimeout(timer);
  };
  if (options.deferIngest) app.addHook('onClose', async () => settled(undefined, 5 * 60_000));

  app.put<{ Params: { hash: string } }>('/v1/cache/:hash', async (req, reply) => {
    const principal = authorize(req, reply, 'write');
    if (!principal) return reply;
    const { hash } = req.params;
    if (!NX_HASH_RE.test(hash)) return reply.code(400).send({ error: ErrorCodes.BAD_INPUT, message: 'hash must be a decimal string' });
    const key = computeActionKey(['nx', namespace, hash]);
    try {
      const conflict = (): FastifyReply => {
        activity.record(hash, { conflicts: 1 });
        options.onUpload?.({ hash, outcome: 'conflict' });
        return reply.code(409).send({ error: ErrorCodes.EXISTS, message: 'this hash is already stored; keys are write-once' });
      };
      if (pending.has(hash) || (await options.actionCache.peek(namespace, key))) return conflict();
      const received = new ByteCounter(limits.maxCompressedBytes);
      if (options.deferIngest) {
        const spool = options.deferIngest.spoolDir;
        mkdirSync(spool, { recursive: true });
        const file = join(spool, `nx-${hash}.${randomBytes(6).toString('hex')}.tar.gz`);
        const spooled = new DigestStream();
        try {
          await pipelineAsync(req.raw, received, spooled, createWriteStream(file, { flags: 'wx' }));
        } catch (err) {
          rmSync(file, { force: true });
          throw isCascacheError(err) ? err : new CascacheError(ErrorCodes.IO, `spooling the upload failed: ${(err as Error).message}`, { cause: err });
        }
        if (pending.has(hash)) {
          // Another PUT of this hash finished spooling first.
          rmSync(file, { force: true });
          return conflict();
        }
        const job = ingestSlots
          .run(async () => {
            const stored = await storeBody(hash, principal.name, createReadStream(file), new ByteCounter(limits.maxCompressedBytes), true);
            // What Nx sent is the body a GET would rebuild: keep it hot.
            if (stored && bodies) bodies.keep(`nx-${hash}`, file, spooled.digest(), received.bytes);
          })
          .catch((err) => req.log.warn({ err: { code: (err as { code?: string }).code, message: (err as Error).message }, hash }, 'dropped an upload stored behind its answer'))
          .finally(() => {
            rmSync(file, { force: true });
            pending.delete(hash);
          });
        pending.set(hash, job.then(() => undefined));
        return reply.code(200).send({ stored: true, deferred: true });
      }
      const r = await storeBody(hash, principal.name, req.raw, received, false);
      if (!r) return reply.code(409).send({ error: ErrorCodes.EXISTS, message: 'this hash is already stored' });
      return reply.code(200).send({ stored: true, ...r });
    } catch (err) {
      return fail(req, reply, err);
    }
  });

  app.post<{ Body: { hashes?: unknown; since?: unknown; waitMs?: unknown } }>('/_cascache/report', async (req, reply) => {
    if (!authorize(req, reply, 'read')) return reply;
    const { hashes, since, waitMs } = req.body ?? {};
    if (!Array.isArray(hashes) || !hashes.every((h) => typeof h === 'string') || !isOptionalMs(since) || !isOptionalMs(waitMs)) {
      return reply.code(400).send({ error: ErrorCodes.BAD_INPUT, message: 'body must be {"hashes": [string], "since"?: ms, "waitMs"?: ms}' });
    }
    await settled(hashes as string[], (waitMs as number | undefined) ?? 0);
    const stillStoring = (hashes as string[]).filter((h) => pending.has(h)).length;
    return { ...activity.report(hashes as string[], (since as number | undefined) ?? 0), pending: stillStoring, totals: activity.totals, uploads: options.layered?.stats ?? null };
  });

  app.post<{ Body: { timeoutMs?: unknown; since?: unknown } }>('/_cascache/flush', async (req, reply) => {
    if (!authorize(req, reply, 'read')) return reply;
    const { timeoutMs, since } = req.body ?? {};
    if (!isOptionalMs(timeoutMs) || !isOptionalMs(since)) return reply.code(400).send({ error: ErrorCodes.BAD_INPUT, message: 'body must be {"timeoutMs"?: ms, "since"?: ms}' });
    // One deadline for both waits: the bodies still being stored, then the journal they feed.
    const deadline = timeoutMs === undefined ? undefined : Date.now() + (timeoutMs as number);
    await settled(undefined, deadline === undefined ? 60_000 : deadline - Date.now());
    if (!options.layered) return { drained: true, pending: {}, failed: {}, stats: null };
    return options.layered.drain({ timeoutMs: deadline === undefined ? undefined : Math.max(0, deadline - Date.now()), since: since as number | undefined });
  });

  return app;
}
