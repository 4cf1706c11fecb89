/**
 * Prometheus metrics (prom-client) for `cascache serve` and the agent, at `GET /metrics` in the text
 * exposition format 0.0.4. Names and labels follow Prometheus conventions (`cascache_` prefix, base
 * units, `_total` counters, `_bytes`, `_seconds`), and every label has a bounded set of values:
 * routes are Fastify's route patterns (never raw URLs), namespaces beyond the first
 * {@link MAX_NAMESPACE_LABELS} are counted as `other`, tiers are the configured ones.
 *
 * prom-client (and the OpenTelemetry API it loads) is required on first use, not when this module
 * loads: the agent is on the path of every Nx run's start, and loads it right after it listens.
 */
import type * as Prom from 'prom-client';

/** Distinct namespace label values kept; later namespaces are `other`. */
export const MAX_NAMESPACE_LABELS = 32;

/** What the store gauges read at scrape time. */
export interface StoreGauges {
  /** Bytes the store's blobs take on disk, entries, blobs. Null when unknown (no index). */
  store(): { storedBytes: number; logicalBytes: number; entries: number; blobs: number } | null;
  /** Per remote tier: journal records pending and set aside, the oldest pending record's age (s), whether its breaker is open. */
  tiers(): Promise<Array<{ tier: string; pending: number; setAside: number; oldestAgeSeconds: number; breakerOpen: boolean }>>;
}

type Tool = 'nx' | 'turbo';

function create(gauges: () => StoreGauges | undefined) {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const prom = require('prom-client') as typeof Prom;
  const registry = new prom.Registry();
  const m = {
    registry,
    requests: new prom.Counter({ name: 'cascache_http_requests_total', help: 'HTTP requests answered, by protocol, route pattern, method and status', labelNames: ['protocol', 'route', 'method', 'status'], registers: [registry] }),
    duration: new prom.Histogram({
      name: 'cascache_http_request_duration_seconds',
      help: 'Time to answer an HTTP request (until the response is sent), by protocol, route pattern and method',
      labelNames: ['protocol', 'route', 'method'],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers: [registry],
    }),
    lookups: new prom.Counter({ name: 'cascache_lookups_total', help: 'Artifact lookups (GETs) by tool, namespace and result (hit or miss)', labelNames: ['tool', 'namespace', 'result'], registers: [registry] }),
    uploads: new prom.Counter({ name: 'cascache_uploads_total', help: 'Artifact uploads by tool, namespace and outcome (stored, conflict, rejected, failed)', labelNames: ['tool', 'namespace', 'outcome'], registers: [registry] }),
    received: new prom.Counter({ name: 'cascache_received_bytes_total', help: 'Bytes of artifact bodies received in uploads that were stored', labelNames: ['tool'], registers: [registry] }),
    stored: new prom.Counter({ name: 'cascache_stored_bytes_total', help: 'Bytes newly written to the store by uploads (after dedup and compression)', labelNames: ['tool'], registers: [registry] }),
    deduplicated: new prom.Counter({ name: 'cascache_deduplicated_bytes_total', help: 'Bytes of uploads that were not written: received minus newly stored, when positive', labelNames: ['tool'], registers: [registry] }),
    served: new prom.Counter({ name: 'cascache_served_bytes_total', help: 'Bytes of artifact bodies sent to clients', labelNames: ['tool'], registers: [registry] }),
    unservable: new prom.Counter({ name: 'cascache_unservable_entries_total', help: 'Action-cache entries found but not served, by reason (bad-signature, untrusted, malformed, chunks-missing...)', labelNames: ['reason'], registers: [registry] }),
    evictions: new prom.Counter({ name: 'cascache_evictions_total', help: 'Automatic eviction passes that removed something, or failed', labelNames: ['result'], registers: [registry] }),
    evicted: new prom.Counter({ name: 'cascache_evicted_bytes_total', help: 'Bytes freed by automatic eviction', registers: [registry] }),
  };
  {
    const storeGauge = (name: string, help: string, pick: (s: NonNullable<ReturnType<StoreGauges['store']>>) => number) =>
      new prom.Gauge({
        name,
        help,
        registers: [registry],
        collect() {
          const s = gauges()?.store();
          if (s) this.set(pick(s));
        },
      });
    storeGauge('cascache_store_stored_bytes', 'Bytes the store takes on disk (blobs, as stored)', (s) => s.storedBytes);
    storeGauge('cascache_store_logical_bytes', 'Bytes of the outputs the store holds, before dedup and compression', (s) => s.logicalBytes);
    storeGauge('cascache_store_entries', 'Action-cache entries in the store', (s) => s.entries);
    storeGauge('cascache_store_blobs', 'Blobs in the store', (s) => s.blobs);
    const tierGauge = (name: string, help: string, pick: (t: Awaited<ReturnType<StoreGauges['tiers']>>[number]) => number) =>
      new prom.Gauge({
        name,
        help,
        labelNames: ['tier'],
        registers: [registry],
        async collect() {
          this.reset();
          for (const t of (await gauges()?.tiers()) ?? []) this.set({ tier: t.tier }, pick(t));
        },
      });
    tierGauge('cascache_upload_journal_pending_records', 'Uploads journaled for a remote tier and not yet sent', (t) => t.pending);
    tierGauge('cascache_upload_journal_set_aside_records', 'Uploads set aside after permanent errors (cascache flush --retry-set-aside)', (t) => t.setAside);
    tierGauge('cascache_upload_journal_oldest_age_seconds', 'Age of the oldest pending upload for a remote tier', (t) => t.oldestAgeSeconds);
    tierGauge('cascache_tier_breaker_open', '1 while a remote tier is skipped after failures (its circuit breaker is open), else 0', (t) => (t.breakerOpen ? 1 : 0));
  }
  return m;
}

