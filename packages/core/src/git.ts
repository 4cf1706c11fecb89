/**
 * Which branch and commit a run builds, for shared run records and prefetch: `git rev-parse` in the
 * workspace (one process, ~5 ms), and on a detached HEAD (most CI checkouts) the branch the CI
 * system names, from the environment the caller passes (core reads none itself). Null where there
 * is no git or no answer: runs then share and prefetch without one. A light entry
 * (`@cascache/core/git`): node built-ins only, for the Nx plugin's pre-run hook.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

/** A full commit id: 40 hex digits (SHA-1), or 64 (SHA-256 repositories). */
export const isCommitId = (v: unknown): v is string => typeof v === 'string' && /^[0-9a-f]{40}([0-9a-f]{24})?$/.test(v);

export interface GitState {
  branch: string | null;
  commit: string | null;
}

/** CI systems' names for the branch being built, most specific first (a PR's head before its ref). */
const CI_BRANCH_VARS = ['GITHUB_HEAD_REF', 'GITHUB_REF_NAME', 'CI_COMMIT_REF_NAME', 'BUILDKITE_BRANCH', 'CIRCLE_BRANCH', 'BITBUCKET_BRANCH', 'BRANCH_NAME'];

export function gitState(workspaceRoot: string, env: NodeJS.ProcessEnv): GitState {
  // `--abbrev-ref` applies to the arguments after it: the full SHA first, then the branch name.
  const r = spawnSync('git', ['rev-parse', 'HEAD', '--abbrev-ref', 'HEAD'], { cwd: workspaceRoot, encoding: 'utf8', timeout: 2000, stdio: ['ignore', 'pipe', 'ignore'] });
  const [sha, ref] = r.status === 0 ? r.stdout.trim().split('\n') : [];
  const fromCi = CI_BRANCH_VARS.map((v) => env[v]).find((v) => typeof v === 'string' && v.length > 0) ?? null;
  return {
    branch: ref && ref !== 'HEAD' ? ref : fromCi,
    commit: isCommitId(sha) ? sha : null,
  };
}

/** The plugin's `defaultBranch`, else nx.json's `defaultBase`, else `main`. */
export function defaultBranch(option: string | undefined, workspaceRoot: string): string {
  if (option) return option;
  try {
    const base = (JSON.parse(readFileSync(join(workspaceRoot, 'nx.json'), 'utf8')) as { defaultBase?: unknown }).defaultBase;
    if (typeof base === 'string' && base.length > 0) return base;
  } catch {
    /* no nx.json or not JSON: the default */
  }
  return 'main';
}
