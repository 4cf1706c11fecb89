/**
 * `cascache serve`: the team server (or a local one). Settings come from, highest first: command-line
 * flags, `CASCACHE_*` environment variables, a JSON config file (`--config`), defaults. Tokens and the
 * signing secret are read only from the environment or the config file (never from argv, which other
 * users can see in `ps`), and are never printed.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import type { Command } from 'commander';
import { CascacheError, ErrorCodes, parseByteSize, parseNamespaceList, parseTierConfigs, parseTrustedKeys, publicKeyOf, Trust, withDefaultToken, type TierConfig } from '@cascache/core';
import { listen, parseCrashPoint, type ScopedToken } from '@cascache/server';
import type { Io } from './program';
import { parseSize } from './sizes';

export interface ServeConfig {
  host: string;
  port: number;
  storeDir: string;
  /** The namespace Nx entries are written to (tokens without a scope). */
  namespace: string;
  /** Namespaces Nx lookups read, in order (tokens without a scope); the write namespace is read last when not listed. */
  readNamespaces: string[];
  gzipLevel: number;
  allowUnauthenticated: boolean;
  tokens: { readWrite: string[]; readOnly: string[]; admin: string[]; scoped: ScopedToken[] };
  secret: string | null;
  /** Ed25519 private key text: what this server stores is signed with it. */
  signingKey: string | null;
  /** Trusted public keys per namespace (`*`: all). */
  trustedKeys: Record<string, string[]>;
  /** Evict automatically above this many bytes; null for no limit. */
  maxSizeBytes: number | null;
  /** Remote tiers behind the store, fastest first. */
  tiers: TierConfig[];
  /** Upload to the tiers before answering a PUT, instead of write-behind. */
  syncUploads: boolean;
  /** Bytes of hot Nx bodies kept whole on disk and served as files; 0 turns it off. */
  hotBodiesBytes: number;
}

const DEFAULTS = { host: '127.0.0.1', port: 7380, namespace: 'default', gzipLevel: 1, allowUnauthenticated: false, hotBodiesBytes: 1024 ** 3 };

const splitList = (v: string | undefined): string[] | undefined =>
  v === undefined ? undefined : v.split(',').map((s) => s.trim()).filter(Boolean);

function parseJson(text: string, where: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    bad(`${where} must be JSON`);
  }
}

function bad(message: string): never {
  throw new CascacheError(ErrorCodes.CONFIG, message);
}

/**
 * Reads and checks a cascache JSON config file, the one schema the server and the CLI share;
 * unknown keys are errors (a typo must not be ignored). @throws CascacheError `E_CONFIG`.
 */
export function readConfigFile(path: string): Partial<ServeConfig> {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    bad(`cannot read config file ${path}: ${(err as Error).message}`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) bad(`config file ${path} must hold a JSON object`);
  const c = raw as Record<string, unknown>;
  const known = ['host', 'port', 'storeDir', 'namespace', 'readNamespaces', 'gzipLevel', 'allowUnauthenticated', 'tokens', 'secret', 'signingKey', 'trustedKeys', 'maxSize', 'tiers', 'syncUploads', 'hotBodies'];
  for (const k of Object.keys(c)) if (!known.includes(k)) bad(`config file ${path}: unknown key "${k}" (known: ${known.join(', ')})`);
  const tokens = c.tokens as { readWrite?: unknown; readOnly?: unknown; admin?: unknown; scoped?: unknown } | undefined;
  const strList = (v: unknown, what: string): string[] | undefined => {
    if (v === undefined) return undefined;
    if (!Array.isArray(v) || !v.every((x) => typeof x === 'string' && x.length > 0)) bad(`config file ${path}: ${what} must be a list of non-empty strings`);
    return v as string[];
  };
  return {
    ...(c.host !== undefined ? { host: String(c.host) } : {}),
    ...(c.port !== undefined ? { port: Number(c.port) } : {}),
    ...(c.storeDir !== undefined ? { storeDir: resolve(String(c.storeDir)) } : {}),
    ...(c.namespace !== undefined ? { namespace: parseNamespaceList([c.namespace], `config file ${path}: namespace`)[0]! } : {}),
    ...(c.readNamespaces !== undefined ? { readNamespaces: parseNamespaceList(c.readNamespaces, `config file ${path}: readNamespaces`) } : {}),
    ...(c.signingKey !== undefined ? { signingKey: String(c.signingKey) } : {}),
    ...(c.trustedKeys !== undefined ? { trustedKeys: parseTrustedKeys(c.trustedKeys, `config file ${path}: trustedKeys`) } : {}),
    ...(c.gzipLevel !== undefined ? { gzipLevel: Number(c.gzipLevel) } : {}),
    ...(c.allowUnauthenticated !== undefined ? { allowUnauthenticated: c.allowUnauthenticated === true } : {}),
    ...(c.secret !== undefined ? { secret: String(c.secret) } : {}),
    ...(c.maxSize !== undefined ? { maxSizeBytes: parseByteSize(String(c.maxSize)) } : {}),
    ...(c.tiers !== undefined ? { tiers: parseTierConfigs(c.tiers, `config file ${path}`) } : {}),
    ...(c.syncUploads !== undefined ? { syncUploads: c.syncUploads === true } : {}),
    ...(c.hotBodies !== undefined ? { hotBodiesBytes: parseByteSize(String(c.hotBodies)) } : {}),
    tokens: {
      readWrite: strList(tokens?.readWrite, 'tokens.readWrite') ?? [],
      readOnly: strList(tokens?.readOnly, 'tokens.readOnly') ?? [],
      admin: strList(tokens?.admin, 'tokens.admin') ?? [],
      scoped: tokens?.scoped === undefined ? [] : parseScopedTokens(tokens.scoped, `config file ${path}: tokens.scoped`),
    },
  };
}

