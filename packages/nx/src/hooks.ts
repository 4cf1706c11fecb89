/**
 * The Nx task-lifecycle hooks (Nx >= 20.4; the supported way to plug a cache into Nx since custom
 * task runners were removed in Nx 21).
 *
 * `preTasksExecution` makes sure the workspace's agent runs and points Nx's self-hosted remote cache
 * client at it by setting `NX_SELF_HOSTED_REMOTE_CACHE_SERVER` and `_ACCESS_TOKEN` (Nx picks up
 * `process.env` assignments made here, with the daemon on and off). A server the user configured
 * is left alone. If the agent cannot start, the build goes on with Nx's local cache and one warning:
 * a failing cache never fails a build.
 *
 * `postTasksExecution` prints one summary line and records the run in the store. In CI (`CI=true`)
 * with remote tiers it first waits (bounded by `ciUploadWaitMs`) for the agent's upload journal to
 * drain, so the job does not end with uploads pending, and reports bytes uploaded and what dedup saved.
 */
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { agentConfig, callAgent, ensureAgent, isCi, setAsideLine, unservableLine, uploadLine, type AgentInfo, type EnsureAgentOptions, type FlushReport } from './agent';
import { defaultBranch, gitState, type GitState } from '@cascache/core/git';
import { checkOptions, resolveStoreDir, type CascacheNxOptions } from './options';

/** Set alongside Nx's variables so a later run can tell our setting from a user's. */
const OURS = 'CASCACHE_NX_AGENT_URL';
const SERVER = 'NX_SELF_HOSTED_REMOTE_CACHE_SERVER';
const TOKEN = 'NX_SELF_HOSTED_REMOTE_CACHE_ACCESS_TOKEN';

interface PreContext {
  workspaceRoot: string;
}
interface TaskResultLike {
  /** Nx 22+ times a task on the task itself; earlier versions on the result. */
  /** `cache` is false for a task Nx does not cache (Nx 20+). */
  task: { id: string; hash?: string; cache?: boolean; startTime?: number; endTime?: number };
  status: string;
  startTime?: number;
  endTime?: number;
}

/** How long a task ran, ms, when Nx says. */
function durationMs(r: TaskResultLike): number | undefined {
  const start = r.task.startTime ?? r.startTime;
  const end = r.task.endTime ?? r.endTime;
  return start !== undefined && end !== undefined ? end - start : undefined;
}
interface PostContext {
  id?: string;
  workspaceRoot: string;
  taskResults: Record<string, TaskResultLike>;
  startTime?: number;
  endTime?: number;
}

let agentFromPre: { info: AgentInfo; storeDir: string; git?: GitState } | undefined;

/** The agent a run needs, or null when the plugin is off or the user points Nx at their own server. */
function agentSettings(options: CascacheNxOptions | undefined, workspaceRoot: string): { storeDir: string; ensure: EnsureAgentOptions; secretEnv: string; droppedTiers: boolean } | null {
  if (options?.disabled || process.env.CASCACHE_DISABLE === '1') return null;
  const configured = process.env[SERVER];
  if (configured && configured !== process.env[OURS]) return null; // the user's own server (a team server)
  const storeDir = resolveStoreDir(options, workspaceRoot, process.env);
  const secretEnv = options?.signingSecretEnv ?? 'CASCACHE_SECRET';
  const secret = process.env[secretEnv];
  const tiers = options?.tiers?.length ? JSON.stringify(options.tiers) : process.env.CASCACHE_TIERS || undefined;
  // Per job (CI sets the PR's namespace), then nx.json for the whole workspace.
  const trustedKeys = process.env.CASCACHE_TRUSTED_KEYS || (options?.trustedKeys ? JSON.stringify(options.trustedKeys) : undefined);
  const verified = Boolean(secret || trustedKeys);
  return {
    storeDir,
    secretEnv,
    // Entries from a shared tier must be verified: without a secret or trusted keys, use the local store only.
    droppedTiers: Boolean(tiers && !verified),
    ensure: {
      storeDir,
      secret,
      signingKey: process.env[options?.signingKeyEnv ?? 'CASCACHE_SIGNING_KEY'] || undefined,
      trustedKeys,
      namespace: process.env.CASCACHE_NAMESPACE || options?.namespace,
      readNamespaces: process.env.CASCACHE_READ_NAMESPACES || options?.readNamespaces?.join(','),
      idleTimeoutMs: options?.idleTimeoutMs,
      maxSize: options?.maxSize,
      tiers: verified ? tiers : undefined,
      syncUploads: options?.syncUploads ?? process.env.CASCACHE_SYNC_UPLOADS === '1',
    },
  };
}

