/**
 * S3 object store through `@aws-sdk/client-s3` (loaded on first use, so a local-only process never
 * pays for the SDK). Works with AWS and with S3-protocol servers (MinIO, s3rver, R2) through
 * `endpoint` + `forcePathStyle`. Credentials come from the SDK's standard provider chain (AWS_*
 * variables, shared config profiles, container and instance roles) unless given explicitly.
 */
import type { S3Client as S3ClientType } from '@aws-sdk/client-s3';
import { CascacheError, ErrorCodes, isCascacheError } from '../errors';
import { type ByteRange, joinKey, normalizePrefix, type ObjectInfo, type ObjectStore, refused, unavailable } from './object-store';

/** Options for {@link S3ObjectStore}. */
export interface S3ObjectStoreOptions {
  bucket: string;
  /** Key prefix inside the bucket, without leading or trailing `/`. */
  prefix?: string;
  /** AWS region. Default `us-east-1` (S3-protocol servers ignore it). */
  region?: string;
  /** Custom endpoint URL, e.g. `http://127.0.0.1:9000`. */
  endpoint?: string;
  /** Path-style addressing (`endpoint/bucket/key`), needed by most S3-protocol servers. */
  forcePathStyle?: boolean;
  /** Explicit credentials; default: the SDK's provider chain. */
  credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string };
  /** Time to establish a connection, ms. Default 5000. */
  connectTimeoutMs?: number;
  /**
   * Time without data on the connection before a request fails, ms. Default 10000: S3 answers in
   * well under a second, and a server that accepts and goes quiet must not hold a build (the SDK
   * tries `maxAttempts` times).
   */
  requestTimeoutMs?: number;
  /** SDK attempts per request (its own retry with backoff). Default 3. */
  maxAttempts?: number;
}

type S3Module = typeof import('@aws-sdk/client-s3');

/** An {@link ObjectStore} on one S3 bucket and prefix. */
export class S3ObjectStore implements ObjectStore {
  readonly name: string;
  private readonly prefix: string;
  private clientPromise: Promise<{ s3: S3Module; client: S3ClientType }> | null = null;

  constructor(private readonly options: S3ObjectStoreOptions) {
    this.prefix = normalizePrefix(options.prefix);
    // The endpoint is part of the identity: one bucket name on two servers is two tiers.
    this.name = `s3://${options.bucket}${this.prefix ? `/${this.prefix}` : ''}${options.endpoint ? ` at ${options.endpoint}` : ''}`;
  }

  private client(): Promise<{ s3: S3Module; client: S3ClientType }> {
    this.clientPromise ??= (async () => {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const s3 = require('@aws-sdk/client-s3') as S3Module;
      const o = this.options;
      const client = new s3.S3Client({
        region: o.region ?? 'us-east-1',
        endpoint: o.endpoint,
        forcePathStyle: o.forcePathStyle,
        credentials: o.credentials,
        maxAttempts: o.maxAttempts ?? 3,
        // Without throwOnRequestTimeout the SDK only logs a warning and keeps waiting on a hung server.
        requestHandler: { connectionTimeout: o.connectTimeoutMs ?? 5000, requestTimeout: o.requestTimeoutMs ?? 10000, throwOnRequestTimeout: true },
        // Checksums on every request cost a pass over each body; we verify digests ourselves.
        requestChecksumCalculation: 'WHEN_REQUIRED',
        responseChecksumValidation: 'WHEN_REQUIRED',
      });
      return { s3, client };
    })();
    return this.clientPromise;
  }

  async warm(): Promise<void> {
    // Loading the SDK costs ~60 ms and a TLS handshake more; pay both before the first hit waits.
    await this.get('v1/.warm').catch(() => null);
  }

