/**
 * Google Cloud Storage object store through `@google-cloud/storage` (loaded on first use). Credentials
 * come from the library's standard chain (`GOOGLE_APPLICATION_CREDENTIALS`, gcloud's application
 * default credentials, the metadata server). `apiEndpoint` points it at an emulator; the library then
 * sends no credentials unless `useAuthWithCustomEndpoint` is set.
 */
import type { Bucket } from '@google-cloud/storage';
import { CascacheError, ErrorCodes, isCascacheError } from '../errors';
import { type ByteRange, joinKey, normalizePrefix, type ObjectInfo, type ObjectStore, refused, unavailable } from './object-store';

/** Options for {@link GcsObjectStore}. */
export interface GcsObjectStoreOptions {
  bucket: string;
  /** Key prefix inside the bucket, without leading or trailing `/`. */
  prefix?: string;
  /** JSON API endpoint, e.g. `http://127.0.0.1:4443` for an emulator. */
  apiEndpoint?: string;
  projectId?: string;
  /** Authenticate against a custom `apiEndpoint` too. */
  useAuthWithCustomEndpoint?: boolean;
  /** Per-request timeout, ms. Default 60000. */
  timeoutMs?: number;
  /** Attempts per request (the library's own retry with backoff). Default 3. */
  maxAttempts?: number;
}

/** An {@link ObjectStore} on one GCS bucket and prefix. */
export class GcsObjectStore implements ObjectStore {
  readonly name: string;
  private readonly prefix: string;
  private bucketHandle: Bucket | null = null;

  constructor(private readonly options: GcsObjectStoreOptions) {
    this.prefix = normalizePrefix(options.prefix);
    this.name = `gs://${options.bucket}${this.prefix ? `/${this.prefix}` : ''}${options.apiEndpoint ? ` at ${options.apiEndpoint}` : ''}`;
  }

  private bucket(): Bucket {
    if (!this.bucketHandle) {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const { Storage } = require('@google-cloud/storage') as typeof import('@google-cloud/storage');
      const o = this.options;
      const storage = new Storage({
        apiEndpoint: o.apiEndpoint,
        projectId: o.projectId,
        useAuthWithCustomEndpoint: o.useAuthWithCustomEndpoint,
        timeout: o.timeoutMs ?? 60000,
        retryOptions: (o.maxAttempts ?? 3) > 1 ? { autoRetry: true, maxRetries: (o.maxAttempts ?? 3) - 1, totalTimeout: 120 } : { autoRetry: false },
      });
      this.bucketHandle = storage.bucket(o.bucket);
    }
    return this.bucketHandle;
  }

  async warm(): Promise<void> {
    await this.get('v1/.warm').catch(() => null);
  }

  async get(key: string, range?: ByteRange): Promise<Buffer | null> {
    try {
      const [bytes] = await this.bucket()
        .file(joinKey(this.prefix, key))
        .download(range ? { start: range.offset, end: range.offset + range.length - 1, validation: false } : { validation: false });
      if (range && bytes.length !== range.length) {
        throw new CascacheError(ErrorCodes.INTEGRITY, `${this.name}: ranged read of ${key} returned ${bytes.length} of ${range.length} bytes`, { details: { key, ...range } });
      }
      return bytes;
    } catch (err) {
      if (isCascacheError(err)) throw err;
      if (status(err) === 404) return null;
      if (status(err) === 416) throw new CascacheError(ErrorCodes.INTEGRITY, `${this.name}: range ${range?.offset}+${range?.length} is outside ${key}`, { cause: err });
      throw this.classify(err, `reading ${key}`);
    }
  }

  async put(key: string, body: Buffer, options: { ifAbsent?: boolean } = {}): Promise<{ created: boolean }> {
    try {
      await this.bucket()
        .file(joinKey(this.prefix, key))
        .save(body, {
          resumable: false,
          validation: false,
          contentType: 'application/octet-stream',
          preconditionOpts: options.ifAbsent ? { ifGenerationMatch: 0 } : undefined,
        });
      return { created: true };
    } catch (err) {
      if (options.ifAbsent && status(err) === 412) return { created: false };
      throw this.classify(err, `writing ${key}`);
    }
  }

  async delete(key: string): Promise<boolean> {
    try {
      await this.bucket().file(joinKey(this.prefix, key)).delete();
      return true;
    } catch (err) {
      if (status(err) === 404) return false;
      throw this.classify(err, `deleting ${key}`);
    }
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    const full = joinKey(this.prefix, prefix);
    const strip = this.prefix === '' ? 0 : this.prefix.length + 1;
    let query: { prefix: string; autoPaginate: false; pageToken?: string } | null = { prefix: full, autoPaginate: false };
    while (query) {
      let files;
      let next;
      try {
        [files, next] = await this.bucket().getFiles(query);
      } catch (err) {
        throw this.classify(err, `listing ${prefix}`);
      }
      for (const f of files) {
        const m = f.metadata;
        yield { key: f.name.slice(strip), size: Number(m.size ?? 0), mtimeMs: m.updated ? Date.parse(String(m.updated)) : undefined };
      }
      query = (next as { pageToken?: string } | null)?.pageToken ? { prefix: full, autoPaginate: false, pageToken: (next as { pageToken: string }).pageToken } : null;
    }
  }

  private classify(err: unknown, what: string) {
    const code = status(err);
    if (code === 401 || code === 403 || (code === 404 && /bucket/i.test(String((err as Error)?.message)))) return refused(this.name, what, err);
    return unavailable(this.name, what, err);
  }
}

function status(err: unknown): number | undefined {
  const e = err as { code?: unknown; response?: { status?: number } };
  if (typeof e?.code === 'number') return e.code;
  return e?.response?.status;
}
