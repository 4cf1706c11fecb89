export interface S3Server {
  readonly endpoint: string;
  readonly port: number;
  /** Data directory (objects as files). */
  readonly dir: string;
  /** Kills the process (SIGKILL: no graceful shutdown, like a crash). */
  kill(): Promise<void>;
  /** Starts it again on the same port and directory. */
  restart(): Promise<void>;
  /** Stops it and removes its data. */
  close(): Promise<void>;
}
export const TEST_BUCKET: string;
export const S3_CREDENTIALS: { accessKeyId: string; secretAccessKey: string };
/** `conditionalWrites`: honour `If-None-Match: *` on PUT, as AWS S3 does (s3rver alone ignores it). */
export function startS3Server(buckets?: string[], options?: { conditionalWrites?: boolean }): Promise<S3Server>;