  /**
   * The object's bytes (or the range's), or null when there is none.
   * A connection cut while the body streams is retried like the SDK retries a failed request
   * (`maxAttempts` in all): the SDK's own retry ends when the response headers arrive, so without
   * this a flaky link turned every cut download into a miss.
   * @throws CascacheError `E_UNAVAILABLE` (server or network), `E_INTEGRITY` (a short ranged read).
   */
  async get(key: string, range?: ByteRange): Promise<Buffer | null> {
    const { s3, client } = await this.client();
    const attempts = Math.max(this.options.maxAttempts ?? 3, 1);
    for (let attempt = 1; ; attempt++) {
      let streaming = false;
      try {
        const out = await client.send(
          new s3.GetObjectCommand({
            Bucket: this.options.bucket,
            Key: joinKey(this.prefix, key),
            Range: range ? `bytes=${range.offset}-${range.offset + range.length - 1}` : undefined,
          }),
        );
        streaming = true;
        let bytes: Buffer = out.Body ? Buffer.from(await out.Body.transformToByteArray()) : Buffer.alloc(0);
        streaming = false;
        if (range) bytes = trimToRange(bytes, range, out.ContentRange);
        if (range && bytes.length !== range.length) {
          throw new CascacheError(ErrorCodes.INTEGRITY, `${this.name}: ranged read of ${key} returned ${bytes.length} of ${range.length} bytes`, { details: { key, ...range } });
        }
        return bytes;
      } catch (err) {
        if (isCascacheError(err)) throw err;
        if (streaming && attempt < attempts) continue; // the body was cut: ask again
        if (isNotFound(err)) return null;
        if (status(err) === 416) throw new CascacheError(ErrorCodes.INTEGRITY, `${this.name}: range ${range?.offset}+${range?.length} is outside ${key}`, { cause: err });
        throw this.classify(err, `reading ${key}`);
      }
    }
  }

  async put(key: string, body: Buffer, options: { ifAbsent?: boolean } = {}): Promise<{ created: boolean }> {
    const { s3, client } = await this.client();
    try {
      await client.send(
        new s3.PutObjectCommand({
          Bucket: this.options.bucket,
          Key: joinKey(this.prefix, key),
          Body: body,
          ContentLength: body.length,
          IfNoneMatch: options.ifAbsent ? '*' : undefined,
        }),
      );
      return { created: true };
    } catch (err) {
      if (options.ifAbsent && status(err) === 412) return { created: false };
      throw this.classify(err, `writing ${key}`);
    }
  }

  async delete(key: string): Promise<boolean> {
    const { s3, client } = await this.client();
    try {
      await client.send(new s3.DeleteObjectCommand({ Bucket: this.options.bucket, Key: joinKey(this.prefix, key) }));
      return true; // S3 answers 204 whether or not the key existed
    } catch (err) {
      if (isNotFound(err)) return false;
      throw this.classify(err, `deleting ${key}`);
    }
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    const { s3, client } = await this.client();
    const full = joinKey(this.prefix, prefix);
    const strip = this.prefix === '' ? 0 : this.prefix.length + 1;
    let token: string | undefined;
    do {
      let page;
      try {
        page = await client.send(new s3.ListObjectsV2Command({ Bucket: this.options.bucket, Prefix: full, ContinuationToken: token }));
      } catch (err) {
        throw this.classify(err, `listing ${prefix}`);
      }
      for (const o of page.Contents ?? []) {
        if (!o.Key) continue;
        yield { key: o.Key.slice(strip), size: o.Size ?? 0, mtimeMs: o.LastModified?.getTime() };
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
  }

  private classify(err: unknown, what: string) {
    const code = status(err);
    const name = (err as { name?: string })?.name ?? '';
    if (code === 401 || code === 403 || name === 'NoSuchBucket' || name === 'InvalidAccessKeyId' || name === 'SignatureDoesNotMatch' || name === 'CredentialsProviderError') {
      return refused(this.name, what, err);
    }
    return unavailable(this.name, what, err);
  }
}

/**
 * A server may send more than the range asked for: the whole object (RFC 9110 lets it ignore Range)
 * or a wider range (s3rver answers `bytes=0-0` with everything). Keep exactly the requested bytes
 * when the answer covers them; anything else is left for the length check.
 */
function trimToRange(bytes: Buffer, range: ByteRange, contentRange: string | undefined): Buffer {
  if (bytes.length === range.length) return bytes;
  const m = contentRange ? /^bytes (\d+)-(\d+)\//.exec(contentRange) : null;
  const start = m ? Number(m[1]) : 0;
  const rel = range.offset - start;
  if (rel >= 0 && rel + range.length <= bytes.length) return bytes.subarray(rel, rel + range.length);
  return bytes;
}

function status(err: unknown): number | undefined {
  return (err as { $metadata?: { httpStatusCode?: number } })?.$metadata?.httpStatusCode;
}

function isNotFound(err: unknown): boolean {
  const name = (err as { name?: string })?.name;
  return name === 'NoSuchKey' || name === 'NotFound' || (status(err) === 404 && name !== 'NoSuchBucket');
}
