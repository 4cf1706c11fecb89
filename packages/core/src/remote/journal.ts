/**
 * The durable upload journal (write-behind): what the local tier holds that a remote tier does not
 * have yet. One small JSON record per pending upload, per tier, written atomically before the write
 * is acknowledged and removed only after the remote has everything:
 *
 * ```
 * <local>/v1/journal/<tier id>/<ms>-<random>.json         {"kind":"ac","namespace","key"} | {"kind":"root","digest"} | {"kind":"run","run"}
 * <local>/v1/journal/<tier id>/failed/<same name>          records that failed permanently, with the reason
 * ```
 * A record names an AC entry or a store root, not bytes: the blobs stay in the local tier, so the
 * journal is small and a crash at any point loses nothing (the record is replayed on the next start).
 * Replaying is idempotent: packs are named by content and AC entries are write-once, so two
 * processes replaying the same record at once waste a little bandwidth and nothing else.
 */
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { assertNamespace } from '../action-cache';
import { writeFileAtomic } from '../atomic-write';
import { digestOf, isDigest, type Digest } from '../digest';
import { toIoError } from '../errors';
import { LAYOUT_VERSION } from '../store/fs';
import { checkRun, type SharedRun } from './runs';

/** One pending upload. */
/** What to upload: an AC entry and its tree, a store root and its tree, or a run record (runs.ts). */
export type JournalRecord = { kind: 'ac'; namespace: string; key: Digest } | { kind: 'root'; digest: Digest } | { kind: 'run'; run: SharedRun };

/** A record as read back, with its file name (its identity in the journal). */
export interface JournalItem {
  id: string;
  record: JournalRecord;
}

/** The stable directory name of a tier in the journal: 16 hex of BLAKE3 of its name. */
export function tierId(tierName: string): string {
  return digestOf(tierName).slice(0, 16);
}

export class UploadJournal {
  private readonly dir: string;

  /** @param root the local store root; records live under `<root>/v1/journal`. */
  constructor(root: string) {
    this.dir = join(root, LAYOUT_VERSION, 'journal');
  }

  /** Notes which URL a tier's records are for, so `cascache flush` can reopen it by itself. */
  async remember(tier: string, url: string): Promise<void> {
    const path = join(this.dir, tierId(tier), 'tier.json');
    const current = await fsp.readFile(path, 'utf8').catch(() => null);
    const text = `${JSON.stringify({ name: tier, url })}\n`;
    if (current !== text) await writeFileAtomic(path, text);
  }

  /** Every tier with a journal directory: its name, URL (when remembered) and counts. */
  async tiers(): Promise<Array<{ name: string; url: string | null; pending: number; failed: number }>> {
    const ids = await fsp.readdir(this.dir).catch(() => [] as string[]);
    const out = [];
    for (const id of ids.sort()) {
      let name = id;
      let url: string | null = null;
      try {
        const t = JSON.parse(await fsp.readFile(join(this.dir, id, 'tier.json'), 'utf8')) as { name?: unknown; url?: unknown };
        if (typeof t.name === 'string' && tierId(t.name) === id) name = t.name;
        if (typeof t.url === 'string') url = t.url;
      } catch {
        /* no tier.json: counts only */
      }
      out.push({ name, url, ...(await this.counts(name === id ? id : name, name === id)) });
    }
    return out;
  }

  /** Records a pending upload for a tier. Durable when it resolves. @throws `E_IO`. */
  async add(tier: string, record: JournalRecord): Promise<string> {
    const id = `${Date.now().toString().padStart(15, '0')}-${randomBytes(4).toString('hex')}.json`;
    await writeFileAtomic(join(this.dir, tierId(tier), id), `${JSON.stringify(record)}\n`);
    return id;
  }

  /** When the oldest pending record of a tier was journaled, ms since the epoch, or null for none. Reads names only. */
  async oldestPending(tier: string): Promise<number | null> {
    const names = await fsp.readdir(join(this.dir, tierId(tier))).catch(() => [] as string[]);
    const oldest = names.filter((n) => /^\d{15}-[0-9a-f]{8}\.json$/.test(n)).sort()[0];
    return oldest === undefined ? null : Number(oldest.slice(0, 15));
  }

