// @ts-check
/**
 * The baseline every whole-archive remote cache amounts to: the Nx self-hosted cache API storing each
 * tar.gz body as one file, write-once. No chunking, no dedup, no compression beyond Nx's gzip.
 * Used by bench/nx.mjs only.
 */
import { createReadStream, createWriteStream, existsSync, mkdirSync, renameSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';

/** @param {string} dir @returns {Promise<{ url: string, close: () => Promise<void> }>} */
export async function startNaiveServer(dir) {
  mkdirSync(dir, { recursive: true });
  const server = createServer(async (req, res) => {
    const m = /^\/v1\/cache\/([0-9]+)$/.exec(req.url ?? '');
    if (!m) return void res.writeHead(400).end();
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
  const { url } = await startNaiveServer(process.argv[2] ?? '.naive-store');
  process.stdout.write(`${JSON.stringify({ url })}\n`);
}
