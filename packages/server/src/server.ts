/**
 * `createServer(options)`: a Fastify app over a cascache store, built without listening.
 *
 * Routes (each protocol an adapter over one artifact service, artifacts.ts):
 * - `GET /healthz`: liveness, store signing mode; a wrong token is 401 (so clients can tell their
 *   own agent from a stranger on the port).
 * - Nx's self-hosted cache API, `/v1/cache/{hash}` (nx-api.ts).
 * - Turborepo's remote cache API, `/v8/artifacts/...` (turbo-api.ts).
 * - `POST /_cascache/report` `{hashes: string[] | prefix: string, since?: ms, waitMs?: ms}`: what the
 *   server did for those Nx hashes, or for every activity id with that prefix (`turbo:<team>:` for a
 *   Turborepo run, then also per id as `tasks`), since a time (one run's figures), after waiting up
 *   to `waitMs` for bodies still being stored (`pending`: how many still are), plus upload totals.
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
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Fastify, { type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest, type FastifyServerOptions } from 'fastify';
import { ErrorCodes, isCascacheError, type AcStore, type ActionCache, type BlobStore, type FsBlobStore, type LayeredStore, type RootStore, type TarLimits } from '@cascache/core';
import { ArtifactService, type CrashPoint, type UploadEvent } from './artifacts';
import { Authorizer, type Access, type Principal, type TokenConfig } from './auth';
import { BodyCache } from './body-cache';
import { registerChunkApi } from './chunk-api';
import { registerDashboard, type DashboardData } from './dashboard';
import { ServerMetrics } from './metrics';
import { ActivityLog } from './report';
import { registerRunsApi } from './runs-api';
import { registerNxApi } from './nx-api';
import { registerTurboApi } from './turbo-api';
import { DEFAULT_UPLOAD_LIMITS, type UploadLimits } from './upload-guard';

/** Options for {@link createServer}. */
export interface ServerOptions {
  blobs: BlobStore;
  actionCache: ActionCache;
  /** Remote tiers behind the local store (`blobs` and `actionCache` must be its local tier). */
  layered?: LayeredStore;
  /** Serve cascache's chunk API (`/cas/v1/...`) from this store, so others can use it as an HTTP tier. */
  chunkApi?: { blobs: FsBlobStore; entries: AcStore; roots: RootStore; maxUploadBytes?: number };
  /** Action-cache namespace Nx entries are written to. Default `default`. */
  namespace?: string;
  /**
   * Namespaces an Nx GET looks in, in order; default `[namespace]`. A token scoped to namespaces
   * (`tokens.scoped`) uses its own list and write namespace instead.
   */
  readNamespaces?: string[];
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
  /**
   * An upload whose body sends nothing for this long is cut (its socket destroyed; nothing is
   * stored), ms. Default 30,000. Only while a PUT's body is being read: the server's own work and
   * waits (storing, report, flush) are not bounded by it.
   */
  uploadIdleTimeoutMs?: number;
  /** Told how every upload ended (metrics, tests). */
  onUpload?: (event: UploadEvent) => void;
  /** See ArtifactServiceOptions.atPoint: the fault suite's kills at named points of an upload. */
  atPoint?: (point: CrashPoint) => void;
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
  /**
   * Where Nx GET bodies rebuilt from chunks are assembled before they are answered (Nx fails a run
   * on a body that ends early, so a damaged chunk must be found first). Default: the `deferIngest`
   * spool dir, else the hot-body dir's `tmp`, else the OS temp dir.
   */
  spoolDir?: string;
  /**
   * The activity log the report route reads; pass one to feed it the local store's `onWarning`
   * (entries found but not served, e.g. signed with another secret). Default: a new one.
   */
  activity?: ActivityLog;
  /**
   * The Prometheus metrics `GET /metrics` exposes; pass one to give it store and tier gauges (listen
   * does). Default: request, lookup and upload metrics only.
   */
  metrics?: ServerMetrics;
  /** Serve the dashboard at `/` with this data (listen() gives the store's); off without it. */
  dashboard?: () => Promise<DashboardData>;
}

export type { UploadEvent } from './artifacts';

/** An optional duration or time in a request body: absent, or a finite number >= 0 (ms). */
const isOptionalMs = (v: unknown): boolean => v === undefined || (Number.isFinite(v) && (v as number) >= 0);

