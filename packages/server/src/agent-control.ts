/**
 * One agent per store: a detached `@cascache/server/agent` process on 127.0.0.1, found through
 * `<store>/agent.json` (port, pid, tokens; mode 0600). The Nx plugin and `cascache turbo` start it
 * through here (`@cascache/server/agent-control`, node built-ins only, so the Nx plugin's worker
 * loads nothing heavy). Concurrent runs share it: whoever finds no
 * healthy agent takes `<store>/agent.lock` (created exclusively), starts one, publishes it, and
 * releases the lock; the others wait for the file. When the agent is already up, the cost is one
 * file read and one loopback request.
 */
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, fstatSync, mkdirSync, openSync, promises as fsp, readFileSync, renameSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

export interface AgentInfo {
  port: number;
  pid: number;
  /** Read-write bearer token. */
  token: string;
  /** Read-only bearer token (for `readOnly` workspaces). */
  readOnlyToken: string;
  startedAt: string;
  /** Fingerprint of the settings it was started with; a different one means restart it. */
  config?: string;
}

export interface EnsureAgentOptions {
  storeDir: string;
  /** Signing secret for the agent's store, or undefined for an unsigned local store. */
  secret?: string;
  idleTimeoutMs?: number;
  /** Passed to the agent as CASCACHE_MAX_SIZE (e.g. `10GiB`). */
  maxSize?: string;
  /** How long to wait for an agent to come up, ms. Default 15 s. */
  startTimeoutMs?: number;
  /** Remote tiers as JSON (passed as CASCACHE_TIERS; the agent validates them). */
  tiers?: string;
  /** Upload before answering each PUT. */
  syncUploads?: boolean;
  /** Ed25519 private key text (`cascache keygen`); passed as CASCACHE_SIGNING_KEY. */
  signingKey?: string;
  /** Trusted public keys per namespace as JSON; passed as CASCACHE_TRUSTED_KEYS (the agent validates them). */
  trustedKeys?: string;
  /** The namespace Nx entries are written to; passed as CASCACHE_NAMESPACE. */
  namespace?: string;
  /** Namespaces Nx lookups read, in order, comma-separated; passed as CASCACHE_READ_NAMESPACES. */
  readNamespaces?: string;
  /**
   * The environment the agent inherits; its cloud SDKs read credentials, region and endpoints from
   * it. Default `process.env`.
   */
  env?: NodeJS.ProcessEnv;
}

/**
 * Variables the remote tiers' clients read (AWS and Google SDK credential chains, regions, endpoints,
 * profiles; the team-server token). The agent reads them once, when it starts.
 */
const TIER_ENV_RE = /^(AWS_(?!SDK_JS_)|GOOGLE_|GCLOUD_|CLOUDSDK_|CASCACHE_REMOTE_TOKEN$)/;

/**
 * What an agent's behaviour depends on, hashed: tiers, size limit, upload mode, the secret and
 * signing key, trusted keys and namespaces, and with tiers, the tier variables of its environment
 * (credentials exported after the agent started must reach it: a different fingerprint restarts
 * it, as a change of tiers does). Values are hashed, never stored.
 */
export function agentConfig(options: EnsureAgentOptions): string {
  const hashed = (v: string | undefined): string => (v ? createHash('sha256').update(v).digest('hex') : '');
  const secret = hashed(options.secret);
  const trust = options.signingKey || options.trustedKeys || options.namespace || options.readNamespaces ? [hashed(options.signingKey), options.trustedKeys ?? '', options.namespace ?? '', options.readNamespaces ?? ''] : [];
  const env = options.env ?? process.env;
  const tierEnv = options.tiers
    ? Object.keys(env)
        .filter((k) => TIER_ENV_RE.test(k))
        .sort()
        .map((k) => [k, env[k]])
    : [];
  return createHash('sha256')
    .update(JSON.stringify([options.tiers ?? '', options.maxSize ?? '', options.syncUploads === true, secret, tierEnv, ...(trust.length > 0 ? [trust] : [])]))
    .digest('hex')
    .slice(0, 16);
}

const STALE_LOCK_MS = 30_000;

/** GET /healthz with the token; true only for our own live agent. */
export async function probe(info: Pick<AgentInfo, 'port' | 'token'>, timeoutMs = 1000): Promise<boolean> {
  return (await probeState(info, timeoutMs)) === 'ok';
}

/**
 * GET /healthz with the token: `ok` for our own live agent, `restarting` for our agent's front
 * between two workers (503 `{"status":"restarting"}`, agent-front.ts), `down` for anything else.
 */