/**
 * Namespace-scoped tokens: `[{"token", "name"?, "read": [namespaces], "write"?: namespace}]`.
 * @throws CascacheError `E_CONFIG` naming `where`.
 */
export function parseScopedTokens(value: unknown, where: string): ScopedToken[] {
  if (!Array.isArray(value)) bad(`${where} must be a list of {"token", "name", "read": [...], "write"}`);
  return value.map((t: unknown, i) => {
    const o = t as Record<string, unknown>;
    if (typeof o !== 'object' || o === null || typeof o.token !== 'string' || o.token.length < 16) bad(`${where}[${i}]: "token" must be a string of 16+ characters`);
    for (const k of Object.keys(o)) if (!['token', 'name', 'read', 'write'].includes(k)) bad(`${where}[${i}]: unknown key "${k}" (known: token, name, read, write)`);
    if (o.name !== undefined && (typeof o.name !== 'string' || !/^[\w.@:-]{1,64}$/.test(o.name))) bad(`${where}[${i}]: "name" must be 1-64 of A-Z a-z 0-9 _ . @ : -`);
    return {
      token: o.token,
      ...(o.name !== undefined ? { name: o.name as string } : {}),
      read: parseNamespaceList(o.read ?? [], `${where}[${i}].read`),
      ...(o.write !== undefined ? { write: parseNamespaceList([o.write], `${where}[${i}].write`)[0]! } : {}),
    };
  });
}

export interface ServeFlags {
  host?: string;
  port?: number;
  storeDir?: string;
  namespace?: string;
  gzipLevel?: number;
  allowUnauthenticated?: boolean;
  maxSize?: number;
  hotBodies?: number;
  config?: string;
  remote?: string[];
  syncUploads?: boolean;
}