/**
 * The Nx majors this plugin is tested on (e2e/test/nx-add.spec.ts runs `nx add` on each: 22-24 in
 * `npm test`, 21 too in `npm run test:nx-matrix`), as its peer range `nx >=21 <25` says. Older
 * majors get one line and Nx's own cache; newer ones are tried, with a note.
 */
export const SUPPORTED_NX_MAJORS = { oldest: 21, newest: 24 } as const;

/**
 * The workspace's Nx version (from its `nx/package.json`), and whether the plugin runs on it: null
 * when it does, else the one line that says why not. An unreadable version counts as supported.
 */
export function nxVersionCheck(workspaceRoot: string): { refusal: string | null; note: string | null } {
  let version: string | undefined;
  try {
    // Read, not require()d: a long-lived plugin worker (the daemon's) must see an upgrade.
    const file = createRequire(join(workspaceRoot, 'package.json')).resolve('nx/package.json');
    version = (JSON.parse(readFileSync(file, 'utf8')) as { version?: unknown }).version as string | undefined;
  } catch {
    return { refusal: null, note: null };
  }
  const major = Number.parseInt(String(version), 10);
  const { oldest, newest } = SUPPORTED_NX_MAJORS;
  if (!Number.isFinite(major)) return { refusal: null, note: null };
  if (major < oldest) {
    return { refusal: `cascache: Nx ${version} is older than this plugin supports (Nx ${oldest} to ${newest}); this run uses Nx's own cache. Upgrade Nx, or remove @cascache/nx from nx.json's plugins.`, note: null };
  }
  return { refusal: null, note: major > newest ? `cascache: Nx ${version} is newer than the versions this plugin is tested on (Nx ${oldest} to ${newest}); report what breaks.` : null };
}

/** An agent start begun during the graph phase, by its settings' fingerprint, with when (ms). */
let early: { config: string; agent: Promise<AgentInfo>; at: number } | undefined;
/** An early start older than this is not trusted (the daemon keeps workers between runs): probe again. */
const EARLY_FRESH_MS = 60_000;

/**
 * Starts (or finds) the agent while Nx computes the project graph, so a cold start (~250 ms: a
 * Node process, the server and the store) overlaps the graph instead of delaying the first task.
 * Called from the plugin's `createDependencies`; never throws (the pre-run hook reports failures).
 */
export function startAgentEarly(given: CascacheNxOptions | undefined, workspaceRoot: string): void {
  const { options } = checkOptions(given);
  try {
    const settings = agentSettings(options, workspaceRoot);
    if (!settings || early || nxVersionCheck(workspaceRoot).refusal) return;
    const agent = ensureAgent(settings.ensure);
    agent.catch(() => undefined); // observed by preTasksExecution
    early = { config: agentConfig(settings.ensure), agent, at: Date.now() };
  } catch {
    // preTasksExecution tries again and says what went wrong.
  }
}

