/**
 * cascache's own chunk API, for agents and CLIs that use this server as an HTTP tier (the client is
 * core's `HttpTierClient`; routes and formats are documented there and in docs/server.md).
 *
 * Uploads are hostile input: every frame is decoded and checked against its digest before it is
 * stored, frame streams are bounded per frame and per request. AC entries are bounded, checked as
 * a reader of this store would check them (format, key, and the signature when the store signs), and
 * write-once: a read-write token may replace an entry only when the stored one can never be served
 * (tampered, corrupt, another secret); replacing a valid entry or deleting one needs an admin token,
 * which nobody has unless configured. Reads serve what the local store verified; corruption found
 * on read is `E_INTEGRITY` (500) once, then a miss.
 */
import { readFile } from 'node:fs/promises';
import { Readable } from 'node:stream';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import {
  assertDigest,
  assertNamespace,
  decodeBlob,
  decodeFrameRecords,
  encodeFrameRecord,
  ErrorCodes,
  FRAME_STREAM_TYPE,
  isCascacheError,
  isDigest,
  MAX_AC_ENTRY_BYTES,
  readAll,
  type AcStore,
  type ActionCache,
  type FsBlobStore,
  type RootStore,
  type StoreRoot,
} from '@cascache/core';
import { readsNamespace, writesNamespace, type Access, type Principal } from './auth';
import { ByteCounter } from './upload-guard';

/** What the chunk API serves. */
export interface ChunkApiOptions {
  blobs: FsBlobStore;
  entries: AcStore;
  roots: RootStore;
  /** Checks uploaded entries as this store's readers would (its secret). */
  actionCache: ActionCache;
  /** Largest upload request, bytes. Default 256 MiB. */
  maxUploadBytes?: number;
  authorize: (req: FastifyRequest, reply: FastifyReply, access: Access) => Principal | null;
  fail: (req: FastifyRequest, reply: FastifyReply, err: unknown) => FastifyReply;
}

const MAX_DIGESTS = 10_000;

function digestList(body: unknown): string[] | null {
  const d = (body as { digests?: unknown } | null)?.digests;
  return Array.isArray(d) && d.length <= MAX_DIGESTS && d.every(isDigest) ? (d as string[]) : null;
}

/** A listing as a stream of JSON lines, produced as the client reads. */
function ndjson(items: AsyncIterable<unknown>): Readable {
  return Readable.from(
    (async function* () {
      for await (const item of items) yield `${JSON.stringify(item)}\n`;
    })(),
  );
}