export function probeState(info: Pick<AgentInfo, 'port' | 'token'>, timeoutMs = 1000): Promise<'ok' | 'restarting' | 'down'> {
  return new Promise((resolvePromise) => {
    const req = request(
      { host: '127.0.0.1', port: info.port, path: '/healthz', headers: { authorization: `Bearer ${info.token}` }, timeout: timeoutMs },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body += d.slice(0, 200)));
        res.on('end', () => resolvePromise(res.statusCode === 200 ? 'ok' : res.statusCode === 503 && body.includes('"restarting"') ? 'restarting' : 'down'));
      },
    );
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolvePromise('down'));
    req.end();
  });
}

function readInfo(storeDir: string): AgentInfo | null {
  try {
    const info = JSON.parse(readFileSync(join(storeDir, 'agent.json'), 'utf8')) as AgentInfo;
    return Number.isInteger(info.port) && typeof info.token === 'string' ? info : null;
  } catch {
    return null;
  }
}

/** Takes the start lock; false when another live process holds it. Breaks locks older than 30 s. */
function tryLock(lockPath: string): boolean {
  try {
    closeSync(openSync(lockPath, 'wx'));
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    try {
      if (Date.now() - statSync(lockPath).mtimeMs > STALE_LOCK_MS) {
        unlinkSync(lockPath);
        return tryLock(lockPath);
      }
    } catch {
      return tryLock(lockPath);
    }
    return false;
  }
}

/**
 * Returns a healthy agent for `storeDir`, starting one if needed.
 * @throws Error when no agent could be started in time (the caller warns and goes on without it).
 */
export async function ensureAgent(options: EnsureAgentOptions): Promise<AgentInfo> {
  const { storeDir } = options;
  const deadline = Date.now() + (options.startTimeoutMs ?? 15_000);
  const config = agentConfig(options);
  const existing = readInfo(storeDir);
  let state = existing ? await probeState(existing) : 'down';
  // Our agent's front between two workers: wait for the new one rather than start a second agent.
  while (existing && state === 'restarting' && Date.now() < deadline - 5000) {
    await new Promise((r) => setTimeout(r, 50));
    state = await probeState(existing);
  }
  if (existing && state !== 'down') {
    if (state === 'ok' && (existing.config ?? agentConfig({ storeDir })) === config) return existing;
    stopAgent(existing); // started with other settings (tiers changed in nx.json), or stuck between workers: replace it
  }

  mkdirSync(storeDir, { recursive: true });
  const lockPath = join(storeDir, 'agent.lock');
  while (!tryLock(lockPath)) {
    // Another run is starting the agent: wait for it to publish agent.json.
    if (Date.now() > deadline) throw new Error(`timed out waiting for another process to start the agent (lock ${lockPath})`);
    await new Promise((r) => setTimeout(r, 50));
    const info = readInfo(storeDir);
    if (info && info.startedAt !== existing?.startedAt && info.config === config && (await probe(info))) return info;
  }
  try {
    const again = readInfo(storeDir);
    if (again && again.config === config && (await probe(again))) return again;
    return await startAgent(options, deadline);
  } finally {
    try {
      unlinkSync(lockPath);
    } catch {
      /* already gone */
    }
  }
}

