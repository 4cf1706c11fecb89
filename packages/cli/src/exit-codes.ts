/**
 * The CLI is the only place that maps error codes to process exit codes. Stable: scripts rely on
 * them (documented in docs/cli.md).
 */
import { ErrorCodes, isCascacheError, type ErrorCode } from '@cascache/core/errors';

export const ExitCodes = {
  OK: 0,
  /** An unexpected internal failure (a bug: please report it). */
  INTERNAL: 1,
  /** Bad command line or configuration (E_CONFIG). */
  USAGE: 2,
  /** A cache miss on `cache get` (not an error). */
  MISS: 3,
  /** Something named does not exist (E_NOT_FOUND, or a missing file). */
  NOT_FOUND: 4,
  /** Input was rejected (E_BAD_INPUT, E_TOO_LARGE). */
  BAD_INPUT: 5,
  /** Stored or received bytes failed verification (E_INTEGRITY). */
  INTEGRITY: 6,
  /** A write-once key already holds something else (E_EXISTS). */
  EXISTS: 7,
  /** A tier was unreachable (E_UNAVAILABLE). */
  UNAVAILABLE: 8,
  /** A local filesystem failure (E_IO). */
  IO: 9,
} as const;

const BY_CODE: Record<ErrorCode, number> = {
  [ErrorCodes.CONFIG]: ExitCodes.USAGE,
  [ErrorCodes.NOT_FOUND]: ExitCodes.NOT_FOUND,
  [ErrorCodes.BAD_INPUT]: ExitCodes.BAD_INPUT,
  [ErrorCodes.TOO_LARGE]: ExitCodes.BAD_INPUT,
  [ErrorCodes.INTEGRITY]: ExitCodes.INTEGRITY,
  [ErrorCodes.EXISTS]: ExitCodes.EXISTS,
  [ErrorCodes.UNAVAILABLE]: ExitCodes.UNAVAILABLE,
  [ErrorCodes.IO]: ExitCodes.IO,
};

/** Exit code and one-line message for an error thrown by a command. */
export function describeError(err: unknown): { exitCode: number; message: string } {
  if (isCascacheError(err)) return { exitCode: BY_CODE[err.code] ?? ExitCodes.INTERNAL, message: `${err.message} (${err.code})` };
  const errno = (err as NodeJS.ErrnoException | undefined)?.code;
  const path = (err as NodeJS.ErrnoException | undefined)?.path;
  if (errno === 'ENOENT') return { exitCode: ExitCodes.NOT_FOUND, message: `no such file or directory: ${path ?? ''}` };
  if (errno === 'EISDIR') return { exitCode: ExitCodes.BAD_INPUT, message: `is a directory: ${path ?? ''}` };
  if (errno === 'EACCES' || errno === 'EPERM') return { exitCode: ExitCodes.IO, message: `permission denied: ${path ?? ''}` };
  return { exitCode: ExitCodes.INTERNAL, message: (err as Error)?.stack ?? String(err) };
}
