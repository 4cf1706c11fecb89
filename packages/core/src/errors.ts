/**
 * One error type for everything core throws, with a stable machine-readable `code`.
 *
 * Modelled on cacache's `EINTEGRITY`/`EBADSIZE` and bazel-remote's `Error{Code}`: callers branch on
 * `code`, never on message text. Only the server maps codes to HTTP statuses and only the CLI maps
 * them to exit codes. A miss is never an error: lookups return `null`/`false`.
 */

/** Stable error codes. Adding one is an API change; renaming one is a breaking change. */
export const ErrorCodes = {
  /** Stored or received bytes do not match their digest, or a blob frame is malformed. */
  INTEGRITY: 'E_INTEGRITY',
  /** A required object (for example a manifest's chunk during restore) is absent. */
  NOT_FOUND: 'E_NOT_FOUND',
  /** A write-once key already holds a different value. */
  EXISTS: 'E_EXISTS',
  /** Input from a caller, a file or a request is malformed or hostile (bad digest, path traversal...). */
  BAD_INPUT: 'E_BAD_INPUT',
  /** Input exceeds a configured bound (entry size, total size, entry count, blob size). */
  TOO_LARGE: 'E_TOO_LARGE',
  /** A tier or dependency is temporarily unreachable; the operation may succeed if retried. */
  UNAVAILABLE: 'E_UNAVAILABLE',
  /** A local filesystem operation failed for a reason other than the above. */
  IO: 'E_IO',
  /** Configuration is invalid (chunker parameters, secrets, store descriptor mismatch). */
  CONFIG: 'E_CONFIG',
} as const;

export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];

const RETRYABLE_BY_DEFAULT: ReadonlySet<ErrorCode> = new Set([ErrorCodes.UNAVAILABLE]);

/** Options for {@link CascacheError}. */
export interface CascacheErrorOptions {
  /** Whether repeating the same call may succeed. Defaults to true only for `E_UNAVAILABLE`. */
  retryable?: boolean;
  /** The underlying error, kept for diagnostics. */
  cause?: unknown;
  /** Structured context (digest, path, limit...). Never put secrets here. */
  details?: Record<string, unknown>;
}

/** The error type thrown by cascache core. Check `code`, not the message. */
export class CascacheError extends Error {
  readonly code: ErrorCode;
  readonly retryable: boolean;
  readonly details: Record<string, unknown>;

  constructor(code: ErrorCode, message: string, options: CascacheErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'CascacheError';
    this.code = code;
    this.retryable = options.retryable ?? RETRYABLE_BY_DEFAULT.has(code);
    this.details = options.details ?? {};
  }
}

/** True when `err` is a {@link CascacheError}, optionally with the given code. */
export function isCascacheError(err: unknown, code?: ErrorCode): err is CascacheError {
  return err instanceof CascacheError && (code === undefined || err.code === code);
}

/** Wraps a Node.js filesystem error as `E_IO` (or returns a CascacheError unchanged). */
export function toIoError(err: unknown, message: string, details?: Record<string, unknown>): CascacheError {
  if (err instanceof CascacheError) return err;
  const errno = (err as NodeJS.ErrnoException | undefined)?.code;
  const retryable = errno === 'EMFILE' || errno === 'ENFILE' || errno === 'EAGAIN' || errno === 'EBUSY';
  return new CascacheError(ErrorCodes.IO, `${message}: ${(err as Error)?.message ?? String(err)}`, {
    cause: err,
    retryable,
    details: { ...details, errno },
  });
}
