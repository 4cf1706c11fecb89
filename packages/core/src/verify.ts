/**
 * `verifyStore`: re-hash every blob, check every action-cache entry and every store root down to its
 * chunks, and report what is wrong (cacache's `verify` as a list of steps). Corrupt blobs are moved to
 * quarantine by the blob store as they are found, so afterwards they read as misses. With `repair`,
 * what can never be served is dropped as well: entries and roots whose tree is incomplete or
 * unreadable, and malformed entries (the next upload of the same output stores it whole again).
 * Entries that fail only their signature are never dropped: that is the secret in use, not the
 * store (a wrong `CASCACHE_SECRET` would otherwise empty it); uploads replace them one by one.
 */
import type { Digest } from './digest';
import { ErrorCodes, isCascacheError } from './errors';
import type { LocalStore } from './local-store';
import { treeProblem } from './tree';

export interface VerifyProblem {
  /** What is damaged: a blob, an action-cache entry (`namespace/key`) or a root. */
  kind: 'blob' | 'ac-entry' | 'root';
  id: string;
  reason: 'corrupt' | 'invalid-entry' | 'bad-signature' | 'manifest-missing' | 'manifest-invalid' | 'chunks-missing';
  detail?: string;
  /** With `repair`: what was done about it (`quarantined` for corrupt blobs, `dropped`), if anything. */
  repaired?: 'quarantined' | 'dropped';
}

export interface VerifyReport {
  blobs: number;
  /** Bytes the blobs take on disk. */
  storedBytes: number;
  acEntries: number;
  roots: number;
  problems: VerifyProblem[];
  /** Wall time of each step, ms. */
  timings: { blobs: number; acEntries: number; roots: number };
}

export interface VerifyOptions {
  /** Called as work proceeds (for progress bars): step, items done, items known so far. */
  onProgress?: (step: 'blobs' | 'ac-entries' | 'roots', done: number) => void;
  /** Drop entries and roots that can never be served (see above). Default false: report only. */
  repair?: boolean;
}

export async function verifyStore(store: LocalStore, options: VerifyOptions = {}): Promise<VerifyReport> {
  const problems: VerifyProblem[] = [];
  const report: VerifyReport = { blobs: 0, storedBytes: 0, acEntries: 0, roots: 0, problems, timings: { blobs: 0, acEntries: 0, roots: 0 } };

  let t = performance.now();
  const blobs: Digest[] = [];
  for await (const b of store.blobs.list()) {
    blobs.push(b.digest);
    report.storedBytes += b.storedSize;
  }
  for (const digest of blobs) {
    try {
      await store.blobs.getBuffer(digest);
    } catch (err) {
      if (!isCascacheError(err, ErrorCodes.INTEGRITY)) throw err;
      problems.push({ kind: 'blob', id: digest, reason: 'corrupt', detail: err.message, ...(options.repair ? { repaired: 'quarantined' as const } : {}) });
    }
    report.blobs++; // counted here: an argument of ?.() is skipped when there is no callback
    options.onProgress?.('blobs', report.blobs);
  }
  report.timings.blobs = performance.now() - t;

  t = performance.now();
  for await (const { namespace, key } of store.entries.list()) {
    const bytes = await store.entries.get(namespace, key);
    const checked = bytes ? store.actionCache.check(namespace, key, bytes) : null;
    const id = `${namespace}/${key}`;
    let problem: VerifyProblem | null = null;
    if (checked === 'bad-signature') problem = { kind: 'ac-entry', id, reason: 'bad-signature', detail: 'its signature fails: written without this secret, with another one, or altered' };
    else if (typeof checked === 'string') problem = { kind: 'ac-entry', id, reason: 'invalid-entry', detail: `does not parse (${checked})` };
    else if (checked) {
      const bad = await treeProblem(store.blobs, checked.manifest);
      if (bad) problem = { kind: 'ac-entry', id, ...bad };
    }
    if (problem) {
      if (options.repair && problem.reason !== 'bad-signature' && (await store.actionCache.delete(namespace, key))) problem.repaired = 'dropped';
      problems.push(problem);
    }
    report.acEntries++;
    options.onProgress?.('ac-entries', report.acEntries);
  }
  report.timings.acEntries = performance.now() - t;

  t = performance.now();
  for (const root of await store.roots.list()) {
    const bad = await treeProblem(store.blobs, root.digest);
    if (bad) {
      const repaired = options.repair && (await store.roots.remove(root.digest)) ? ('dropped' as const) : undefined;
      problems.push({ kind: 'root', id: root.digest, ...bad, ...(repaired ? { repaired } : {}) });
    }
    report.roots++;
    options.onProgress?.('roots', report.roots);
  }
  report.timings.roots = performance.now() - t;
  return report;
}
