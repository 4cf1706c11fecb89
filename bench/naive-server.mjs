// @ts-check
/**
 * The baseline every whole-archive remote cache amounts to: the Nx self-hosted cache API storing each
 * tar.gz body as one file, write-once. No chunking, no dedup, no compression beyond Nx's gzip.
 * With `--s3 <endpoint> <bucket>` the bodies live in an S3 bucket instead (one object per hash, the
 * AWS SDK, write-once by a HEAD first): the whole-archive S3 cache that cascache's remote tiers
 * replace, for bench/remote.mjs. Used by the benchmarks only.
 */
import { createReadStream, createWriteStream, existsSync, mkdirSync, renameSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';

/**
 * @param {string} dir
 * @param {{ endpoint: string, bucket: string } | null} s3
 * @returns {Promise<{ url: string, close: () => Promise<void> }>}
 */
export async function startNaiveServer(dir, s3 = null) {
  mkdirSync(dir, { recursive: true });
  const sdk = s3 ? await import('@aws-sdk/client-s3') : null;
  const client = sdk && s3 ? new sdk.S3Client({ region: 'us-east-1', endpoint: s3.endpoint, forcePathStyle: true, credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } }) : null;
  const server = createServer(async (req, res) => {
    const m = /^\/v1\/cache\/([0-9]+)$/.exec(req.url ?? '');
    if (!m) return void res.writeHead(400).end();
    if (sdk && client && s3) {
      const Key = `naive/${m[1]}.tar.gz`;
      try {
        if (req.method === 'GET') {
          const out = await client.send(new sdk.GetObjectCommand({ Bucket: s3.bucket, Key }));
          res.writeHead(200, { 'content-type': 'application/octet-stream' });
          return void res.end(Buffer.from(await /** @type {any} */ (out.Body).transformToByteArray()));
        }
        if (req.method === 'PUT') {
          const exists = await client.send(new sdk.HeadObjectCommand({ Bucket: s3.bucket, Key })).then(() => true, () => false);
          if (exists) return void req.resume().on('end', () => res.writeHead(409).end());
          const parts = [];
          for await (const p of req) parts.push(p);
          await client.send(new sdk.PutObjectCommand({ Bucket: s3.bucket, Key, Body: Buffer.concat(parts) }));
          return void res.writeHead(200).end();
        }
      } catch (err) {
        return void res.writeHead(/** @type {any} */ (err)?.$metadata?.httpStatusCode === 404 ? 404 : 500).end();
      }
      return void res.writeHead(405).end();
    }
    const file = join(dir, `${m[1]}.tar.gz`);
    if (req.method === 'GET') {
      if (!existsSync(file)) return void res.writeHead(404).end();
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      return void createReadStream(file).pipe(res);
    }
    if (req.method === 'PUT') {
      if (existsSync(file)) return void req.resume().on('end', () => res.writeHead(409).end());
      const tmp = `${file}.${process.pid}.tmp`;
      try {
        await pipeline(req, createWriteStream(tmp));
        renameSync(tmp, file);
        res.writeHead(200).end();
      } catch {
        rmSync(tmp, { force: true });
        res.writeHead(500).end();
      }
      return;
    }
    res.writeHead(405).end();
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(undefined)));
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  return { url: `http://127.0.0.1:${port}`, close: () => new Promise((resolve) => server.close(() => resolve(undefined))) };
}

// Run as a process of its own (`node bench/naive-server.mjs <dir>`): the benchmark blocks on nx
// with spawnSync, so the server must not share its event loop. Prints {"url"} when ready.
if (process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href) {
  const i = process.argv.indexOf('--s3');
  const s3 = i > 0 ? { endpoint: process.argv[i + 1], bucket: process.argv[i + 2] } : null;
  const { url } = await startNaiveServer(process.argv[2] ?? '.naive-store', s3);
  process.stdout.write(`${JSON.stringify({ url })}\n`);
}
