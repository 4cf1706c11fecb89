/**
 * Opening a store and listening: shared by `cascache serve` (team server) and the Nx plugin's
 * per-workspace agent. Refuses to expose an unauthenticated server beyond loopback unless told to.
 */
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { CascacheError, ErrorCodes, LayeredStore, openLocalStore, openRemoteTier, Trust, type AcMissReason, type LocalStore, type TierConfig } from '@cascache/core';
import { SECRET_MISMATCH_HINT, UNTRUSTED_HINT } from './agent-control';
import { isLoopback, type TokenConfig } from './auth';
import { AutoEvictor } from './auto-evict';
import { ActivityLog } from './report';
import { dashboardData } from './dashboard';
import { ServerMetrics, type StoreGauges } from './metrics';
import type { CrashPoint } from './artifacts';
import { createServer, type CascacheServer, type ServerOptions } from './server';

export interface ListenOptions {
  storeDir: string;
  host: string;
  /** 0 picks a free port. */
  port: number;
  /**
   * Listen on this Unix domain socket (a named pipe on Windows) instead of `host:port`: the agent's
   * worker, which only its front talks to. `url` is then `http://unix:<path>` and `port` 0.
   */
  socketPath?: string;
  tokens?: TokenConfig;
  /** Action-cache signing secret (>= 32 bytes) or null for an unsigned local store. */
  secret: Uint8Array | null;
  /** Signing key and trusted keys per namespace (core's trust.ts); default: from `secret`. */
  trust?: Trust;
  /** Namespace Nx entries are written to. Default `default`. */
  namespace?: string;
  /** Namespaces Nx lookups read, in order; default `[namespace]`. */
  readNamespaces?: string[];
  gzipLevel?: number;
  /** Allow binding beyond loopback with no token configured. */
  allowUnauthenticated?: boolean;
  logger?: ServerOptions['logger'];
  onRequest?: () => void;
  writer?: string;
  /** Evict automatically above this many bytes on disk (off the request path). */
  maxSizeBytes?: number;
  /** Remote tiers behind the local store, fastest first. */
  tiers?: TierConfig[];
  /** Upload to remote tiers before answering a PUT (CI); default write-behind. */
  syncUploads?: boolean;
  /** Store Nx uploads behind their answer (the loopback agent; see ServerOptions.deferIngest). */
  deferIngest?: boolean;
  /** Bytes of hot bodies kept under `<store>/v1/hot` (see ServerOptions.hotBodies); default 0, off. */
  hotBodiesBytes?: number;
  /** Kill the process with SIGKILL at this point of every upload: for the fault suite only. */
  crashAt?: CrashPoint;
}

export interface Listening {
  server: CascacheServer;
  store: LocalStore;
  url: string;
  port: number;
  /** Present when `maxSizeBytes` was given. */
  evictor?: AutoEvictor;
  /** Present when tiers were given. */
  layered?: LayeredStore;
}


/** The store's size and entries (from its index) and each remote tier's journal and breaker, for /metrics. */
function storeGauges(store: LocalStore, layered: LayeredStore | undefined): StoreGauges {
  return {
    store: () => {
      if (!store.index) return null;
      const c = store.index.counts();
      return { storedBytes: c.storedBytes, logicalBytes: c.logicalBytes, entries: c.entries, blobs: c.blobs };
    },
    tiers: async () => {
      if (!layered) return [];
      const journal = await layered.journal.tiers();
      return Promise.all(
        layered.remotes.map(async (t) => {
          const j = journal.find((x) => x.name === t.name);
          const oldest = await layered.journal.oldestPending(t.name);
          return { tier: t.name, pending: j?.pending ?? 0, setAside: j?.failed ?? 0, oldestAgeSeconds: oldest === null ? 0 : Math.max(0, (Date.now() - oldest) / 1000), breakerOpen: t.breaker.isOpen };
        }),
      );
    },
  };
}

/**
 * Opens the store and listens.
 * @throws CascacheError `E_CONFIG` when asked to listen beyond loopback with no token, or when the
 * write namespace accepts only trusted keys and this process has no trusted signing key for it.
 */