  /** The pending records of a tier, oldest first. Unreadable records are skipped (and kept). */
  async pending(tier: string): Promise<JournalItem[]> {
    const dir = join(this.dir, tierId(tier));
    let names: string[];
    try {
      names = await fsp.readdir(dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw toIoError(err, `listing journal ${dir}`);
    }
    const items: JournalItem[] = [];
    for (const id of names.filter((n) => /^\d{15}-[0-9a-f]{8}\.json$/.test(n)).sort()) {
      const record = await this.read(join(dir, id));
      if (record) items.push({ id, record });
    }
    return items;
  }

  /** Whether a record is still pending (not done, not set aside). */
  async isPending(tier: string, id: string): Promise<boolean> {
    return fsp.access(join(this.dir, tierId(tier), id)).then(
      () => true,
      () => false,
    );
  }

  /** Removes a record once its upload is complete. */
  async done(tier: string, id: string): Promise<void> {
    await fsp.rm(join(this.dir, tierId(tier), id), { force: true }).catch((err) => {
      throw toIoError(err, `removing journal record ${id}`);
    });
  }

  /** Moves a record aside after a permanent failure, keeping the reason beside it. */
  async fail(tier: string, id: string, reason: string): Promise<void> {
    const dir = join(this.dir, tierId(tier));
    await fsp.mkdir(join(dir, 'failed'), { recursive: true });
    await fsp.rename(join(dir, id), join(dir, 'failed', id)).catch(() => undefined);
    await writeFileAtomic(join(dir, 'failed', `${id}.reason`), `${reason}\n`);
  }

  /**
   * Moves every record set aside after a permanent failure back to pending, in every tier (the user
   * fixed the cause: credentials, a bucket policy). @returns how many were moved.
   */
  async retryFailed(): Promise<number> {
    let moved = 0;
    for (const id of await fsp.readdir(this.dir).catch(() => [] as string[])) {
      const failed = join(this.dir, id, 'failed');
      for (const name of await fsp.readdir(failed).catch(() => [] as string[])) {
        if (!/^\d{15}-[0-9a-f]{8}\.json$/.test(name)) continue;
        await fsp.rename(join(failed, name), join(this.dir, id, name)).catch((err) => {
          throw toIoError(err, `moving journal record ${name} back to pending`);
        });
        await fsp.rm(join(failed, `${name}.reason`), { force: true });
        moved++;
      }
    }
    return moved;
  }

  /** The distinct reasons records of a tier were set aside for (as `fail` recorded them). */
  async failureReasons(tier: string): Promise<string[]> {
    const failed = join(this.dir, tierId(tier), 'failed');
    const names = (await fsp.readdir(failed).catch(() => [] as string[])).filter((n) => n.endsWith('.reason'));
    const reasons = await Promise.all(names.map((n) => fsp.readFile(join(failed, n), 'utf8').then((t) => t.trim(), () => '')));
    return [...new Set(reasons.filter(Boolean))];
  }

  /** Counts of pending and failed records for a tier. */
  async counts(tier: string, isId = false): Promise<{ pending: number; failed: number }> {
    const dir = join(this.dir, isId ? tier : tierId(tier));
    const count = async (d: string) => (await fsp.readdir(d).catch(() => [] as string[])).filter((n) => /^\d{15}-[0-9a-f]{8}\.json$/.test(n)).length;
    return { pending: await count(dir), failed: await count(join(dir, 'failed')) };
  }

  /** Every digest a pending record protects from GC: the AC keys and roots it names. */
  async protectedRecords(): Promise<JournalRecord[]> {
    const out: JournalRecord[] = [];
    const tiers = await fsp.readdir(this.dir).catch(() => [] as string[]);
    for (const t of tiers) {
      const names = await fsp.readdir(join(this.dir, t)).catch(() => [] as string[]);
      for (const n of names) {
        if (!/^\d{15}-[0-9a-f]{8}\.json$/.test(n)) continue;
        const r = await this.read(join(this.dir, t, n));
        if (r) out.push(r);
      }
    }
    return out;
  }

  private async read(path: string): Promise<JournalRecord | null> {
    try {
      const r = JSON.parse(await fsp.readFile(path, 'utf8')) as JournalRecord;
      if (r.kind === 'ac' && typeof r.namespace === 'string' && isDigest(r.key)) {
        assertNamespace(r.namespace);
        return { kind: 'ac', namespace: r.namespace, key: r.key };
      }
      if (r.kind === 'root' && isDigest(r.digest)) return { kind: 'root', digest: r.digest };
      if (r.kind === 'run') {
        const run = checkRun(r.run);
        return run ? { kind: 'run', run } : null;
      }
      return null;
    } catch {
      return null;
    }
  }
}
