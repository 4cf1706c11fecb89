/**
 * Turborepo's remote cache API (v8), as turbo 2.x uses it (`crates/turborepo-api-client`; Vercel's
 * "Artifacts" REST reference), over the artifact service. The team (`slug`, else `teamId`) is the
 * namespace; the action key is `("turbo", team, hash)`.
 *
 * - `GET /v8/artifacts/status` -> `{"status":"enabled"}`.
 * - `GET /v8/artifacts/{hash}` -> 200 tar.zst with `x-artifact-duration` (ms) and, for a signed
 *   artifact, `x-artifact-tag`; 404 on a miss. `HEAD` answers the same headers without a body.
 * - `PUT /v8/artifacts/{hash}` (tar.zst; `x-artifact-duration`, `x-artifact-tag`) -> 202
 *   `{"urls":[...]}`; 409 when stored already (keys are write-once); 403 read-only token; 400 hostile.
 * - `POST /v8/artifacts` `{"hashes":[...]}` -> per hash `{size, taskDurationMs, tag?}` or null.
 * - `POST /v8/artifacts/events` `[{sessionId, source, event, hash, duration?}]` -> 200: a `LOCAL`
 *   `HIT` counts as a hit of turbo's own cache in the run figures; the rest the server saw itself.
 *
 * Unsigned bodies are unpacked like Nx's (files chunked and deduplicated with every other tool's),
 * and a GET rebuilds a tar.zst. A signed body (`x-artifact-tag`, an HMAC turbo checks over the exact
 * bytes) is stored as it came, as one chunked file, and comes back byte-identical; its chunks are
 * all verified before the answer starts, so damage is a miss, never a body that fails turbo's check.
 */
import { PassThrough, pipeline, Readable } from 'node:stream';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import {
  computeActionKey,
  digestOf,
  ErrorCodes,
  materializeToTar,
  readChunks,
  zstdCompressStream,
  zstdDecompressStream,
  type AcHit,
  type BlobStore,
  type LayeredStore,
  type ManifestExtras,
} from '@cascache/core';
import { NAMESPACE_RE } from '@cascache/core/format';
import { ArtifactService, type ArtifactRef } from './artifacts';
import { readsNamespace, writesNamespace, type Access, type Principal } from './auth';
import type { ServerMetrics } from './metrics';
import type { ActivityLog } from './report';
import { ByteCounter, inflate, type UploadLimits } from './upload-guard';

/** turbo 2.x sends 16 hex characters; other clients use other alphabets. */
const TURBO_HASH_RE = /^[A-Za-z0-9_-]{1,128}$/;
/** The Vercel API bounds the tag at 600 characters. */
const MAX_TAG_CHARS = 600;
/** Name of the one file a signed body is stored as. */
const RAW_BODY_PATH = 'artifact.tar.zst';
/** zstd level of rebuilt GET bodies: 1 on loopback would do, 3 matches what turbo itself writes. */
const ZSTD_LEVEL = 3;

export interface TurboApiOptions {
  service: ArtifactService;
  blobs: BlobStore;
  activity: ActivityLog;
  metrics: ServerMetrics;
  layered?: LayeredStore;
  limits: Required<UploadLimits>;
  authorize: (req: FastifyRequest, reply: FastifyReply, access: Access) => Principal | null;
  fail: (req: FastifyRequest, reply: FastifyReply, err: unknown) => FastifyReply;
}

type Query = { slug?: string; teamId?: string };

/** The activity-log id of a turbo artifact (the report route's `prefix` selects one team's). */
export const turboActivityId = (team: string, hash: string): string => `turbo:${team}:${hash}`;