export async function listen(options: ListenOptions): Promise<Listening> {
  const trust = options.trust ?? new Trust({ secret: options.secret });
  const unwritable = trust.writableProblem(options.namespace ?? 'default');
  if (unwritable) throw new CascacheError(ErrorCodes.CONFIG, `${unwritable}; write to a namespace of your own (CASCACHE_NAMESPACE) and read this one through CASCACHE_READ_NAMESPACES`);
  const tokens = options.tokens ?? {};
  const noTokens = !(tokens.readWrite?.length || tokens.readOnly?.length || tokens.scoped?.length);
  if (noTokens && !isLoopback(options.host) && !options.allowUnauthenticated) {
    throw new CascacheError(
      ErrorCodes.CONFIG,
      `refusing to listen on ${options.host} with no token: anyone who can reach it could poison the cache. ` +
        'Configure tokens, listen on 127.0.0.1, or pass --allow-unauthenticated.',
    );
  }
  let log: CascacheServer['log'] | null = null;
  const activity = new ActivityLog();
  const warned = new Set<string>();
  const metrics = new ServerMetrics();
  const onEntryWarning = (w: { namespace: string; key: string; reason: AcMissReason }): void => {
    activity.recordUnservable(w.reason);
    metrics.unservable(w.reason);
    if ((w.reason !== 'bad-signature' && w.reason !== 'untrusted') || warned.has(w.reason)) return;
    // Once per process and reason here; each run's summary gives its own count.
    warned.add(w.reason);
    if (w.reason === 'bad-signature') log?.warn({ namespace: w.namespace, key: w.key }, `an action-cache entry did not verify with this secret and was not served: ${SECRET_MISMATCH_HINT}`);
    else log?.warn({ namespace: w.namespace, key: w.key }, `an action-cache entry was signed by no key this machine trusts for its namespace and was not served: ${UNTRUSTED_HINT}`);
  };
  const store = await openLocalStore({ root: options.storeDir, secret: options.secret, trust, writer: options.writer, onWarning: onEntryWarning });
  let evictor: AutoEvictor | undefined;
  const tiers = (options.tiers ?? []).map((t) =>
    openRemoteTier(t, { breaker: { onOpen: (name, err, ms) => log?.warn({ tier: name, code: err.code }, `remote tier unreachable; skipping it for ${Math.round(ms / 1000)} s (uploads stay journaled)`), onClose: (name) => log?.info({ tier: name }, 'remote tier reachable again') } }),
  );
  const layered =
    tiers.length > 0
      ? new LayeredStore({
          local: store,
          remotes: tiers,
          secret: options.secret,
          trust,
          onEntryWarning,
          sync: options.syncUploads,
          onEvent: (e) => {
            if (e.type === 'warning') log?.warn({ tier: e.tier, code: e.code }, e.message);
            else if (e.type === 'uploaded') log?.info({ tier: e.tier, ...e.stats }, 'uploaded to remote tier');
            else if (e.type === 'yielded') log?.info({ tier: e.tier, namespace: e.namespace, key: e.key }, 'another writer stored this key in the tier first: its entry replaces the one stored here');
          },
        })
      : undefined;
  metrics.setGauges(storeGauges(store, layered));
  const server = createServer({
    layered,
    chunkApi: { blobs: store.blobs, entries: store.entries, roots: store.roots },
    blobs: store.blobs,
    actionCache: store.actionCache,
    tokens,
    namespace: options.namespace,
    readNamespaces: options.readNamespaces,
    gzipLevel: options.gzipLevel,
    logger: options.logger,
    onRequest: options.onRequest,
    onUpload: (e) => {
      if (e.outcome === 'stored') evictor?.kick();
    },
    atPoint: options.crashAt
      ? (point) => {
          if (point === options.crashAt) process.kill(process.pid, 'SIGKILL');
        }
      : undefined,
    deferIngest: options.deferIngest ? { spoolDir: join(options.storeDir, 'v1', 'tmp') } : undefined,
    spoolDir: join(options.storeDir, 'v1', 'tmp'),
    activity,
    metrics,
    dashboard: () => dashboardData(store, layered),
    hotBodies: options.hotBodiesBytes ? { dir: join(options.storeDir, 'v1', 'hot'), maxBytes: options.hotBodiesBytes } : undefined,
  });
  if (options.maxSizeBytes !== undefined) {
    evictor = new AutoEvictor(store, {
      maxBytes: options.maxSizeBytes,
      onEvict: (e) => {
        metrics.eviction('error' in e ? 'failed' : e.result);
        if ('error' in e) server.log.error({ err: e.error }, 'eviction failed');
        else server.log.info({ before: e.before, ...e.result }, 'evicted to stay under the maximum size');
      },
    });
    server.addHook('onClose', async () => evictor?.stop());
  }
  log = server.log;
  // What a request changed is in the index before its answer is sent: a client that reads the index
  // next (`cascache stats` after an Nx run) sees it. One commit per changing request, not per blob.
  server.addHook('onSend', async (req) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') store.index?.flush();
  });
  layered?.start(); // replays what the journal holds from earlier runs
  server.addHook('onClose', async () => {
    await layered?.close();
    store.close(); // the index's queued updates, last
  });
  await server.listen(options.socketPath ? { path: options.socketPath } : { host: options.host, port: options.port });
  // Load cloud SDKs and open connections now, while the client is still hashing its tasks.
  for (const t of tiers) setImmediate(() => void t.warm());
  setImmediate(() => metrics.warm());
  if (options.socketPath) return { server, store, url: `http://unix:${options.socketPath}`, port: 0, evictor, layered };
  const { port } = server.server.address() as AddressInfo;
  const host = options.host.includes(':') && !options.host.startsWith('[') ? `[${options.host}]` : options.host;
  return { server, store, url: `http://${host}:${port}`, port, evictor, layered };
}