/** Resolves the effective configuration. @throws CascacheError `E_CONFIG`. */
export function resolveServeConfig(flags: ServeFlags, env: NodeJS.ProcessEnv, cwd: string): ServeConfig {
  const file = flags.config ? readConfigFile(resolve(cwd, flags.config)) : {};
  const envPort = env.CASCACHE_PORT !== undefined ? Number(env.CASCACHE_PORT) : undefined;
  const cfg: ServeConfig = {
    host: flags.host ?? env.CASCACHE_HOST ?? file.host ?? DEFAULTS.host,
    port: flags.port ?? envPort ?? file.port ?? DEFAULTS.port,
    storeDir: resolve(cwd, flags.storeDir ?? env.CASCACHE_DIR ?? file.storeDir ?? '.cascache'),
    namespace: parseNamespaceList([flags.namespace ?? env.CASCACHE_NAMESPACE ?? file.namespace ?? DEFAULTS.namespace], 'the namespace')[0]!,
    readNamespaces: env.CASCACHE_READ_NAMESPACES ? parseNamespaceList(env.CASCACHE_READ_NAMESPACES, 'CASCACHE_READ_NAMESPACES') : (file.readNamespaces ?? []),
    gzipLevel: flags.gzipLevel ?? file.gzipLevel ?? DEFAULTS.gzipLevel,
    allowUnauthenticated: flags.allowUnauthenticated ?? file.allowUnauthenticated ?? DEFAULTS.allowUnauthenticated,
    tokens: {
      readWrite: splitList(env.CASCACHE_TOKENS_RW) ?? file.tokens?.readWrite ?? [],
      readOnly: splitList(env.CASCACHE_TOKENS_RO) ?? file.tokens?.readOnly ?? [],
      admin: splitList(env.CASCACHE_TOKENS_ADMIN) ?? file.tokens?.admin ?? [],
      scoped: env.CASCACHE_TOKENS_SCOPED ? parseScopedTokens(parseJson(env.CASCACHE_TOKENS_SCOPED, 'CASCACHE_TOKENS_SCOPED'), 'CASCACHE_TOKENS_SCOPED') : (file.tokens?.scoped ?? []),
    },
    secret: env.CASCACHE_SECRET ?? file.secret ?? null,
    signingKey: env.CASCACHE_SIGNING_KEY || file.signingKey || null,
    trustedKeys: env.CASCACHE_TRUSTED_KEYS ? parseTrustedKeys(env.CASCACHE_TRUSTED_KEYS, 'CASCACHE_TRUSTED_KEYS') : (file.trustedKeys ?? {}),
    maxSizeBytes: flags.maxSize ?? (env.CASCACHE_MAX_SIZE ? parseByteSize(env.CASCACHE_MAX_SIZE) : undefined) ?? file.maxSizeBytes ?? null,
    tiers: withDefaultToken(flags.remote?.length
      ? parseTierConfigs(flags.remote, '--remote')
      : env.CASCACHE_REMOTE
        ? parseTierConfigs(splitList(env.CASCACHE_REMOTE), 'CASCACHE_REMOTE')
        : env.CASCACHE_TIERS
          ? parseTierConfigs(parseJson(env.CASCACHE_TIERS, 'CASCACHE_TIERS'), 'CASCACHE_TIERS')
          : (file.tiers ?? []), env.CASCACHE_REMOTE_TOKEN),
    syncUploads: flags.syncUploads ?? (env.CASCACHE_SYNC_UPLOADS ? env.CASCACHE_SYNC_UPLOADS === '1' : undefined) ?? file.syncUploads ?? false,
    hotBodiesBytes: flags.hotBodies ?? file.hotBodiesBytes ?? DEFAULTS.hotBodiesBytes,
  };
  if (!Number.isInteger(cfg.port) || cfg.port < 0 || cfg.port > 65535) bad(`port must be 0-65535, got ${String(cfg.port)}`);
  if (!Number.isInteger(cfg.gzipLevel) || cfg.gzipLevel < 0 || cfg.gzipLevel > 9) bad(`gzip level must be 0-9 (0: no compression, for loopback), got ${String(cfg.gzipLevel)}`);
  if (cfg.secret !== null && Buffer.byteLength(cfg.secret) < 32) bad('CASCACHE_SECRET must be at least 32 bytes');
  if (!cfg.readNamespaces.includes(cfg.namespace)) cfg.readNamespaces = [...cfg.readNamespaces, cfg.namespace];
  return cfg;
}

/** A printable copy: secrets and tokens replaced by what kind they are. */
export function redact(cfg: ServeConfig): Record<string, unknown> {
  return {
    ...cfg,
    tiers: cfg.tiers.map((t) => ({ ...t, ...(t.token ? { token: '[redacted]' } : {}) })),
    tokens: {
      readWrite: `${cfg.tokens.readWrite.length} token(s)`,
      readOnly: `${cfg.tokens.readOnly.length} token(s)`,
      admin: `${cfg.tokens.admin.length} token(s)`,
      scoped: cfg.tokens.scoped.map((t) => ({ name: t.name, read: t.read, write: t.write ?? null })),
    },
    secret: cfg.secret === null ? 'none (unsigned local store)' : '[redacted]',
    signingKey: cfg.signingKey === null ? 'none' : `ed25519 ${publicKeyOf(cfg.signingKey).keyId}`,
  };
}

