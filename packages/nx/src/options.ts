/**
 * Plugin options (nx.json `plugins[].options` for `@cascache/nx`) and where the store lives.
 */
import { isAbsolute, join, resolve } from 'node:path';
import { NAMESPACE_RE } from '@cascache/core/format';

export interface CascacheNxOptions {
  /** Local store directory. Else `CASCACHE_DIR`, else `<workspace>/.cascache`. */
  storeDir?: string;
  /** Environment variable holding the action-cache signing secret (>= 32 bytes). Default `CASCACHE_SECRET`. */
  signingSecretEnv?: string;
  /**
   * Environment variable holding an Ed25519 private key (`cascache keygen`): entries this workspace
   * writes are signed with it. Set it only where trusted builds run (main-branch CI). Default
   * `CASCACHE_SIGNING_KEY`.
   */
  signingKeyEnv?: string;
  /**
   * Public keys trusted per namespace, e.g. `{"main": ["ed25519:..."]}` (`*`: every namespace). A
   * namespace with trusted keys serves only entries they signed. `CASCACHE_TRUSTED_KEYS` (JSON) overrides.
   */
  trustedKeys?: Record<string, string[]>;
  /** The namespace this workspace's entries are written to. Default `default`; `CASCACHE_NAMESPACE` overrides (e.g. `pr-123` in CI). */
  namespace?: string;
  /**
   * Namespaces looked up, in order, e.g. `["main"]`; the write namespace is read last when not
   * listed. `CASCACHE_READ_NAMESPACES` (comma-separated) overrides.
   */
  readNamespaces?: string[];
  /** Give Nx a read-only token: hits are served, nothing is written (PR builds). */
  readOnly?: boolean;
  /**
   * Remote tiers behind the local store, fastest first: URLs (`s3://bucket/prefix?region=..`,
   * `gs://bucket/prefix`) or `{url, level, readOnly, packTargetBytes}`. Credentials come from the
   * cloud SDKs' own chains (AWS_* variables, profiles, roles; GOOGLE_APPLICATION_CREDENTIALS), never
   * from here.
   */
  tiers?: Array<string | { url: string; level?: number; readOnly?: boolean; packTargetBytes?: number }>;
  /** Upload to the remotes before Nx's PUT returns, instead of write-behind. */
  syncUploads?: boolean;
  /** In CI (`CI=true`), how long the post-run hook waits for the agent to store this run's outputs and for pending remote uploads, ms. Default 120000; 0 to not wait. */
  ciUploadWaitMs?: number;
  /** Stop the agent after this long without a request, ms. Default 30 minutes. */
  idleTimeoutMs?: number;
  /** Evict automatically when the store grows past this size, e.g. `10GiB` (least recently used first). */
  maxSize?: string;
  /**
   * The branch whose runs a branch with no runs of its own prefetches from (remote tiers). Default:
   * nx.json's `defaultBase`, else `main`.
   */
  defaultBranch?: string;
  /** Turn the plugin off without removing it. */
  disabled?: boolean;
}

/** `storeDir` option, else `CASCACHE_DIR`, else `<workspace>/.cascache` (the CLI's order too). */
export function resolveStoreDir(options: CascacheNxOptions | undefined, workspaceRoot: string, env: NodeJS.ProcessEnv): string {
  const chosen = options?.storeDir ?? env.CASCACHE_DIR;
  if (!chosen) return join(workspaceRoot, '.cascache');
  return isAbsolute(chosen) ? chosen : resolve(workspaceRoot, chosen);
}

/** Levenshtein distance (insertions, deletions, substitutions), for "did you mean". */
function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = cur;
  }
  return prev[b.length]!;
}

/** What each option must be, as a check and the words a warning uses. */
const OPTION_TYPES: Record<keyof CascacheNxOptions, [(v: unknown) => boolean, string]> = {
  storeDir: [(v) => typeof v === 'string' && v.length > 0, 'a path'],
  signingSecretEnv: [(v) => typeof v === 'string' && /^[A-Za-z_][A-Za-z0-9_]*$/.test(v), 'an environment variable name'],
  signingKeyEnv: [(v) => typeof v === 'string' && /^[A-Za-z_][A-Za-z0-9_]*$/.test(v), 'an environment variable name'],
  trustedKeys: [
    (v) => typeof v === 'object' && v !== null && !Array.isArray(v) && Object.values(v).every((l) => Array.isArray(l) && l.every((k) => typeof k === 'string' && k.startsWith('ed25519:'))),
    'an object of namespace -> ["ed25519:...", ...]',
  ],
  namespace: [(v) => typeof v === 'string' && NAMESPACE_RE.test(v), 'a namespace (1-64 of A-Z a-z 0-9 . _ -)'],
  readNamespaces: [(v) => Array.isArray(v) && v.length > 0 && v.every((n) => typeof n === 'string' && NAMESPACE_RE.test(n)), 'a list of namespaces'],
  readOnly: [(v) => typeof v === 'boolean', 'true or false'],
  tiers: [(v) => Array.isArray(v) && v.every((t) => typeof t === 'string' || (typeof t === 'object' && t !== null && typeof (t as { url?: unknown }).url === 'string')), 'a list of URLs or {"url": ...} objects'],
  syncUploads: [(v) => typeof v === 'boolean', 'true or false'],
  ciUploadWaitMs: [(v) => Number.isSafeInteger(v) && (v as number) >= 0, 'a whole number of ms'],
  idleTimeoutMs: [(v) => Number.isSafeInteger(v) && (v as number) > 0, 'a whole number of ms'],
  maxSize: [(v) => typeof v === 'string' || (Number.isSafeInteger(v) && (v as number) > 0), 'a size such as "10GiB"'],
  defaultBranch: [(v) => typeof v === 'string' && v.length > 0, 'a branch name'],
  disabled: [(v) => typeof v === 'boolean', 'true or false'],
};

/**
 * The plugin's options as given, with what is wrong with them: unknown keys (a typo such as
 * `storDir` would otherwise be ignored without a word) and values of the wrong type, which are
 * dropped. @returns the options to use and one message per problem.
 */
export function checkOptions(options: unknown): { options: CascacheNxOptions | undefined; problems: string[] } {
  if (options === undefined || options === null) return { options: undefined, problems: [] };
  if (typeof options !== 'object' || Array.isArray(options)) return { options: undefined, problems: ['the plugin options must be an object; they are ignored'] };
  const known = Object.keys(OPTION_TYPES);
  const problems: string[] = [];
  const kept: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(options)) {
    const spec = OPTION_TYPES[key as keyof CascacheNxOptions];
    if (!spec) {
      const near = known.find((k) => editDistance(k.toLowerCase(), key.toLowerCase()) <= 2);
      problems.push(`unknown option "${key}"${near ? ` (did you mean "${near}"?)` : ` (known: ${known.join(', ')})`}; it is ignored`);
    } else if (!spec[0](value)) problems.push(`option "${key}" must be ${spec[1]}, got ${JSON.stringify(value)}; it is ignored`);
    else kept[key] = value;
  }
  return { options: kept as CascacheNxOptions, problems };
}
