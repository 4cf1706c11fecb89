/**
 * Nx's self-hosted remote cache API, as Nx's client uses it (nrwl/nx
 * `packages/nx/src/native/cache/http_remote_cache.rs`), over the artifact service:
 * - `GET /v1/cache/{hash}` -> 200 gzip tar, or 404;
 * - `PUT /v1/cache/{hash}` -> 200 stored, 409 exists (keys are write-once), 403 read-only token,
 *   401 no or bad token, 400 malformed hash or hostile body.
 * The tar's `terminalOutput` and `code` (4-byte big-endian) entries are kept as manifest extras.
 * The action key is `("nx", namespace, hash)`.
 */
import { createGunzip, createGzip, constants as zlibConstants } from 'node:zlib';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { CascacheError, computeActionKey, digestOf, ErrorCodes, isCascacheError, materializeToTar, type BlobStore } from '@cascache/core';
import { ArtifactService, type ArtifactRef } from './artifacts';
import type { Access, Principal } from './auth';
import type { ServerMetrics } from './metrics';
import type { ActivityLog } from './report';
import { ByteCounter, inflate, type UploadLimits } from './upload-guard';

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

/**
 * zlib's output piece size for GET bodies, bytes. Each piece is a thread-pool round trip; the
 * default 16 KiB made gzip cost more than reading and decompressing the chunks (bench/).
 */
export const GZIP_CHUNK_BYTES = 256 * 1024;

/** Nx task hashes are decimal strings. */
/**
 * An Nx task hash as Nx's client sends it: an unsigned 64-bit integer in decimal (Nx hashes with
 * xxh3-64), 1-20 digits, at most 18446744073709551615.
 */
export function isNxHash(hash: string): boolean {
  return /^[0-9]{1,20}$/.test(hash) && (hash.length < 20 || hash <= U64_MAX);
}
const U64_MAX = '18446744073709551615';

export interface NxApiOptions {
  service: ArtifactService;
  blobs: BlobStore;
  /** The namespace Nx entries are written to, unless a scoped token says otherwise. */
  namespace: string;
  /** The namespaces a GET looks in, in order (default: `namespace` alone), unless a scoped token says otherwise. */
  readNamespaces?: string[];
  activity: ActivityLog;
  metrics: ServerMetrics;
  limits: Required<UploadLimits>;
  /** gzip level of GET bodies (0 on loopback). */
  gzipLevel: number;
  authorize: (req: FastifyRequest, reply: FastifyReply, access: Access) => Principal | null;
  fail: (req: FastifyRequest, reply: FastifyReply, err: unknown) => FastifyReply;
}

