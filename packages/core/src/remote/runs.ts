/**
 * Shared run records: which action keys one run of a tool produced, on which branch and commit, kept
 * on every remote tier so a fresh machine can fetch what the most relevant earlier run produced
 * before the tool asks for it (`LayeredStore.prefetch`, `cascache warm`). A commit -> task hashes
 * index, in the spirit of Nx Cloud's and Bazel's build-event records, without their servers.
 *
 * ```
 * <prefix>/v1/runs/<tool>/<branch id>/<9999999999999 - start ms, 13 digits>-<8 hex of the record's BLAKE3>.json
 * ```
 * The branch id is the first 16 hex digits of the branch name's BLAKE3 (any name, no escaping);
 * inverted start times make the newest run of a branch list first on S3 and GCS. A record is
 * canonical JSON with `sig` over the canonical JSON of every other field, signed as the run's
 * namespace's entries are (`trust.ts`: Ed25519 under a trusted writer's key, or HMAC-SHA256 under the
 * cache secret), so someone with bucket access but no key cannot steer other machines' prefetching.
 * Records from before `sig` carry `mac` (hex HMAC-SHA256) and are still read. Entries are verified on
 * their own when fetched; a bad record is skipped, never an error.
 */
import { canonicalJson } from '../canonical-json';
import { digestOf, isDigest, type Digest } from '../digest';
import { NAMESPACE_RE } from '../action-cache';
import { CascacheError, ErrorCodes } from '../errors';
import { isCommitId } from '../git';
import type { Trust } from '../trust';

/** One run as shared through remote tiers (before signing). */
export interface SharedRun {
  /** `nx`, `turbo`, `cascache cache`. Lowercase letters, digits, `-`, `_`, `.` and spaces. */
  tool: string;
  /** Action-cache namespace of the run's entries. */
  namespace: string;
  /** The branch the run built (`git rev-parse --abbrev-ref HEAD`, or CI's name for it), or null. */
  branch: string | null;
  /** The commit the run built (40 hex digits), or null. */
  commit: string | null;
  /** What was run, e.g. `["build"]`. */
  targets: string[];
  /** ms since the epoch. */
  startTime: number;
  /** Action keys of the run's tasks that have an entry (hits and stored builds). */
  keys: Digest[];
}

/** Most keys one record may list; larger runs keep their first keys. */
export const MAX_RUN_KEYS = 100_000;
const TOOL_RE = /^[a-z0-9][a-z0-9 ._-]{0,63}$/;
const MAX_START = 9_999_999_999_999;

/** Object-store prefix of a tool's runs on one branch (null branch: `-`). */
export function runPrefix(tool: string, branch: string | null): string {
  if (!TOOL_RE.test(tool)) throw new CascacheError(ErrorCodes.BAD_INPUT, `tool name ${JSON.stringify(tool)} is not valid in a run record`);
  return `v1/runs/${tool.replace(/ /g, '_')}/${branch === null ? '-' : digestOf(Buffer.from(branch, 'utf8')).slice(0, 16)}/`;
}

/**
 * The object key a run is stored under: newest first in a listing of its prefix, and the same for
 * the same run (a retried upload overwrites rather than duplicates).
 */
export function runObjectKey(run: SharedRun): string {
  const inverted = String(MAX_START - Math.max(0, Math.min(MAX_START, Math.round(run.startTime)))).padStart(13, '0');
  return `${runPrefix(run.tool, run.branch)}${inverted}-${digestOf(Buffer.from(canonicalJson(run), 'utf8')).slice(0, 8)}.json`;
}

/**
 * Canonical JSON bytes of a signed run record.
 * @throws CascacheError `E_BAD_INPUT` for a malformed run.
 */
export function encodeSharedRun(run: SharedRun, trust: Trust): Buffer {
  const clean = checkRun(run);
  if (!clean) throw new CascacheError(ErrorCodes.BAD_INPUT, 'malformed run record');
  return Buffer.from(canonicalJson({ ...clean, sig: trust.sign(canonicalJson(clean)) }), 'utf8');
}

/**
 * The run in a record's bytes, or null when it is malformed or its signature is not one `trust`
 * accepts for the run's namespace (an unsigned record is never accepted).
 */
export function decodeSharedRun(bytes: Uint8Array, trust: Trust): SharedRun | null {
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch {
    return null;
  }
  if (!parsed || typeof parsed !== 'object') return null;
  const { sig, mac, ...rest } = parsed as Record<string, unknown>;
  const run = checkRun(rest as unknown as SharedRun);
  // `mac`: a record written before `sig`, a bare hex HMAC.
  const claimed = typeof sig === 'string' ? sig : typeof mac === 'string' ? `hmac-sha256:${mac}` : null;
  if (!run || claimed === null || (sig !== undefined && mac !== undefined) || trust.ruleFor(run.namespace) === 'none') return null;
  return trust.verify(run.namespace, canonicalJson(run), claimed) === 'ok' ? run : null;
}

/** A copy of a run with only its known fields, or null when one is malformed (journal records). */
export function checkRun(run: SharedRun): SharedRun | null {
  if (!run || typeof run.tool !== 'string' || !TOOL_RE.test(run.tool) || typeof run.namespace !== 'string' || !NAMESPACE_RE.test(run.namespace)) return null;
  if (run.branch !== null && (typeof run.branch !== 'string' || run.branch.length === 0 || run.branch.length > 1024)) return null;
  if (run.commit !== null && !isCommitId(run.commit)) return null;
  if (!Array.isArray(run.targets) || !run.targets.every((t) => typeof t === 'string' && t.length <= 256) || run.targets.length > 256) return null;
  if (!Number.isSafeInteger(run.startTime) || run.startTime < 0 || run.startTime > MAX_START) return null;
  if (!Array.isArray(run.keys) || run.keys.length > MAX_RUN_KEYS || !run.keys.every((k) => isDigest(k))) return null;
  return { tool: run.tool, namespace: run.namespace, branch: run.branch, commit: run.commit, targets: [...run.targets], startTime: run.startTime, keys: [...run.keys] };
}
