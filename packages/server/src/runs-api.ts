/**
 * Run records and prefetch, for the agent in front of remote tiers (the Nx plugin's hooks call these):
 *
 * - `POST /_cascache/run` `{tool, namespace?, branch, commit, targets, startTime, hashes}` (write): after a run,
 *   journals its shared run record (remote/runs.ts) for upload, listing the action keys of those
 *   tool hashes that have an entry here. 200 `{recorded: <keys>}`; 400 for a malformed body.
 * - `POST /_cascache/prefetch` `{tool, branches, commit?}` (read): before a run, starts fetching what
 *   the most relevant earlier run produced (prefetch.ts) and answers at once, 202 `{started: true}`;
 *   the tool's lookups meanwhile join the downloads (single-flight). One prefetch at a time.
 * - `GET /_cascache/prefetch` (read): the last prefetch's report, or null while it runs.
 *
 * Without remote tiers both POSTs answer 200 and do nothing.
 */
import { computeActionKey, ErrorCodes, findRun, isCommitId, prefetchRun, type LayeredStore, type PrefetchReport } from '@cascache/core';
import { NAMESPACE_RE } from '@cascache/core/format';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { writesNamespace, type Access, type Principal } from './auth';

export interface RunsApiOptions {
  layered?: LayeredStore;
  /** Action-cache namespace of the tool's entries. */
  namespace: string;
  authorize: (req: FastifyRequest, reply: FastifyReply, access: Access) => Principal | null;
  fail: (req: FastifyRequest, reply: FastifyReply, err: unknown) => FastifyReply;
}

/** Action keys per tool hash, as the protocol adapters compute them. */
const KEY_OF: Record<string, (namespace: string, hash: string) => string> = {
  nx: (namespace, hash) => computeActionKey(['nx', namespace, hash]),
  turbo: (team, hash) => computeActionKey(['turbo', team, hash]),
};
const MAX_HASHES = 100_000;
const isName = (v: unknown): v is string => typeof v === 'string' && v.length > 0 && v.length <= 1024;

export function registerRunsApi(app: FastifyInstance, o: RunsApiOptions): void {
  let running: Promise<void> | null = null;
  let last: PrefetchReport | null = null;

  app.post<{ Body: Record<string, unknown> | undefined }>('/_cascache/run', async (req, reply) => {
    const principal = o.authorize(req, reply, 'write');
    if (!principal) return reply;
    const b = req.body ?? {};
    const keyOf = typeof b.tool === 'string' ? KEY_OF[b.tool] : undefined;
    const hashes = b.hashes;
    if (
      !keyOf ||
      !(b.namespace === undefined || (typeof b.namespace === 'string' && NAMESPACE_RE.test(b.namespace))) ||
      !(b.branch === null || isName(b.branch)) ||
      !(b.commit === null || isCommitId(b.commit)) ||
      !Array.isArray(b.targets) ||
      !b.targets.every(isName) ||
      !Number.isSafeInteger(b.startTime) ||
      !Array.isArray(hashes) ||
      hashes.length > MAX_HASHES ||
      !hashes.every((h) => typeof h === 'string' && /^[A-Za-z0-9_-]{1,128}$/.test(h))
    ) {
      return reply.code(400).send({ error: ErrorCodes.BAD_INPUT, message: 'body must be {"tool": "nx" | "turbo", "namespace"?: string, "branch", "commit", "targets": [string], "startTime": ms, "hashes": [string]}' });
    }
    const namespace = (b.namespace as string | undefined) ?? principal.namespaces?.write ?? o.namespace;
    if (!writesNamespace(principal, namespace)) return reply.code(403).send({ error: 'forbidden', message: `this token's scope does not include namespace ${namespace}` });
    if (!o.layered) return { recorded: 0 };
    try {
      const keys: string[] = [];
      for (const h of new Set(hashes as string[])) {
        const key = keyOf(namespace, h);
        if (await o.layered.local.actionCache.peek(namespace, key)) keys.push(key);
      }
      if (keys.length > 0) {
        await o.layered.recordRun({ tool: b.tool as string, namespace, branch: b.branch as string | null, commit: b.commit as string | null, targets: b.targets as string[], startTime: b.startTime as number, keys });
      }
      return { recorded: keys.length };
    } catch (err) {
      return o.fail(req, reply, err);
    }
  });

  app.post<{ Body: Record<string, unknown> | undefined }>('/_cascache/prefetch', async (req, reply) => {
    if (!o.authorize(req, reply, 'read')) return reply;
    const b = req.body ?? {};
    const branches = b.branches;
    if (typeof b.tool !== 'string' || !Array.isArray(branches) || branches.length > 8 || !branches.every((x) => x === null || isName(x)) || !(b.commit === undefined || isCommitId(b.commit))) {
      return reply.code(400).send({ error: ErrorCodes.BAD_INPUT, message: 'body must be {"tool": string, "branches": [string | null], "commit"?: hex}' });
    }
    const layered = o.layered;
    if (!layered || running) return reply.code(200).send({ started: false });
    last = null;
    running = (async () => {
      const found = await findRun(layered, { tool: b.tool as string, branches: branches as Array<string | null>, commit: b.commit as string | undefined });
      last = found ? await prefetchRun(layered, found) : { run: null, entries: 0, local: 0, fetched: 0, missing: 0, blobs: 0, bytes: 0, ms: 0 };
      req.log.info({ run: found?.key ?? null, entries: last.entries, local: last.local, fetched: last.fetched, missing: last.missing, bytes: last.bytes, ms: Math.round(last.ms) }, 'prefetch done');
    })()
      .catch((err) => req.log.warn({ err }, 'prefetch failed'))
      .finally(() => {
        running = null;
      });
    return reply.code(202).send({ started: true });
  });

  app.get('/_cascache/prefetch', async (req, reply) => {
    if (!o.authorize(req, reply, 'read')) return reply;
    const r = last as PrefetchReport | null;
    // The run's own key list can be long: name it instead.
    return { running: running !== null, report: r && { ...r, run: r.run && { tier: r.run.tier, key: r.run.key, branch: r.run.run.branch, commit: r.run.run.commit, startTime: r.run.run.startTime } } };
  });
}
