/**
 * Plugin options (nx.json `plugins[].options` for `@cascache/nx`) and where the store lives.
 */
import { isAbsolute, join, resolve } from 'node:path';

export interface CascacheNxOptions {
  /** Local store directory. Else `CASCACHE_DIR`, else `<workspace>/.cascache`. */
  storeDir?: string;
  /** Environment variable holding the action-cache signing secret (>= 32 bytes). Default `CASCACHE_SECRET`. */
  signingSecretEnv?: string;
  /** Give Nx a read-only token: hits are served, nothing is written (PR builds). */
  readOnly?: boolean;
  /** Remote tiers, in order (arrives with the remote-tiers work; accepted and ignored until then). */
  tiers?: unknown[];
  /** Stop the agent after this long without a request, ms. Default 30 minutes. */
  idleTimeoutMs?: number;
  /** Evict automatically when the store grows past this size, e.g. `10GiB` (least recently used first). */
  maxSize?: string;
  /** Turn the plugin off without removing it. */
  disabled?: boolean;
}

/** `storeDir` option, else `CASCACHE_DIR`, else `<workspace>/.cascache` (the CLI's order too). */
export function resolveStoreDir(options: CascacheNxOptions | undefined, workspaceRoot: string, env: NodeJS.ProcessEnv): string {
  const chosen = options?.storeDir ?? env.CASCACHE_DIR;
  if (!chosen) return join(workspaceRoot, '.cascache');
  return isAbsolute(chosen) ? chosen : resolve(workspaceRoot, chosen);
}
