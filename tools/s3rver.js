// Starts `s3rver` (a real S3-protocol server from the npm registry) as its own process, for tests,
// e2e and benchmarks: it can be killed mid-upload and started again on the same port and data.
const { spawn } = require('node:child_process');
const { mkdtempSync, rmSync } = require('node:fs');
const { tmpdir } = require('node:os');
const { join } = require('node:path');

const TEST_BUCKET = 'cascache-test';
const S3_CREDENTIALS = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' };

function start(port, dir, buckets, options) {
  const child = spawn(process.execPath, [join(__dirname, 's3rver-main.js'), String(port), dir], {
    env: { ...process.env, S3RVER_BUCKETS: buckets.join(','), S3RVER_CONDITIONAL_WRITES: options.conditionalWrites ? '1' : '' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => {
      out += d.toString();
      const m = /ready (\d+)/.exec(out);
      if (m) resolve({ child, port: Number(m[1]) });
    });
    child.stderr.on('data', (d) => (err += d.toString()));
    child.on('exit', (code) => reject(new Error(`s3rver exited with ${code}: ${err}`)));
  });
}

function stop(child, signal) {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    child.kill(signal);
  });
}

/**
 * @param buckets created at start
 * @param options `conditionalWrites`: honour `If-None-Match: *` on PUT as AWS S3 does (s3rver-main.js);
 *   without it, s3rver ignores the header, as some S3-protocol servers do
 */
async function startS3Server(buckets = [TEST_BUCKET], options = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'cascache-s3rver-'));
  let { child, port } = await start(0, dir, buckets, options);
  return {
    get endpoint() {
      return `http://127.0.0.1:${port}`;
    },
    get port() {
      return port;
    },
    /** Data directory (objects as files). */
    dir,
    kill: () => stop(child, 'SIGKILL'),
    async restart() {
      await stop(child, 'SIGKILL');
      ({ child, port } = await start(port, dir, buckets, options));
    },
    async close() {
      await stop(child, 'SIGTERM');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

module.exports = { startS3Server, TEST_BUCKET, S3_CREDENTIALS };