async function startAgent(options: EnsureAgentOptions, deadline: number): Promise<AgentInfo> {
  const { storeDir } = options;
  const token = randomBytes(24).toString('base64url');
  const readOnlyToken = randomBytes(24).toString('base64url');
  const logPath = join(storeDir, 'agent.log');
  const log = openSync(logPath, 'a');
  const logStart = fstatSync(log).size;
  const child = spawn(process.execPath, [join(__dirname, 'agent-main.js')], {
    detached: true,
    stdio: ['ignore', 'pipe', log],
    env: {
      ...(options.env ?? process.env),
      CASCACHE_AGENT_TOKEN: token,
      CASCACHE_AGENT_RO_TOKEN: readOnlyToken,
      CASCACHE_DIR: storeDir,
      CASCACHE_SECRET: options.secret ?? '',
      CASCACHE_AGENT_IDLE_MS: String(options.idleTimeoutMs ?? 30 * 60 * 1000),
      ...(options.maxSize ? { CASCACHE_MAX_SIZE: options.maxSize } : {}),
      CASCACHE_TIERS: options.tiers ?? '',
      CASCACHE_SYNC_UPLOADS: options.syncUploads ? '1' : '',
      CASCACHE_SIGNING_KEY: options.signingKey ?? '',
      CASCACHE_TRUSTED_KEYS: options.trustedKeys ?? '',
      CASCACHE_NAMESPACE: options.namespace ?? '',
      CASCACHE_READ_NAMESPACES: options.readNamespaces ?? '',
    },
  });
  closeSync(log);
  try {
    const line = await new Promise<string>((resolveLine, reject) => {
      const rl = createInterface({ input: child.stdout! });
      const timer = setTimeout(() => reject(new Error(`the agent did not report a port in time; see ${logPath}`)), Math.max(1000, deadline - Date.now()));
      rl.once('line', (l) => {
        clearTimeout(timer);
        rl.close();
        resolveLine(l);
      });
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`${startFailure(logPath, logStart) ?? `the agent exited with code ${code}`}; see ${logPath}`));
      });
      child.once('error', reject);
    });
    const { port, pid } = JSON.parse(line) as { port: number; pid: number };
    const info: AgentInfo = { port, pid, token, readOnlyToken, startedAt: new Date().toISOString(), config: agentConfig(options) };
    const tmp = join(storeDir, `agent.json.${process.pid}.${randomBytes(4).toString('hex')}`);
    writeFileSync(tmp, `${JSON.stringify(info)}\n`, { mode: 0o600 });
    renameSync(tmp, join(storeDir, 'agent.json'));
    return info;
  } catch (err) {
    child.kill();
    throw err;
  } finally {
    child.stdout?.destroy();
    child.unref();
  }
}

/** The reason an agent that just exited gave in its log (its `cascache agent: ...` line), if any. */
function startFailure(logPath: string, from: number): string | null {
  try {
    const text = readFileSync(logPath).subarray(from).toString('utf8');
    const line = text.split('\n').find((l) => l.startsWith('cascache agent: '));
    return line ? line.slice('cascache agent: '.length).trim() : null;
  } catch {
    return null;
  }
}

/** Asks an agent to stop (SIGTERM: it finishes uploads in flight; the journal keeps the rest). */
function stopAgent(info: AgentInfo): void {
  try {
    process.kill(info.pid, 'SIGTERM');
  } catch {
    /* already gone */
  }
}

/**
 * Stops the store's agent, if one is running, and waits until its process is gone: it finishes the
 * uploads in flight and closes its store (the index's last updates) on the way out, so the store
 * may be moved or deleted afterwards. @returns false when it was still running after `timeoutMs`.
 */
export async function stopStoreAgent(storeDir: string, timeoutMs = 10_000): Promise<boolean> {
  const info = readInfo(storeDir);
  if (!info) return true;
  stopAgent(info);
  const alive = (): boolean => {
    try {
      process.kill(info.pid, 0);
      return true;
    } catch {
      return false;
    }
  };
  for (const end = Date.now() + timeoutMs; alive(); ) {
    if (Date.now() > end) return false;
    await new Promise((r) => setTimeout(r, 10));
  }
  return true;
}

/** Removes a published agent file if it names the given pid (used by tests and `agent stop`). */
export async function forgetAgent(storeDir: string): Promise<void> {
  await fsp.rm(join(storeDir, 'agent.json'), { force: true });
}

/**
 * POSTs JSON to an agent's control route with its read-write token; the parsed answer, or null when
 * the agent did not answer 2xx within `timeoutMs` (callers report that; they never fail a build on it).
 */
export function callAgent<T>(info: AgentInfo, path: string, body: unknown, timeoutMs: number): Promise<T | null> {
  // node:http rather than fetch: the first fetch in a process loads undici (~100 ms), and this runs
  // before and after every Nx or turbo run.
  return new Promise((resolvePromise) => {
    const payload = Buffer.from(JSON.stringify(body));
    const req = request(
      {
        host: '127.0.0.1',
        port: info.port,
        path,
        method: 'POST',
        headers: { 'content-type': 'application/json', 'content-length': payload.length, authorization: `Bearer ${info.token}` },
        timeout: timeoutMs,
      },
      (res) => {
        const parts: Buffer[] = [];
        res.on('data', (d: Buffer) => parts.push(d));
        res.on('error', () => resolvePromise(null));
        res.on('end', () => {
          if (!res.statusCode || res.statusCode < 200 || res.statusCode >= 300) return resolvePromise(null);
          try {
            resolvePromise(JSON.parse(Buffer.concat(parts).toString('utf8')) as T);
          } catch {
            resolvePromise(null);
          }
        });
      },
    );
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolvePromise(null));
    req.end(payload);
  });
}