export function registerChunkApi(app: FastifyInstance, o: ChunkApiOptions): void {
  const badDigests = (reply: FastifyReply) => reply.code(400).send({ error: ErrorCodes.BAD_INPUT, message: `body must be {"digests": [up to ${MAX_DIGESTS} hex digests]}` });

  app.post('/cas/v1/missing', async (req, reply) => {
    if (!o.authorize(req, reply, 'read')) return reply;
    const digests = digestList(req.body);
    if (!digests) return badDigests(reply);
    const present = await o.blobs.has(digests);
    return { missing: digests.filter((d) => !present.has(d)) };
  });

  app.post('/cas/v1/blobs', async (req, reply) => {
    if (!o.authorize(req, reply, 'write')) return reply;
    if (req.headers['content-type'] !== FRAME_STREAM_TYPE) return reply.code(415).send({ error: ErrorCodes.BAD_INPUT, message: `content type must be ${FRAME_STREAM_TYPE}` });
    const counter = new ByteCounter(o.maxUploadBytes ?? 256 * 1024 * 1024);
    let stored = 0;
    let bytes = 0;
    try {
      for await (const { digest, frame } of decodeFrameRecords(req.raw.pipe(counter))) {
        const raw = decodeBlob(frame, digest); // E_INTEGRITY unless the frame is exactly that blob
        const r = await o.blobs.put(digest, raw);
        if (r.created) stored++;
        bytes += r.storedBytes;
      }
    } catch (err) {
      return o.fail(req, reply, isCascacheError(err) || !(err as { cause?: unknown }).cause ? err : (err as { cause: unknown }).cause);
    }
    return { stored, bytes, received: counter.bytes };
  });

  // '::' is find-my-way's escaped colon: the path is literally /cas/v1/blobs:read.
  app.post('/cas/v1/blobs::read', async (req, reply) => {
    if (!o.authorize(req, reply, 'read')) return reply;
    const digests = digestList(req.body);
    if (!digests) return badDigests(reply);
    const blobs = o.blobs;
    // Stored frames go out as they are; the client verifies each against its digest.
    const body = Readable.from(
      (async function* () {
        for (const d of digests) {
          const frame = await readFile(blobs.pathOf(d)).catch(() => null);
          if (frame) yield encodeFrameRecord(d, frame);
        }
      })(),
    );
    return reply.code(200).type(FRAME_STREAM_TYPE).send(body);
  });

  app.get('/cas/v1/blobs', async (req, reply) => {
    if (!o.authorize(req, reply, 'read')) return reply;
    return reply.code(200).type('application/x-ndjson').send(ndjson(o.blobs.list()));
  });

  app.get<{ Params: { digest: string } }>('/cas/v1/blobs/:digest', async (req, reply) => {
    if (!o.authorize(req, reply, 'read')) return reply;
    try {
      assertDigest(req.params.digest);
      const bytes = await o.blobs.getBuffer(req.params.digest);
      if (!bytes) return reply.code(404).send({ error: 'not found' });
      const range = /^bytes=(\d+)-(\d+)$/.exec(String(req.headers.range ?? ''));
      if (range) {
        const start = Number(range[1]);
        const end = Math.min(Number(range[2]), bytes.length - 1);
        if (start > end) return reply.code(416).send({ error: ErrorCodes.BAD_INPUT, message: 'range not satisfiable' });
        return reply.code(206).header('content-range', `bytes ${start}-${end}/${bytes.length}`).type('application/octet-stream').send(bytes.subarray(start, end + 1));
      }
      return reply.code(200).type('application/octet-stream').send(bytes);
    } catch (err) {
      return o.fail(req, reply, err);
    }
  });

  app.delete<{ Params: { digest: string } }>('/cas/v1/blobs/:digest', async (req, reply) => {
    const principal = o.authorize(req, reply, 'write');
    if (!principal) return reply;
    // Deleting a blob turns every entry that needs it, in any namespace, into one that may be replaced.
    if (principal.namespaces) return reply.code(403).send({ error: 'forbidden', message: 'a namespace-scoped token cannot delete blobs' });
    try {
      assertDigest(req.params.digest);
      return reply.code((await o.blobs.delete(req.params.digest)) ? 204 : 404).send();
    } catch (err) {
      return o.fail(req, reply, err);
    }
  });

  type AcParams = { Params: { namespace: string; key: string }; Querystring: { replace?: string } };
  const acTarget = (req: FastifyRequest<AcParams>) => {
    assertNamespace(req.params.namespace);
    assertDigest(req.params.key, 'action key');
    return [req.params.namespace, req.params.key] as const;
  };

  const forbidden = (reply: FastifyReply, namespace: string): FastifyReply => reply.code(403).send({ error: 'forbidden', message: `this token's scope does not include namespace ${namespace}` });

  app.get<AcParams>('/cas/v1/ac/:namespace/:key', async (req, reply) => {
    const principal = o.authorize(req, reply, 'read');
    if (!principal) return reply;
    try {
      const target = acTarget(req);
      if (!readsNamespace(principal, target[0])) return forbidden(reply, target[0]);
      const bytes = await o.entries.get(...target);
      return bytes ? reply.code(200).type('application/json').send(bytes) : reply.code(404).send({ error: 'not found' });
    } catch (err) {
      return o.fail(req, reply, err);
    }
  });

  app.put<AcParams>('/cas/v1/ac/:namespace/:key', async (req, reply) => {
    const principal = o.authorize(req, reply, 'write');
    if (!principal) return reply;
    try {
      const [namespace, key] = acTarget(req);
      if (!writesNamespace(principal, namespace)) return forbidden(reply, namespace);
      const bytes = await readAll(req.raw, MAX_AC_ENTRY_BYTES);
      // Only what this store's readers could serve: a body they would reject is never stored.
      const checked = o.actionCache.check(namespace, key, bytes);
      if (typeof checked === 'string') return reply.code(400).send({ error: ErrorCodes.BAD_INPUT, message: `not a servable action-cache entry for this key: ${checked}` });
      if (req.query.replace === '1') {
        const existing = await o.entries.get(namespace, key);
        // Write-once: replacing an entry readers can serve takes an admin token.
        if (existing && typeof o.actionCache.check(namespace, key, existing) !== 'string' && principal.access !== 'admin') {
          return reply.code(409).type('application/json').send(existing);
        }
        await o.entries.replace(namespace, key, bytes);
        return reply.code(201).send({ created: true });
      }
      const r = await o.entries.putIfAbsent(namespace, key, bytes);
      return r.created ? reply.code(201).send({ created: true }) : reply.code(409).type('application/json').send(r.existing);
    } catch (err) {
      return o.fail(req, reply, err);
    }
  });

  app.delete<AcParams>('/cas/v1/ac/:namespace/:key', async (req, reply) => {
    // Deleting breaks write-once as much as replacing does.
    if (!o.authorize(req, reply, 'admin')) return reply;
    try {
      return reply.code((await o.entries.delete(...acTarget(req))) ? 204 : 404).send();
    } catch (err) {
      return o.fail(req, reply, err);
    }
  });

  app.get('/cas/v1/ac', async (req, reply) => {
    const principal = o.authorize(req, reply, 'read');
    if (!principal) return reply;
    const entries = o.entries.list();
    const visible = async function* () {
      for await (const e of entries) if (readsNamespace(principal, e.namespace)) yield e;
    };
    return reply.code(200).type('application/x-ndjson').send(ndjson(visible()));
  });

  app.put<{ Params: { digest: string } }>('/cas/v1/roots/:digest', async (req, reply) => {
    if (!o.authorize(req, reply, 'write')) return reply;
    try {
      assertDigest(req.params.digest, 'root digest');
      let root: StoreRoot;
      try {
        root = JSON.parse((await readAll(req.raw, 64 * 1024)).toString('utf8')) as StoreRoot;
      } catch {
        return reply.code(400).send({ error: ErrorCodes.BAD_INPUT, message: 'a root record must be JSON' });
      }
      if (root?.digest !== req.params.digest) return reply.code(400).send({ error: ErrorCodes.BAD_INPUT, message: 'the record names another digest' });
      await o.roots.add(root);
      return reply.code(201).send({ created: true });
    } catch (err) {
      return o.fail(req, reply, err);
    }
  });

  app.get<{ Params: { digest: string } }>('/cas/v1/roots/:digest', async (req, reply) => {
    if (!o.authorize(req, reply, 'read')) return reply;
    try {
      assertDigest(req.params.digest, 'root digest');
      const root = await o.roots.get(req.params.digest);
      return root ? root : reply.code(404).send({ error: 'not found' });
    } catch (err) {
      return o.fail(req, reply, err);
    }
  });
}