export function registerServe(program: Command, io: Io): void {
  program
    .command('serve')
    .description('Serve a cascache store over HTTP (Nx self-hosted remote cache API)')
    .option('--host <host>', 'address to listen on (env CASCACHE_HOST)', undefined)
    .option('--port <port>', 'port, 0 for any free one (env CASCACHE_PORT)', (v) => Number(v))
    .option('--store-dir <path>', 'local store (env CASCACHE_DIR; default ./.cascache)')
    .option('--namespace <name>', 'action-cache namespace for Nx entries (env CASCACHE_NAMESPACE)')
    .option('--gzip-level <n>', 'gzip level of responses, 1-9', (v) => Number(v))
    .option('--allow-unauthenticated', 'allow listening beyond loopback with no token')
    .option('--max-size <size>', 'evict automatically above this size on disk, e.g. 10GiB (env CASCACHE_MAX_SIZE)', parseSize)
    .option('--remote <url>', 'a remote tier behind the store, repeatable, fastest first (env CASCACHE_REMOTE)', (v: string, acc: string[] = []) => [...acc, v])
    .option('--sync-uploads', 'upload to remote tiers before answering a PUT (default: write-behind)')
    .option('--hot-bodies <size>', 'keep this many bytes of recently stored and served bodies whole and serve them as files (default 1GiB; 0: off)', parseSize)
    .option('--config <file>', 'JSON config file (host, port, storeDir, namespace, readNamespaces, gzipLevel, tokens, secret, signingKey, trustedKeys, maxSize, tiers, syncUploads, hotBodies)')
    .addHelpText(
      'after',
      '\nTokens: CASCACHE_TOKENS_RW and CASCACHE_TOKENS_RO (comma-separated) or "tokens" in the config file;\n' +
        'CASCACHE_TOKENS_ADMIN (or tokens.admin) only if someone must replace or delete cache entries.\n' +
        'Namespace-scoped tokens (a PR build reads main, writes only its own): CASCACHE_TOKENS_SCOPED or tokens.scoped,\n' +
        '  [{"token": "...", "name": "pr-123", "read": ["main"], "write": "pr-123"}].\n' +
        'Signing: CASCACHE_SECRET (HMAC, 32+ bytes) or "secret"; CASCACHE_SIGNING_KEY (Ed25519, `cascache keygen`)\n' +
        '  or "signingKey"; CASCACHE_TRUSTED_KEYS or "trustedKeys": {"main": ["ed25519:..."]}. See docs/security.md.',
    )
    .action(async (flags: ServeFlags) => {
      const cfg = resolveServeConfig(flags, process.env, process.cwd());
      const { server, url } = await listen({
        storeDir: cfg.storeDir,
        host: cfg.host,
        port: cfg.port,
        tokens: cfg.tokens,
        secret: cfg.secret === null ? null : Buffer.from(cfg.secret, 'utf8'),
        trust: new Trust({ secret: cfg.secret === null ? null : Buffer.from(cfg.secret, 'utf8'), signingKey: cfg.signingKey, trustedKeys: cfg.trustedKeys }),
        namespace: cfg.namespace,
        readNamespaces: cfg.readNamespaces,
        gzipLevel: cfg.gzipLevel,
        allowUnauthenticated: cfg.allowUnauthenticated,
        logger: { level: process.env.CASCACHE_LOG_LEVEL ?? 'info' },
        writer: 'cascache-serve',
        maxSizeBytes: cfg.maxSizeBytes ?? undefined,
        tiers: cfg.tiers,
        syncUploads: cfg.syncUploads,
        hotBodiesBytes: cfg.hotBodiesBytes,
        // The fault suite's kills at named points of an upload; never set in normal use.
        crashAt: parseCrashPoint(process.env.CASCACHE_CRASH_AT, 'CASCACHE_CRASH_AT'),
      });
      io.stderr.write(`cascache: serving ${cfg.storeDir} at ${url} ${JSON.stringify(redact(cfg))}\n`);
      await new Promise<void>((resolveClosed) => {
        const stop = (): void => {
          server.close().finally(resolveClosed);
        };
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
      });
    });
}
