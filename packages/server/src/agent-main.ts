/**
 * The per-workspace agent process, started detached by @cascache/nx. An edge, so it reads its
 * settings from the environment:
 *
 * - `CASCACHE_AGENT_TOKEN` (required): the read-write bearer token; set by the plugin.
 * - `CASCACHE_AGENT_RO_TOKEN` (optional): a read-only token, for read-only workspaces.
 * - `CASCACHE_DIR` (required): the local store.
 * - `CASCACHE_SECRET` (optional): action-cache signing secret, at least 32 bytes; without it the
 *   store is unsigned and local-only, which /healthz reports.
 * - `CASCACHE_AGENT_IDLE_MS`: exit after this long without a request (default 30 minutes).
 * - `CASCACHE_MAX_SIZE` (optional): evict automatically above this size on disk (e.g. `10GiB`).
 * - `CASCACHE_TIERS` (optional): remote tiers, a JSON list of URLs or `{url, level, readOnly,
 *   packTargetBytes}` (the plugin's `tiers` option); uploads are write-behind through the journal.
 * - `CASCACHE_SYNC_UPLOADS=1` (optional): upload before answering each PUT instead.
 * - `CASCACHE_HOT_BODIES` (optional): bytes of recent Nx bodies kept whole and served as files
 *   (default 256MiB; `0` turns it off).
 * - `CASCACHE_REMOTE_TOKEN` (optional): bearer token for https:// tiers (team servers).
 * - `CASCACHE_SIGNING_KEY` (optional): Ed25519 private key (`cascache keygen`); entries this agent
 *   writes are signed with it instead of the secret.
 * - `CASCACHE_TRUSTED_KEYS` (optional): JSON `{"main": ["ed25519:..."], "*": [...]}`; a namespace
 *   with trusted keys serves only entries they signed (core's trust.ts).
 * - `CASCACHE_NAMESPACE` (optional): the namespace Nx entries are written to (default `default`).
 * - `CASCACHE_CRASH_AT` (fault suite only): kill -9 itself at this point of every upload
 *   (`ingested`, `entry-written`; see artifacts.ts).
 * - `CASCACHE_AGENT_FRONT=0` (optional): run without the front process (see below).
 * - `CASCACHE_AGENT_ROLE=worker`, `CASCACHE_AGENT_SOCKET` (set by the front for its workers).
 * - `CASCACHE_READ_NAMESPACES` (optional): namespaces Nx lookups read, in order, e.g. `main,pr-123`
 *   (default: the write namespace; it is read last when not listed).
 *
 * Exits when its store directory is deleted or replaced (checked every second).
 *
 * Two processes: this one is the front (agent-front.ts), which owns the port and passes requests to
 * a worker it forks (agent-worker.ts, `CASCACHE_AGENT_ROLE=worker`) and restarts when it dies, so a
 * worker killed mid-run costs Nx misses, not a failed run. The front listens on 127.0.0.1 on a free
 * port and prints one JSON line `{"port","pid"}` (its own pid) on stdout once the worker is ready;
 * logs (pino's JSON lines, from both) go to stderr, which the plugin points at `<store>/agent.log`.
 */
import { join } from 'node:path';
import { startFront } from './agent-front';
import { stderrLogSink, tolerateStdioErrors } from './log-sink';

// stderr is agent.log, on the store's disk: a full disk must cost log lines, never the agent.
tolerateStdioErrors();

// `CASCACHE_AGENT_FRONT=0`: no front, the worker alone on the port (one process less, and no
// restart when it dies; bench/agent-front.mjs and bench/nx.mjs measure the difference).
if (process.env.CASCACHE_AGENT_ROLE === 'worker' || process.env.CASCACHE_AGENT_FRONT === '0') {
  // Loaded only here: the front never loads the store, the tiers or the HTTP framework.
  const worker = require('./agent-worker') as typeof import('./agent-worker');
  worker.runWorker().catch(worker.failStart);
} else {
  const token = process.env.CASCACHE_AGENT_TOKEN;
  if (!token || !process.env.CASCACHE_DIR) {
    process.stderr.write('cascache agent: CASCACHE_AGENT_TOKEN and CASCACHE_DIR are required\n');
    process.exit(2);
  }
  const log = (level: 'info' | 'warn' | 'error', msg: string, fields: Record<string, unknown> = {}): void => {
    stderrLogSink.write(`${JSON.stringify({ level: { info: 30, warn: 40, error: 50 }[level], time: Date.now(), pid: process.pid, name: 'front', ...fields, msg })}\n`);
  };
  const idleMs = Number(process.env.CASCACHE_AGENT_IDLE_MS ?? 30 * 60 * 1000);
  startFront({ workerScript: join(__dirname, 'agent-main.js'), env: process.env, token, log, idleMs }).then(
    (front) => {
      process.on('SIGTERM', () => front.stop());
      process.on('SIGINT', () => front.stop());
      void front.done.then((code) => process.exit(code));
      process.stdout.write(`${JSON.stringify({ port: front.port, pid: process.pid })}\n`);
    },
    // The worker has written its reason to the log already (one line); exit as it did.
    (err: Error & { exitCode?: number }) => process.exit(err.exitCode || 1),
  );
}
