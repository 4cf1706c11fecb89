/**
 * The dashboard: one page at `/` (of `cascache serve`, and of `cascache dashboard` for a local
 * store) that draws what `cascache stats --json` reports, plus tier health, from
 * `GET /_cascache/dashboard`. Its files ship in this package (`dashboard/`), Chart.js's UMD build is
 * served from the installed `chart.js` package: no CDN, no build step.
 *
 * The page holds no data; the JSON route takes a read token where tokens are configured (the page
 * asks for one and sends it as a bearer token).
 */
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { dirname, join } from 'node:path';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { CascacheError, ErrorCodes, storeReport, storeStats, UploadJournal, type LayeredStore, type LocalStore, type StoreReport } from '@cascache/core';
import { isLoopback, type Access, type Principal } from './auth';

/** One remote tier as the dashboard shows it. */
export interface TierHealth {
  tier: string;
  /** Uploads journaled and not yet sent. */
  pending: number;
  /** Uploads set aside after permanent errors. */
  setAside: number;
  /** Age of the oldest pending upload, s; 0 for none. */
  oldestAgeSeconds: number;
  /** True while the tier is skipped after failures; null when no process is using it (the CLI's view). */
  breakerOpen: boolean | null;
}

/** What `GET /_cascache/dashboard` answers: {@link StoreReport} plus where and when, and the tiers. */
export interface DashboardData extends StoreReport {
  /** ms since the epoch. */
  generatedAt: number;
  storeDir: string;
  /** How new entries are signed here: `ed25519`, `hmac-sha256` or `none`. */
  signing: string;
  tiers: TierHealth[];
}

/** Runs the page's charts and table cover. */
export const DASHBOARD_RUNS = 50;
/** Tasks listed under "misses most". */
export const DASHBOARD_TOP_MISSES = 10;

/** The dashboard's data for a store (and its remote tiers, when a process is using them). */
export async function dashboardData(store: LocalStore, layered?: LayeredStore): Promise<DashboardData> {
  const report = storeReport(store.index, await storeStats(store), { runs: DASHBOARD_RUNS, topMisses: DASHBOARD_TOP_MISSES });
  const journal = layered?.journal ?? new UploadJournal(store.root);
  const known = await journal.tiers();
  const names = layered ? layered.remotes.map((t) => t.name) : known.map((t) => t.name);
  const tiers = await Promise.all(
    names.map(async (name) => {
      const j = known.find((t) => t.name === name);
      const oldest = await journal.oldestPending(name);
      const remote = layered?.remotes.find((t) => t.name === name);
      return { tier: name, pending: j?.pending ?? 0, setAside: j?.failed ?? 0, oldestAgeSeconds: oldest === null ? 0 : Math.round((Date.now() - oldest) / 1000), breakerOpen: remote ? remote.breaker.isOpen : null };
    }),
  );
  return { ...report, generatedAt: Date.now(), storeDir: store.root, signing: store.actionCache.signing, tiers };
}

const ASSETS = join(__dirname, '..', 'dashboard');
const FILES: Record<string, { path: () => string; type: string }> = {
  'dashboard.js': { path: () => join(ASSETS, 'dashboard.js'), type: 'text/javascript; charset=utf-8' },
  'dashboard.css': { path: () => join(ASSETS, 'dashboard.css'), type: 'text/css; charset=utf-8' },
  // The self-contained UMD build, next to the package's CommonJS entry.
  'chart.umd.min.js': { path: () => join(dirname(require.resolve('chart.js')), 'chart.umd.min.js'), type: 'text/javascript; charset=utf-8' },
};

export interface DashboardOptions {
  data: () => Promise<DashboardData>;
  /** Checks a request's token; absent: open (a loopback-only process). */
  authorize?: (req: FastifyRequest, reply: FastifyReply, access: Access) => Principal | null;
  fail: (req: FastifyRequest, reply: FastifyReply, err: unknown) => FastifyReply;
}

/** Serves the page at `/`, its files under `/dashboard/`, and its data at `/_cascache/dashboard`. */
export function registerDashboard(app: FastifyInstance, o: DashboardOptions): void {
  const cache = new Map<string, Buffer>();
  const file = (name: string): Buffer => {
    let b = cache.get(name);
    if (!b) cache.set(name, (b = readFileSync(name === 'index.html' ? join(ASSETS, 'index.html') : FILES[name]!.path())));
    return b;
  };
  // A strict policy: the page runs only its own scripts and talks only to this server.
  const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
  app.get('/', async (_req, reply) => reply.code(200).header('content-security-policy', csp).type('text/html; charset=utf-8').send(file('index.html')));
  app.get<{ Params: { file: string } }>('/dashboard/:file', async (req, reply) => {
    const f = FILES[req.params.file];
    if (!f || !Object.hasOwn(FILES, req.params.file)) return reply.code(404).send({ error: 'not found' });
    return reply.code(200).header('cache-control', 'no-cache').type(f.type).send(file(req.params.file));
  });
  app.get('/_cascache/dashboard', async (req, reply) => {
    if (o.authorize && !o.authorize(req, reply, 'read')) return reply;
    try {
      return reply.code(200).header('cache-control', 'no-store').send(await o.data());
    } catch (err) {
      return o.fail(req, reply, err);
    }
  });
}

/**
 * Serves the dashboard of a local store on its own (`cascache dashboard`): no tokens, so loopback only.
 * @throws CascacheError `E_CONFIG` for a host beyond loopback.
 */
export async function listenDashboard(store: LocalStore, options: { host: string; port: number }): Promise<{ url: string; close: () => Promise<void> }> {
  if (!isLoopback(options.host)) {
    throw new CascacheError(ErrorCodes.CONFIG, `the dashboard of a local store has no tokens, so it listens on loopback only, not ${options.host}; \`cascache serve\` serves it with tokens`);
  }
  const app = Fastify({ logger: false });
  registerDashboard(app, {
    data: () => dashboardData(store),
    fail: (_req, reply, err) => reply.code(500).send({ error: 'E_INTERNAL', message: (err as Error).message }),
  });
  await app.listen({ host: options.host, port: options.port });
  const { port } = app.server.address() as AddressInfo;
  return { url: `http://${options.host.includes(':') ? `[${options.host}]` : options.host}:${port}/`, close: () => app.close() };
}
