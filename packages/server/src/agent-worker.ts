/**
 * The agent worker: the store, the tiers and the HTTP API, behind the front (agent-front.ts). Its
 * settings are the environment variables agent-main.ts lists.
 */
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { activeZstd, isCascacheError, LAYOUT_VERSION, parseByteSize, parseNamespaceList, parseTierConfigs, parseTrustedKeys, Trust, withDefaultToken } from '@cascache/core';
import { parseCrashPoint } from './artifacts';
import { listen } from './listen';
import { stderrLogSink } from './log-sink';

/** How often the agent checks that its store directory is still the one it opened, ms. */
const STORE_CHECK_MS = 1000;

/**
 * Runs the agent proper: opens the store, listens on the Unix socket the front named
 * (`CASCACHE_AGENT_SOCKET`; a free loopback port when run without a front) and reports it.
 */
export async function runWorker(): Promise<void> {
  const token = process.env.CASCACHE_AGENT_TOKEN;
  const storeDir = process.env.CASCACHE_DIR;
  if (!token || !storeDir) {
    process.stderr.write('cascache agent: CASCACHE_AGENT_TOKEN and CASCACHE_DIR are required\n');
    process.exit(2);
  }
  // The AWS SDK warns on stderr about Node 20 once per process; the agent log is not the place.
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  const tiers = withDefaultToken(parseTierConfigs(process.env.CASCACHE_TIERS ? JSON.parse(process.env.CASCACHE_TIERS) : [], 'CASCACHE_TIERS'), process.env.CASCACHE_REMOTE_TOKEN);
  const secret = process.env.CASCACHE_SECRET ? Buffer.from(process.env.CASCACHE_SECRET, 'utf8') : null;
  const trust = new Trust({
    secret,
    signingKey: process.env.CASCACHE_SIGNING_KEY || null,
    trustedKeys: process.env.CASCACHE_TRUSTED_KEYS ? parseTrustedKeys(process.env.CASCACHE_TRUSTED_KEYS, 'CASCACHE_TRUSTED_KEYS') : {},
  });
  const namespace = process.env.CASCACHE_NAMESPACE ? parseNamespaceList(process.env.CASCACHE_NAMESPACE, 'CASCACHE_NAMESPACE')[0]! : 'default';
  const read = process.env.CASCACHE_READ_NAMESPACES ? parseNamespaceList(process.env.CASCACHE_READ_NAMESPACES, 'CASCACHE_READ_NAMESPACES') : [];
  const readNamespaces = read.includes(namespace) ? read : [...read, namespace];
  const idleMs = Number(process.env.CASCACHE_AGENT_IDLE_MS ?? 30 * 60 * 1000);
  let timer: NodeJS.Timeout | undefined;
  let shuttingDown = false;
  const shutdown = (why: string): void => {
    if (shuttingDown) return;
    shuttingDown = true;
    server.log.info({ why }, 'agent stopping');
    server.close().finally(() => process.exit(0));
  };
  const touch = (): void => {
    if (timer) clearTimeout(timer);
    timer = setTimeout(() => shutdown('idle'), idleMs);
    timer.unref();
  };
  const socketPath = process.env.CASCACHE_AGENT_SOCKET || undefined;
  const { server, port } = await listen({
    storeDir,
    host: '127.0.0.1',
    port: 0,
    socketPath,
    tokens: { readWrite: [token], readOnly: process.env.CASCACHE_AGENT_RO_TOKEN ? [process.env.CASCACHE_AGENT_RO_TOKEN] : [] },
    secret,
    trust,
    namespace,
    readNamespaces,
    writer: 'nx-agent',
    // Loopback: compressing a body that never leaves the machine only costs time (level 0 is a
    // valid gzip stream of stored blocks, which Nx's client inflates like any other).
    gzipLevel: 0,
    // Nx starts a task's dependents only after its PUT is answered: answer once the body is on disk.
    deferIngest: true,
    // The newest bodies Nx sent, served back as files (a clone on a shared store, nx reset).
    hotBodiesBytes: process.env.CASCACHE_HOT_BODIES ? parseByteSize(process.env.CASCACHE_HOT_BODIES) : 256 * 1024 ** 2,
    logger: { level: process.env.CASCACHE_LOG_LEVEL ?? 'info', stream: stderrLogSink },
    onRequest: touch,
    maxSizeBytes: process.env.CASCACHE_MAX_SIZE ? parseByteSize(process.env.CASCACHE_MAX_SIZE) : undefined,
    tiers,
    syncUploads: process.env.CASCACHE_SYNC_UPLOADS === '1',
    crashAt: parseCrashPoint(process.env.CASCACHE_CRASH_AT, 'CASCACHE_CRASH_AT'),
  });
  touch();
  // zstd-napi is an optional peer (it compiles on install); without it chunks decode 2-5x slower
  // (restores 1.02-1.08x as long; docs/decisions.md).
  const zstd = activeZstd().name;
  server.log.info({ zstd }, zstd === 'zstd-napi' ? 'zstd: zstd-napi' : 'zstd: @toondepauw/node-zstd (install zstd-napi for faster restores: docs/nx.md)');
  // A store deleted or replaced under the agent (`rm -rf .cascache`, a CI cache restore) is not its
  // store any more: the plugin starts a new agent for the new one, and this one must not write into
  // it. It exits at once, dropping what it has not stored yet (that belonged to the deleted store).
  const descriptor = join(storeDir, LAYOUT_VERSION, 'store.json');
  const inode = statSync(descriptor).ino;
  const watch = setInterval(() => {
    let now: number | null = null;
    try {
      now = statSync(descriptor).ino;
    } catch {
      /* gone */
    }
    if (now === inode) return;
    clearInterval(watch);
    server.log.warn({ storeDir }, now === null ? 'agent stopping: its store directory was deleted' : 'agent stopping: its store directory was replaced');
    process.exit(0);
  }, STORE_CHECK_MS);
  watch.unref();
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
  // Started by the front (agent-front.ts): report over IPC, and end with the front.
  if (process.send) {
    process.send({ socketPath, storeDescriptor: descriptor });
    process.on('disconnect', () => shutdown('the front process ended'));
  } else process.stdout.write(`${JSON.stringify({ port, pid: process.pid })}\n`);
}

/** Writes why the agent could not start and exits 1. */
export function failStart(err: unknown): never {
  // The first line is the reason, which whoever started the agent shows its user (agent-control.ts);
  // a stack follows only for what is not a known error (a bug).
  const known = isCascacheError(err);
  process.stderr.write(`cascache agent: ${known ? `${err.message} (${err.code})` : ((err as Error)?.stack ?? String(err))}\n`);
  process.exit(1);
}