export async function preTasksExecution(given: CascacheNxOptions | undefined, context: PreContext): Promise<void> {
  // Said here, once per run; the other hooks use the same checked options without repeating it.
  const { options, problems } = checkOptions(given);
  // This run's agent, once found: a long-lived plugin worker (the daemon's) must not report a
  // later run, one the plugin sat out, against an earlier run's agent.
  agentFromPre = undefined;
  for (const p of problems) console.warn(`cascache: nx.json, plugin @cascache/nx: ${p}`);
  const settings = agentSettings(options, context.workspaceRoot);
  if (!settings) return;
  const nx = nxVersionCheck(context.workspaceRoot);
  if (nx.refusal) {
    console.warn(nx.refusal);
    return;
  }
  if (nx.note) console.warn(nx.note);
  const { storeDir, secretEnv } = settings;
  try {
    if (settings.droppedTiers) console.warn(`cascache: remote tiers need $${secretEnv} (32+ bytes, the same on every machine) or trusted keys (CASCACHE_TRUSTED_KEYS); this run uses the local store only`);
    const started = early && early.config === agentConfig(settings.ensure) && Date.now() - early.at < EARLY_FRESH_MS ? early.agent : undefined;
    early = undefined;
    const info = await (started ?? ensureAgent(settings.ensure)).catch((err: unknown) => (started ? ensureAgent(settings.ensure) : Promise.reject(err)));
    const url = `http://127.0.0.1:${info.port}`;
    process.env[SERVER] = url;
    process.env[TOKEN] = options?.readOnly ? info.readOnlyToken : info.token;
    process.env[OURS] = url;
    agentFromPre = { info, storeDir };
    if (settings.ensure.tiers) {
      // Fetch what the last run of this branch (else the default branch) produced, while Nx hashes
      // its tasks; the agent answers at once and Nx's lookups join the downloads.
      const git = gitState(context.workspaceRoot, process.env);
      agentFromPre.git = git;
      const branches = [...new Set([git.branch, defaultBranch(options?.defaultBranch, context.workspaceRoot)])];
      await callAgent(info, '/_cascache/prefetch', { tool: 'nx', branches, ...(git.commit ? { commit: git.commit } : {}) }, 1000);
    }
  } catch (err) {
    console.warn(`cascache: the local agent could not start (${(err as Error).message}); this run uses Nx's local cache only`);
  }
}

export interface RunSummary {
  tasks: number;
  fromCascache: number;
  fromLocalCache: number;
  ran: number;
  failed: number;
  bytesReceived: number;
  bytesStored: number;
  /** Uploads the agent answered and is still storing (not in the byte figures yet). */
  stillStoring?: number;
  /** Sum of the original durations of tasks served from cascache, ms (what the hits saved). */
  savedMs?: number;
}

/** The summary line, e.g. `cascache: 14 tasks, 12 from cascache, 2 run; received 3.1 MB, stored 41 kB new`. */
export function summaryLine(s: RunSummary): string {
  // The light entry: the main one loads native modules (~40 ms) that a summary does not need.
  const { formatBytes } = require('@cascache/core/format') as typeof import('@cascache/core/format');
  const parts = [`${s.tasks} tasks`, `${s.fromCascache} from cascache`];
  if (s.fromLocalCache) parts.push(`${s.fromLocalCache} from Nx's local cache`);
  parts.push(`${s.ran} run`);
  if (s.failed) parts.push(`${s.failed} failed`);
  // Stored can exceed received: new content, compressed chunk by chunk, can take more room than
  // Nx's one gzip stream. Say so, not a negative saving.
  const dedup =
    s.bytesReceived <= 0
      ? ''
      : s.bytesStored <= s.bytesReceived
        ? ` (${(100 * (1 - s.bytesStored / s.bytesReceived)).toFixed(1)}% saved by dedup and compression)`
        : ` (${(s.bytesStored / s.bytesReceived).toFixed(2)}x the tar.gz Nx sent: new content, compressed chunk by chunk)`;
  const storing = s.stillStoring ? `; ${s.stillStoring} more being stored (\`cascache stats\` counts them)` : '';
  return `cascache: ${parts.join(', ')}; received ${formatBytes(s.bytesReceived)} of outputs, stored ${formatBytes(s.bytesStored)} new${dedup}${storing}`;
}


/** Task statuses after which the output has an entry: served from a cache, or built and stored. */
const PRODUCED = new Set(['remote-cache', 'local-cache', 'local-cache-kept-existing', 'success']);