/** `POST /_cascache/flush`'s answer. */
export interface FlushReport {
  drained: boolean;
  pending: Record<string, number>;
  failed: Record<string, number>;
  /** Tiers the wait gave up on, with the failure that decided it (their breaker opened). */
  unreachable?: Record<string, string>;
  stats: { records: number; packs: number; blobsSent: number; bytesSent: number; blobsDeduplicated: number; bytesDeduplicated: number } | null;
}

/** `cascache: uploaded 41 kB to remote tiers (1 pack); dedup saved 3.1 MB; 0 uploads pending`. */
export function uploadLine(r: FlushReport): string {
  const { formatBytes } = require('@cascache/core/format') as typeof import('@cascache/core/format');
  const s = r.stats ?? { packs: 0, bytesSent: 0, bytesDeduplicated: 0 };
  const pending = Object.values(r.pending).reduce((a, b) => a + b, 0);
  const failed = Object.values(r.failed).reduce((a, b) => a + b, 0);
  const tail = r.drained ? 'nothing pending' : `${pending} upload(s) still pending (they resume with the next run or \`cascache flush\`)`;
  const lines = [`cascache: uploaded ${formatBytes(s.bytesSent)} to remote tiers (${s.packs} pack${s.packs === 1 ? '' : 's'}); dedup saved ${formatBytes(s.bytesDeduplicated)}; ${tail}`];
  for (const [tier, why] of Object.entries(r.unreachable ?? {})) {
    lines.push(`cascache: gave up waiting on ${tier}: it is unreachable (${why}); its uploads stay journaled`);
  }
  const aside = setAsideLine(failed);
  if (aside) lines.push(aside);
  return lines.join('\n');
}

/**
 * The line a run's summary adds while uploads sit set aside after permanent errors (missing
 * credentials, access denied): they are not retried until the cause is fixed. Null for none.
 */
export function setAsideLine(count: number | undefined): string | null {
  if (!count) return null;
  return `cascache: ${count} upload(s) set aside after permanent errors (see agent.log); fix the cause, then \`cascache flush --retry-set-aside\``;
}

/** True under CI (`CI=true` or `1`): wait for uploads, the machine may be gone a minute later. */
export const isCi = (env: NodeJS.ProcessEnv): boolean => env.CI === 'true' || env.CI === '1';

/** What to do when entries do not verify with the secret in use (agent.log and run summaries). */
export const SECRET_MISMATCH_HINT =
  'use one CASCACHE_SECRET on every machine that shares this store and its tiers; entries written without it or with another secret are misses, and each is replaced when its task runs again';

/** What to do when entries were signed by keys this machine does not trust for their namespace. */
export const UNTRUSTED_HINT =
  'a namespace with trusted keys (CASCACHE_TRUSTED_KEYS) serves only entries signed by one of them; add the writer\'s public key there if it is yours, and each such entry is replaced when a trusted writer runs its task';

/**
 * The line a run's summary adds when its lookups found entries they could not serve, from the
 * report route's `unservable` counts (`AcMissReason` -> count); null when there is nothing to say.
 * Missing chunks are not reported (eviction and GC make those, and the entry heals on its own).
 */
export function unservableLine(counts: Record<string, number> | undefined): string | null {
  const n = (reason: string): number => counts?.[reason] ?? 0;
  const parts: string[] = [];
  const unsigned = n('bad-signature');
  if (unsigned > 0) parts.push(`${unsigned} stored entr${unsigned === 1 ? 'y' : 'ies'} did not verify with this CASCACHE_SECRET and ${unsigned === 1 ? 'was' : 'were'} not used: ${SECRET_MISMATCH_HINT}`);
  const untrusted = n('untrusted');
  if (untrusted > 0) parts.push(`${untrusted} stored entr${untrusted === 1 ? 'y was' : 'ies were'} signed by no key trusted for ${untrusted === 1 ? 'its' : 'their'} namespace and not used: ${UNTRUSTED_HINT}`);
  const damaged = n('malformed') + n('mismatch') + n('manifest-invalid');
  if (damaged > 0) parts.push(`${damaged} damaged entr${damaged === 1 ? 'y was' : 'ies were'} not used and will be replaced as their tasks run (\`cascache verify\` checks the whole store)`);
  return parts.length > 0 ? parts.map((p) => `cascache: ${p}`).join('\n') : null;
}