/** The route's protocol, from its pattern: `nx`, `turbo`, `cas` (chunk API), `cascache` (agent routes), `other`. */
export function protocolOf(route: string): string {
  if (route.startsWith('/v1/cache')) return 'nx';
  if (route.startsWith('/v8/')) return 'turbo';
  if (route.startsWith('/cas/')) return 'cas';
  if (route.startsWith('/_cascache/')) return 'cascache';
  return 'other';
}

/** The metrics of one server; every method is cheap and never throws. */
export class ServerMetrics {
  private loaded: ReturnType<typeof create> | undefined;
  private readonly namespaces = new Set<string>();
  private gauges: StoreGauges | undefined;

  private get m(): ReturnType<typeof create> {
    return (this.loaded ??= create(() => this.gauges));
  }

  /** What the store and tier gauges read at scrape time (without it they are absent). */
  setGauges(gauges: StoreGauges): void {
    this.gauges = gauges;
  }

  /** Loads prom-client now (after listening), so no request pays for it. */
  warm(): void {
    void this.m;
  }

  /** The text exposition of every metric, and its content type. */
  async expose(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.m.registry.contentType, body: await this.m.registry.metrics() };
  }

  private ns(namespace: string): string {
    if (this.namespaces.has(namespace)) return namespace;
    if (this.namespaces.size >= MAX_NAMESPACE_LABELS) return 'other';
    this.namespaces.add(namespace);
    return namespace;
  }

  request(route: string | undefined, method: string, status: number, seconds: number): void {
    const r = route ?? 'unmatched';
    const protocol = protocolOf(r);
    this.m.requests.inc({ protocol, route: r, method, status: String(status) });
    this.m.duration.observe({ protocol, route: r, method }, seconds);
  }

  lookup(tool: Tool, namespace: string, hit: boolean): void {
    this.m.lookups.inc({ tool, namespace: this.ns(namespace), result: hit ? 'hit' : 'miss' });
  }

  served(tool: Tool, bytes: number): void {
    if (bytes > 0) this.m.served.inc({ tool }, bytes);
  }

  upload(tool: Tool, namespace: string, outcome: string, bytesReceived = 0, bytesStored = 0): void {
    this.m.uploads.inc({ tool, namespace: this.ns(namespace), outcome });
    if (outcome !== 'stored') return;
    this.m.received.inc({ tool }, bytesReceived);
    this.m.stored.inc({ tool }, bytesStored);
    if (bytesReceived > bytesStored) this.m.deduplicated.inc({ tool }, bytesReceived - bytesStored);
  }

  unservable(reason: string): void {
    this.m.unservable.inc({ reason });
  }

  eviction(result: { freedBytes: number } | 'failed'): void {
    if (result === 'failed') this.m.evictions.inc({ result: 'failed' });
    else if (result.freedBytes > 0) {
      this.m.evictions.inc({ result: 'evicted' });
      this.m.evicted.inc(result.freedBytes);
    }
  }
}