export async function postTasksExecution(given: CascacheNxOptions | undefined, context: PostContext): Promise<void> {
  const { options } = checkOptions(given);
  if (options?.disabled || process.env.CASCACHE_DISABLE === '1') return;
  const agent = agentFromPre;
  if (!agent || process.env[SERVER] !== process.env[OURS]) return;
  const results = Object.values(context.taskResults ?? {});
  const hashes = results.map((r) => r.task.hash).filter((h): h is string => typeof h === 'string');
  const counts = { remote: 0, local: 0, ran: 0, failed: 0 };
  for (const r of results) {
    if (r.status === 'remote-cache') counts.remote++;
    else if (r.status === 'local-cache' || r.status === 'local-cache-kept-existing') counts.local++;
    else if (r.status === 'failure') counts.failed++;
    else if (r.status === 'success') counts.ran++;
  }
  // Only this run's figures: a full-hit run received nothing, whatever earlier runs stored. The
  // agent stores uploads behind its answers; a developer does not wait for the last ones (the
  // summary says how many), CI does: its machine may be gone a minute later.
  const waitMs = isCi(process.env) ? (options?.ciUploadWaitMs ?? 120_000) : 250;
  const figures = await callAgent<{ bytesReceived: number; bytesStored: number; pending?: number; unservable?: Record<string, number>; setAside?: number }>(agent.info, '/_cascache/report', { hashes, since: context.startTime, waitMs }, waitMs + 2000);
  const summary: RunSummary = {
    tasks: results.length,
    fromCascache: counts.remote,
    fromLocalCache: counts.local,
    ran: counts.ran,
    failed: counts.failed,
    bytesReceived: figures?.bytesReceived ?? 0,
    bytesStored: figures?.bytesStored ?? 0,
    stillStoring: figures?.pending ?? 0,
  };
  console.log(summaryLine(summary));
  // Entries this run found but could not use (a new or different secret, damage): said once, here.
  const unservable = unservableLine(figures?.unservable);
  if (unservable) console.log(unservable);
  // Outside CI nobody waits for uploads, so a permanent failure is only seen here, on the next runs.
  const aside = !isCi(process.env) && setAsideLine(figures?.setAside);
  if (aside) console.log(aside);
  // The same tiers the agent was started with (none without the secret).
  const hasTiers = Boolean(agentSettings(options, context.workspaceRoot)?.ensure.tiers);
  if (hasTiers && !options?.readOnly) {
    // Share what this run produced, so the next fresh machine on this branch can prefetch it.
    const git = agent.git ?? gitState(context.workspaceRoot, process.env);
    const produced = results.filter((r) => r.task.hash && r.task.cache !== false && PRODUCED.has(r.status)).map((r) => r.task.hash as string);
    const targets = [...new Set(results.map((r) => r.task.id.split(':')[1]).filter((t): t is string => Boolean(t)))];
    await callAgent(agent.info, '/_cascache/run', { tool: 'nx', branch: git.branch, commit: git.commit, targets, startTime: Math.round(context.startTime ?? Date.now()), hashes: produced }, 5000);
  }
  const uploadWaitMs = options?.ciUploadWaitMs ?? 120_000;
  if (hasTiers && !options?.readOnly && isCi(process.env) && uploadWaitMs > 0) {
    const flushed = await callAgent<FlushReport>(agent.info, '/_cascache/flush', { timeoutMs: uploadWaitMs, since: context.startTime }, uploadWaitMs + 5000);
    console.log(flushed ? uploadLine(flushed) : 'cascache: could not ask the agent about pending uploads; they stay journaled');
  }
  try {
    const dir = join(agent.storeDir, 'v1', 'runs');
    mkdirSync(dir, { recursive: true });
    // Per task: enough for `cascache stats` to credit a hit with the time the original build took.
    // `cache: false` keeps a task no cache could serve out of the hit rate.
    const tasks = results.map((r) => ({ id: r.task.id, hash: r.task.hash, status: r.status, ms: durationMs(r), ...(r.task.cache === false ? { cache: false } : {}) }));
    const record = { tool: 'nx', id: context.id, startTime: context.startTime, endTime: context.endTime, summary, tasks };
    // Written beside, then renamed: the store index reads each run file once and must never see half of one.
    const name = `${context.startTime ?? Date.now()}-${process.pid}.json`;
    writeFileSync(join(dir, `.${name}.tmp`), `${JSON.stringify(record)}\n`);
    renameSync(join(dir, `.${name}.tmp`), join(dir, name));
  } catch {
    // Stats are best-effort: never fail a build over them.
  }
}