export type CascacheServer = FastifyInstance & { activity: ActivityLog; metrics: ServerMetrics };

export function createServer(options: ServerOptions): CascacheServer {
  const namespace = options.namespace ?? 'default';
  const auth = new Authorizer(options.tokens);
  const limits = { ...DEFAULT_UPLOAD_LIMITS, ...options.limits };
  const activity = options.activity ?? new ActivityLog();
  const app = Fastify({
    logger: options.logger ?? false,
    bodyLimit: 1 << 20,
    // Bad URLs and over-long path segments: answered without echoing the URL (Fastify's default does).
    frameworkErrors: (err: FastifyError, _req: FastifyRequest, reply: FastifyReply) => {
      const status = err.code === 'FST_ERR_MAX_PARAM_LENGTH' ? 414 : 400;
      void reply.code(status).send({ error: ErrorCodes.BAD_INPUT, message: status === 414 ? 'a path segment is longer than 100 characters' : 'malformed URL' });
    },
  }) as unknown as CascacheServer;
  app.decorate('activity', activity);
  const metrics = options.metrics ?? new ServerMetrics();
  app.decorate('metrics', metrics);

  // Upload bodies are streamed by the handlers themselves, never buffered by Fastify.
  app.addContentTypeParser('*', (_req, _payload, done) => done(null, undefined));
  // A body that stalls would hold its socket and spool for good (Node's own request timeout is
  // 300 s): cut it after `uploadIdleTimeoutMs` without a byte. The bound is lifted once the body
  // is in, and at the latest when the request is answered.
  const idleMs = options.uploadIdleTimeoutMs ?? 30_000;
  app.addHook('onRequest', async (req) => {
    if (req.method !== 'PUT') return;
    const socket = req.raw.socket;
    socket.setTimeout(idleMs, () => socket.destroy());
    // Once the body is in, the server's own work (storing, a synchronous upload) is not bounded.
    req.raw.once('end', () => socket.setTimeout(0));
  });
  app.addHook('onResponse', async (req, reply) => {
    req.raw.socket?.setTimeout(0);
    metrics.request(req.routeOptions.url, req.method, reply.statusCode, reply.elapsedTime / 1000);
  });
  // Error answers never echo the request: a URL can be long and carry anything.
  app.setNotFoundHandler((_req, reply) => reply.code(404).send({ error: 'not found' }));
  app.setErrorHandler((err: FastifyError, req, reply) => {
    const status = err.statusCode !== undefined && err.statusCode >= 400 && err.statusCode < 500 ? err.statusCode : 500;
    if (status === 500) {
      req.log.error({ err }, 'request failed');
      return reply.code(500).send({ error: 'E_INTERNAL', message: 'the cache failed; see server logs' });
    }
    return reply.code(status).send({ error: ErrorCodes.BAD_INPUT, message: err.message.slice(0, 200) });
  });
  if (options.onRequest) {
    const tick = options.onRequest;
    app.addHook('onRequest', async () => tick());
  }

  const bodies = options.hotBodies && options.hotBodies.maxBytes > 0 ? new BodyCache(options.hotBodies.dir, options.hotBodies.maxBytes) : null;
  const service = new ArtifactService({
    blobs: options.blobs,
    actionCache: options.actionCache,
    layered: options.layered,
    limits,
    bodies,
    activity,
    log: app.log,
    onUpload: options.onUpload,
    atPoint: options.atPoint,
    metrics,
    deferIngest: options.deferIngest,
    spoolDir: options.spoolDir ?? options.deferIngest?.spoolDir ?? (options.hotBodies ? join(options.hotBodies.dir, 'tmp') : join(tmpdir(), 'cascache-spool')),
  });
  if (options.deferIngest) app.addHook('onClose', async () => service.settled(undefined, 5 * 60_000));

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
      // The rest of a rejected body is not read: close the connection once answered, or the
      // client's half-closed socket lingers (CLOSE-WAIT) until the keep-alive timeout.
      return reply.code(400).header('connection', 'close').send({ error: err.code, message: err.message });
    }
    req.log.error({ err }, 'request failed');
    return reply.code(500).send({ error: isCascacheError(err) ? err.code : 'E_INTERNAL', message: 'the cache failed; see server logs' });
  };

  if (options.chunkApi) registerChunkApi(app, { ...options.chunkApi, actionCache: options.actionCache, authorize, fail });
  registerRunsApi(app, { layered: options.layered, namespace, authorize, fail });

  // Prometheus: a scraper sends a read token where tokens are configured (bearer_token in its config).
  app.get('/metrics', async (req, reply) => {
    if (!authorize(req, reply, 'read')) return reply;
    const { contentType, body } = await metrics.expose();
    return reply.code(200).type(contentType).send(body);
  });

  if (options.dashboard) registerDashboard(app, { data: options.dashboard, authorize, fail });

  app.get('/healthz', async (req, reply) => {
    if (req.headers.authorization && !auth.check(req.headers.authorization, 'read').ok) return reply.code(401).send({ error: 'unauthorized' });
    return { status: 'ok', signing: options.actionCache.signing };
  });

  registerNxApi(app, { service, blobs: options.blobs, namespace, readNamespaces: options.readNamespaces, activity, metrics, limits, gzipLevel: options.gzipLevel ?? 1, authorize, fail });
  registerTurboApi(app, { service, blobs: options.blobs, activity, metrics, limits, layered: options.layered, authorize, fail });

  app.post<{ Body: { hashes?: unknown; prefix?: unknown; since?: unknown; waitMs?: unknown } }>('/_cascache/report', async (req, reply) => {
    if (!authorize(req, reply, 'read')) return reply;
    const { hashes, prefix, since, waitMs } = req.body ?? {};
    const byHashes = Array.isArray(hashes) && hashes.every((h) => typeof h === 'string');
    const byPrefix = typeof prefix === 'string' && prefix.length > 0 && prefix.length <= 200;
    if (byHashes === byPrefix || !isOptionalMs(since) || !isOptionalMs(waitMs)) {
      return reply.code(400).send({ error: ErrorCodes.BAD_INPUT, message: 'body must be {"hashes": [string]} or {"prefix": string}, with "since"?: ms, "waitMs"?: ms' });
    }
    const from = (since as number | undefined) ?? 0;
    // By prefix (a Turborepo team's activity since a run began), the ids are whatever the server saw.
    const ids = byHashes ? (hashes as string[]) : activity.idsWithPrefix(prefix as string, from);
    await service.settled(ids, (waitMs as number | undefined) ?? 0);
    const stillStoring = service.stillStoring(ids);
    return {
      ...activity.report(ids, from),
      pending: stillStoring,
      unservable: activity.unservableSince(from),
      setAside: await setAsideCount(),
      totals: activity.totals,
      uploads: options.layered?.stats ?? null,
      ...(byPrefix ? { tasks: activity.detail(ids, from) } : {}),
    };
  });

  /** Uploads set aside after permanent errors, over the writable tiers (a run's summary says so). */
  async function setAsideCount(): Promise<number> {
    const layered = options.layered;
    if (!layered) return 0;
    const counts = await Promise.all(layered.writable().map((t) => layered.journal.counts(t.name).catch(() => ({ failed: 0 }))));
    return counts.reduce((n, c) => n + c.failed, 0);
  }

  app.post<{ Body: { timeoutMs?: unknown; since?: unknown } }>('/_cascache/flush', async (req, reply) => {
    if (!authorize(req, reply, 'read')) return reply;
    const { timeoutMs, since } = req.body ?? {};
    if (!isOptionalMs(timeoutMs) || !isOptionalMs(since)) return reply.code(400).send({ error: ErrorCodes.BAD_INPUT, message: 'body must be {"timeoutMs"?: ms, "since"?: ms}' });
    // One deadline for both waits: the bodies still being stored, then the journal they feed.
    const deadline = timeoutMs === undefined ? undefined : Date.now() + (timeoutMs as number);
    await service.settled(undefined, deadline === undefined ? 60_000 : deadline - Date.now());
    if (!options.layered) return { drained: true, pending: {}, failed: {}, unreachable: {}, stats: null };
    // The run that asks has just used the tiers: a breaker its lookups opened says the tier is down
    // now, and waiting on it again would only cost the build its timeouts once more.
    return options.layered.drain({ timeoutMs: deadline === undefined ? undefined : Math.max(0, deadline - Date.now()), since: since as number | undefined, resetBreakers: false });
  });

  return app;
}
