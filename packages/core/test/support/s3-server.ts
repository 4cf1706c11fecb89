/**
 * Starts `s3rver` (a real S3-protocol server, from the npm registry) as its own process, so tests
 * can kill it mid-upload and start it again on the same port and data directory.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface S3Server {
  endpoint: string;
  port: number;
  /** Kills the process (SIGKILL: no graceful shutdown, like a crash). */
  kill(): Promise<void>;
  /** Starts it again on the same port and directory. */
  restart(): Promise<void>;
  /** Stops it and removes its data. */
  close(): Promise<void>;
}

export const TEST_BUCKET = 'cascache-test';
export const S3_CREDENTIALS = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' };

function start(port: number, dir: string, buckets: string[]): Promise<{ child: ChildProcess; port: number }> {
  const child = spawn(process.execPath, [join(__dirname, 's3rver-main.js'), String(port), dir], {
    env: { ...process.env, S3RVER_BUCKETS: buckets.join(',') },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /ready (\d+)/.exec(out);
      if (m) resolve({ child, port: Number(m[1]) });
    });
    child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    child.on('exit', (code) => reject(new Error(`s3rver exited with ${code}: ${err}`)));
  });
}

function stop(child: ChildProcess, signal: NodeJS.Signals): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    child.kill(signal);
  });
}

export async function startS3Server(buckets: string[] = [TEST_BUCKET]): Promise<S3Server> {
  const dir = mkdtempSync(join(tmpdir(), 'cascache-s3rver-'));
  let { child, port } = await start(0, dir, buckets);
  return {
    get endpoint() {
      return `http://127.0.0.1:${port}`;
    },
    get port() {
      return port;
    },
    async kill() {
      await stop(child, 'SIGKILL');
    },
    async restart() {
      await stop(child, 'SIGKILL');
      ({ child, port } = await start(port, dir, buckets));
    },
    async close() {
      await stop(child, 'SIGTERM');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