export function registerNxApi(app: FastifyInstance, o: NxApiOptions): void {
  const { service, activity } = o;
  const ref = (namespace: string, hash: string): ArtifactRef => ({
    tool: 'nx',
    namespace,
    key: computeActionKey(['nx', namespace, hash]),
    id: hash,
    // One hot body per namespace: a PR's upload of a hash must never answer main's GET of it.
    bodyId: namespace === 'default' ? `nx-${hash}` : `nx-${digestOf(`${namespace}\0${hash}`).slice(0, 40)}`,
  });
  const reads = (p: Principal): string[] => p.namespaces?.read ?? o.readNamespaces ?? [o.namespace];
  const writes = (p: Principal): string | null => (p.namespaces ? p.namespaces.write : o.namespace);

  app.get<{ Params: { hash: string } }>('/v1/cache/:hash', async (req, reply) => {
    const principal = o.authorize(req, reply, 'read');
    if (!principal) return reply;
    const { hash } = req.params;
    if (!isNxHash(hash)) return reply.code(400).send({ error: ErrorCodes.BAD_INPUT, message: 'hash must be an unsigned 64-bit integer in decimal' });
    let r = ref(o.namespace, hash);
    const miss = (at: ArtifactRef, reason?: string): FastifyReply => {
      activity.record(hash, { misses: 1 });
      o.metrics.lookup('nx', at.namespace, false);
      return reply.code(404).send(reason ? { error: 'not found', reason } : { error: 'not found' });
    };
    try {
      // Namespaces in order (main, then the PR's own): the first that holds the hash answers.
      let hit = null;
      for (const namespace of reads(principal)) {
        r = ref(namespace, hash);
        // A hot body is served as it was stored, while its entry is still a hit here.
        const hot = await service.hot(r);
        if (hot) {
          activity.record(hash, { hits: 1, bytesSent: hot.size });
          o.metrics.lookup('nx', namespace, true);
          o.metrics.served('nx', hot.size);
          return reply.code(200).type('application/octet-stream').send(hot.stream);
        }
        hit = await service.find(r);
        if (hit) break;
      }
      if (!hit) return miss(r);
      const tar = await materializeToTar(o.blobs, hit.manifest, { extraEntries: NX_EXTRAS_OUT });
      // Whole before the status line: Nx fails the run on a body that ends early.
      const body = await service.wholeBody(r, hit, tar, createGzip({ level: o.gzipLevel, flush: zlibConstants.Z_NO_FLUSH, chunkSize: GZIP_CHUNK_BYTES }));
      activity.record(hash, { hits: 1 });
      o.metrics.lookup('nx', r.namespace, true);
      // Chunked, as hot bodies are: the client's read ends with the server's response, not before it.
      return reply.code(200).type('application/octet-stream').send(body.stream);
    } catch (err) {
      if (service.damagedIsMiss(r, err, req.log)) return reply.code(404).send({ error: 'not found' });
      // Nx fails the whole run on any other status: a store that cannot answer is a miss.
      req.log.error({ err }, 'lookup failed; answered as a miss');
      return miss(r, isCascacheError(err) ? err.code : 'E_INTERNAL');
    }
  });

  /** Upload errors answered as such (hostile or conflicting input); any other is "not stored". */
  const REFUSED: ReadonlySet<string> = new Set([ErrorCodes.BAD_INPUT, ErrorCodes.TOO_LARGE, ErrorCodes.INTEGRITY, ErrorCodes.EXISTS]);

  /** Stores one Nx body (gzip tar). */
  const storeBody = (r: ArtifactRef, writer: string, body: NodeJS.ReadableStream, received: ByteCounter, deferred: boolean) => {
    return service.store({
      ref: r,
      writer,
      body: inflate(body, received, createGunzip({ chunkSize: GZIP_CHUNK_BYTES }), o.limits),
      received,
      deferred,
      extraEntries: NX_EXTRAS_IN,
      validate: (extras) => {
        if (extras.code === undefined) throw new CascacheError(ErrorCodes.BAD_INPUT, 'an Nx cache entry needs a 4-byte "code" entry');
      },
    });
  };

  app.put<{ Params: { hash: string } }>('/v1/cache/:hash', async (req, reply) => {
    const principal = o.authorize(req, reply, 'write');
    if (!principal) return reply;
    const { hash } = req.params;
    if (!isNxHash(hash)) return reply.code(400).send({ error: ErrorCodes.BAD_INPUT, message: 'hash must be an unsigned 64-bit integer in decimal' });
    const namespace = writes(principal);
    if (namespace === null) return reply.code(403).send({ error: 'forbidden', message: 'this token writes no namespace' });
    const r = ref(namespace, hash);
    try {
      const conflict = (): FastifyReply => {
        service.conflict(r);
        return reply.code(409).send({ error: ErrorCodes.EXISTS, message: 'this hash is already stored; keys are write-once' });
      };
      if (await service.exists(r)) return conflict();
      const received = new ByteCounter(o.limits.maxCompressedBytes);
      if (service.deferring) {
        const ok = await service.defer(r, req.raw, received, (file) => storeBody(r, principal.name, ArtifactService.open(file), new ByteCounter(o.limits.maxCompressedBytes), true));
        if (!ok) return conflict();
        return reply.code(200).send({ stored: true, deferred: true });
      }
      const stored = await storeBody(r, principal.name, req.raw, received, false);
      if (!stored) return reply.code(409).send({ error: ErrorCodes.EXISTS, message: 'this hash is already stored' });
      return reply.code(200).send({ stored: true, ...stored });
    } catch (err) {
      // A hostile or broken body is rejected (Nx's client never sends one). A store that fails
      // (a full disk, an I/O error) answers 200 with `stored: false`: Nx fails the whole run on any
      // status but 200 and 409, and a cache may always drop a write. The log, the upload event and
      // the metrics say what happened.
      if (isCascacheError(err) && REFUSED.has(err.code)) return o.fail(req, reply, err);
      req.log.error({ err }, 'upload failed; answered as not stored');
      return reply.code(200).header('connection', 'close').send({ stored: false, error: isCascacheError(err) ? err.code : 'E_INTERNAL' });
    }
  });
}
