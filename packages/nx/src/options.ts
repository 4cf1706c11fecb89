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