export function registerTurboApi(app: FastifyInstance, o: TurboApiOptions): void {
  const { service, activity } = o;

  /**
   * The team of a request, or null after answering 400 (malformed) or 403 (a scoped token whose
   * namespaces do not include it, for `access`).
   */
  const teamOf = (req: FastifyRequest<{ Querystring: Query }>, reply: FastifyReply, principal: Principal, access: 'read' | 'write'): string | null => {
    const team = req.query.slug ?? req.query.teamId ?? 'default';
    // Teams become namespaces, so they follow the namespace rule.
    if (typeof team !== 'string' || !NAMESPACE_RE.test(team)) {
      void reply.code(400).send({ error: ErrorCodes.BAD_INPUT, message: 'slug/teamId must be 1-64 characters of A-Z a-z 0-9 . _ -' });
      return null;
    }
    if (access === 'read' ? readsNamespace(principal, team) : writesNamespace(principal, team)) return team;
    void reply.code(403).send({ error: 'forbidden', message: `this token's scope does not include team ${team}` });
    return null;
  };
  const ref = (team: string, hash: string): ArtifactRef => ({
    tool: 'turbo',
    namespace: team,
    key: computeActionKey(['turbo', team, hash]),
    id: turboActivityId(team, hash),
    bodyId: `turbo-${digestOf(`${team}\0${hash}`).slice(0, 40)}`,
  });
  const badHash = (reply: FastifyReply): FastifyReply => reply.code(400).send({ error: ErrorCodes.BAD_INPUT, message: 'hash must be 1-128 characters of A-Z a-z 0-9 _ -' });

  /** Response headers of a stored artifact. */
  const headersOf = (hit: AcHit): Record<string, string> => {
    const extras = hit.manifest.extras ?? {};
    const h: Record<string, string> = { 'content-type': 'application/octet-stream' };
    if (typeof extras.turboDuration === 'number') h['x-artifact-duration'] = String(extras.turboDuration);
    if (typeof extras.turboTag === 'string') h['x-artifact-tag'] = extras.turboTag;
    return h;
  };
  /**
   * Response headers of recent artifacts by activity id, so a hot body is answered without reading
   * its manifest (as Nx's hot path needs no headers). Bounded; oldest out.
   */
  const recentHeaders = new Map<string, Record<string, string>>();
  const remember = (id: string, headers: Record<string, string>): void => {
    recentHeaders.delete(id);
    recentHeaders.set(id, headers);
    if (recentHeaders.size > 10_000) recentHeaders.delete(recentHeaders.keys().next().value!);
  };
  const rawChunks = (hit: AcHit) => {
    const file = hit.manifest.entries.find((e) => e.path === RAW_BODY_PATH);
    return file?.type === 'file' ? file.chunks : null;
  };

  app.get<{ Querystring: Query }>('/v8/artifacts/status', async (req, reply) => {
    const principal = o.authorize(req, reply, 'read');
    if (!principal || !teamOf(req, reply, principal, 'read')) return reply;
    return { status: 'enabled' };
  });

  app.head<{ Params: { hash: string }; Querystring: Query }>('/v8/artifacts/:hash', async (req, reply) => {
    const principal = o.authorize(req, reply, 'read');
    if (!principal) return reply;
    const team = teamOf(req, reply, principal, 'read');
    if (!team) return reply;
    if (!TURBO_HASH_RE.test(req.params.hash)) return badHash(reply);
    try {
      const hit = await service.find(ref(team, req.params.hash));
      if (!hit) return reply.code(404).send();
      return reply.code(200).headers(headersOf(hit)).send();
    } catch (err) {
      return o.fail(req, reply, err);
    }
  });

  app.get<{ Params: { hash: string }; Querystring: Query }>('/v8/artifacts/:hash', { exposeHeadRoute: false }, async (req, reply) => {
    const principal = o.authorize(req, reply, 'read');
    if (!principal) return reply;
    const team = teamOf(req, reply, principal, 'read');
    if (!team) return reply;
    const { hash } = req.params;
    if (!TURBO_HASH_RE.test(hash)) return badHash(reply);
    const r = ref(team, hash);
    try {
      const known = recentHeaders.get(r.id);
      const hot = known ? await service.hot(r) : null;
      if (known && hot) {
        activity.record(r.id, { hits: 1, bytesSent: hot.size });
        o.metrics.lookup('turbo', team, true);
        o.metrics.served('turbo', hot.size);
        return reply.code(200).headers(known).send(hot.stream);
      }
      const hit = await service.find(r);
      if (!hit) {
        activity.record(r.id, { misses: 1 });
        o.metrics.lookup('turbo', team, false);
        return reply.code(404).send({ error: 'not found' });
      }
      const headers = headersOf(hit);
      remember(r.id, headers);
      // Looked for already when the headers were known.
      const hotNow = known ? hot : await service.hot(r);
      if (hotNow) {
        activity.record(r.id, { hits: 1, bytesSent: hotNow.size });
        o.metrics.lookup('turbo', team, true);
        o.metrics.served('turbo', hotNow.size);
        return reply.code(200).headers(headers).send(hotNow.stream);
      }
      const raw = rawChunks(hit);
      let body;
      if (raw && hit.manifest.extras?.turboBody === 'raw') {
        // Read and verify every chunk first: a damaged one is a miss now, not a cut body turbo rejects.
        for await (const _ of readChunks(o.blobs, raw)) void _;
        body = pipeline([Readable.from(readChunks(o.blobs, raw)), new PassThrough()], (err) => err && req.log.error({ err }, `streaming ${r.id} failed`));
        o.metrics.served('turbo', hit.entry.size);
      } else {
        body = service.rebuiltBody(r, hit, await materializeToTar(o.blobs, hit.manifest), zstdCompressStream(ZSTD_LEVEL));
      }
      activity.record(r.id, { hits: 1 });
      o.metrics.lookup('turbo', team, true);
      return reply.code(200).headers(headers).send(body);
    } catch (err) {
      if (service.damagedIsMiss(r, err, req.log)) return reply.code(404).send({ error: 'not found' });
      return o.fail(req, reply, err);
    }
  });

  app.put<{ Params: { hash: string }; Querystring: Query }>('/v8/artifacts/:hash', async (req, reply) => {
    const principal = o.authorize(req, reply, 'write');
    if (!principal) return reply;
    const team = teamOf(req, reply, principal, 'write');
    if (!team) return reply;
    const { hash } = req.params;
    if (!TURBO_HASH_RE.test(hash)) return badHash(reply);
    const extras: ManifestExtras = {};
    const duration = req.headers['x-artifact-duration'];
    if (duration !== undefined) {
      const ms = Number(duration);
      if (typeof duration !== 'string' || !/^[0-9]{1,12}$/.test(duration) || !Number.isSafeInteger(ms)) {
        return reply.code(400).send({ error: ErrorCodes.BAD_INPUT, message: 'x-artifact-duration must be a whole number of ms' });
      }
      extras.turboDuration = ms;
    }
    const tag = req.headers['x-artifact-tag'];
    if (tag !== undefined) {
      if (typeof tag !== 'string' || tag.length === 0 || tag.length > MAX_TAG_CHARS || !/^[\x21-\x7e]+$/.test(tag)) {
        return reply.code(400).send({ error: ErrorCodes.BAD_INPUT, message: `x-artifact-tag must be 1-${MAX_TAG_CHARS} printable characters` });
      }
      extras.turboTag = tag;
      extras.turboBody = 'raw';
    }
    const r = ref(team, hash);
    // Headers cached for this key belonged to an entry that could not be served, if any.
    recentHeaders.delete(r.id);
    const storeBody = (body: NodeJS.ReadableStream, received: ByteCounter, deferred: boolean) => {
      if (extras.turboBody === 'raw') {
        // Signed: the exact bytes, as one chunked file (turbo checks the tag over them).
        return service.store({ ref: r, writer: principal.name, body: pipeline(body, received, () => undefined), asFile: RAW_BODY_PATH, received, deferred, extras });
      }
      return service.store({ ref: r, writer: principal.name, body: inflate(body, received, zstdDecompressStream(), o.limits), received, deferred, extras });
    };
    try {
      if (await service.exists(r)) {
        service.conflict(r);
        return reply.code(409).send({ error: ErrorCodes.EXISTS, message: 'this hash is already stored; keys are write-once' });
      }
      const received = new ByteCounter(o.limits.maxCompressedBytes);
      if (service.deferring) {
        const ok = await service.defer(r, req.raw, received, (file) => storeBody(ArtifactService.open(file), new ByteCounter(o.limits.maxCompressedBytes), true));
        if (!ok) {
          service.conflict(r);
          return reply.code(409).send({ error: ErrorCodes.EXISTS, message: 'this hash is already stored' });
        }
        return reply.code(202).send({ urls: [`${team}/${hash}`] });
      }
      const stored = await storeBody(req.raw, received, false);
      if (!stored) return reply.code(409).send({ error: ErrorCodes.EXISTS, message: 'this hash is already stored' });
      return reply.code(202).send({ urls: [`${team}/${hash}`] });
    } catch (err) {
      return o.fail(req, reply, err);
    }
  });

  app.post<{ Querystring: Query; Body: { hashes?: unknown } }>('/v8/artifacts', async (req, reply) => {
    const principal = o.authorize(req, reply, 'read');
    if (!principal) return reply;
    const team = teamOf(req, reply, principal, 'read');
    if (!team) return reply;
    const hashes = req.body?.hashes;
    if (!Array.isArray(hashes) || hashes.length > 1000 || !hashes.every((h) => typeof h === 'string' && TURBO_HASH_RE.test(h))) {
      return reply.code(400).send({ error: ErrorCodes.BAD_INPUT, message: 'body must be {"hashes": [hash, ...]} with at most 1000 hashes' });
    }
    try {
      const out: Record<string, { size: number; taskDurationMs: number; tag?: string } | null> = {};
      for (const h of hashes as string[]) {
        // Local entries only: a query must not download artifacts from the remote tiers.
        const hit = await service.findLocal(ref(team, h));
        if (!hit) {
          out[h] = null;
          continue;
        }
        const x = hit.manifest.extras ?? {};
        out[h] = { size: hit.entry.size, taskDurationMs: typeof x.turboDuration === 'number' ? x.turboDuration : 0, ...(typeof x.turboTag === 'string' ? { tag: x.turboTag } : {}) };
      }
      return out;
    } catch (err) {
      return o.fail(req, reply, err);
    }
  });

  app.post<{ Querystring: Query; Body: unknown }>('/v8/artifacts/events', async (req, reply) => {
    const principal = o.authorize(req, reply, 'read');
    if (!principal) return reply;
    const team = teamOf(req, reply, principal, 'read');
    if (!team) return reply;
    const events = req.body;
    if (!Array.isArray(events) || events.length > 10_000) return reply.code(400).send({ error: ErrorCodes.BAD_INPUT, message: 'body must be an array of at most 10000 events' });
    for (const e of events as Array<Record<string, unknown>>) {
      if (!e || typeof e.hash !== 'string' || !TURBO_HASH_RE.test(e.hash)) continue;
      // What the server served it counted itself; turbo's own cache hits only turbo can tell.
      if (e.source === 'LOCAL' && e.event === 'HIT') activity.record(turboActivityId(team, e.hash), { localHits: 1 });
    }
    return reply.code(200).send({});
  });
}
