/**
 * FAKE Google Cloud Storage JSON API server, for tests only. No real GCS server or emulator installs
 * from the npm registry on this machine, so this implements the slice of the JSON API that
 * `@google-cloud/storage` uses for our calls (simple multipart upload with `ifGenerationMatch`,
 * media download with `Range`, list with `prefix`/`pageToken`, delete) and lets a test inject
 * failures. It is never used in place of our own code: the client under test is the real library.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

interface Obj {
  body: Buffer;
  generation: number;
  updated: Date;
}

export interface FakeGcsServer {
  endpoint: string;
  /** bucket -> name -> object. */
  buckets: Map<string, Map<string, Obj>>;
  /** Requests seen, as `METHOD path`, for asserting request economy. */
  requests: string[];
  /** The next `count` requests (matching `filter` if given) answer `status`. */
  failNext(count: number, status: number, filter?: (method: string, path: string) => boolean): void;
  close(): Promise<void>;
}

export async function startFakeGcsServer(bucketNames: string[], pageSize = 1000): Promise<FakeGcsServer> {
  const buckets = new Map<string, Map<string, Obj>>(bucketNames.map((b) => [b, new Map()]));
  const requests: string[] = [];
  let generation = 1;
  let failures: { count: number; status: number; filter?: (m: string, p: string) => boolean } | null = null;

  const handler = async (req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url!, 'http://x');
    const method = req.method!;
    requests.push(`${method} ${url.pathname}`);
    const body = await readBody(req);
    if (failures && failures.count > 0 && (!failures.filter || failures.filter(method, url.pathname))) {
      failures.count--;
      return json(res, failures.status, { error: { code: failures.status, message: 'injected failure' } });
    }
    let m = /^\/upload\/storage\/v1\/b\/([^/]+)\/o$/.exec(url.pathname);
    if (m && method === 'POST') {
      const bucket = buckets.get(m[1]!);
      if (!bucket) return notFound(res, 'bucket');
      const { name, media } = parseUpload(req, url, body);
      if (!name) return json(res, 400, { error: { code: 400, message: 'no name' } });
      if (url.searchParams.get('ifGenerationMatch') === '0' && bucket.has(name)) {
        return json(res, 412, { error: { code: 412, message: 'At least one of the pre-conditions you specified did not hold.' } });
      }
      const o = { body: media, generation: generation++, updated: new Date() };
      bucket.set(name, o);
      return json(res, 200, meta(m[1]!, name, o));
    }
    m = /^\/storage\/v1\/b\/([^/]+)\/o\/(.+)$/.exec(url.pathname);
    if (m) {
      const bucket = buckets.get(m[1]!);
      if (!bucket) return notFound(res, 'bucket');
      const name = decodeURIComponent(m[2]!);
      const o = bucket.get(name);
      if (method === 'DELETE') {
        if (!o) return notFound(res, 'object');
        bucket.delete(name);
        res.writeHead(204).end();
        return;
      }
      if (method !== 'GET') return json(res, 405, { error: { code: 405, message: method } });
      if (!o) return notFound(res, 'object');
      if (url.searchParams.get('alt') !== 'media') return json(res, 200, meta(m[1]!, name, o));
      const range = /^bytes=(\d+)-(\d*)$/.exec(String(req.headers.range ?? ''));
      if (range) {
        const start = Number(range[1]);
        const end = range[2] ? Math.min(Number(range[2]), o.body.length - 1) : o.body.length - 1;
        if (start >= o.body.length) return json(res, 416, { error: { code: 416, message: 'range' } });
        res.writeHead(206, { 'content-type': 'application/octet-stream', 'content-range': `bytes ${start}-${end}/${o.body.length}`, 'content-length': end - start + 1 });
        res.end(o.body.subarray(start, end + 1));
        return;
      }
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': o.body.length });
      res.end(o.body);
      return;
    }
    m = /^\/storage\/v1\/b\/([^/]+)\/o$/.exec(url.pathname);
    if (m && method === 'GET') {
      const bucket = buckets.get(m[1]!);
      if (!bucket) return notFound(res, 'bucket');
      const prefix = url.searchParams.get('prefix') ?? '';
      const names = [...bucket.keys()].filter((n) => n.startsWith(prefix)).sort();
      const from = Number(url.searchParams.get('pageToken') ?? 0);
      const page = names.slice(from, from + pageSize);
      const next = from + pageSize < names.length ? String(from + pageSize) : undefined;
      return json(res, 200, { kind: 'storage#objects', items: page.map((n) => meta(m![1]!, n, bucket.get(n)!)), nextPageToken: next });
    }
    json(res, 404, { error: { code: 404, message: `no route ${method} ${url.pathname}` } });
  };

  const server: Server = createServer((req, res) => {
    handler(req, res).catch((err) => json(res, 500, { error: { code: 500, message: String(err) } }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    buckets,
    requests,
    failNext(count, status, filter) {
      failures = { count, status, filter };
    },
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

function meta(bucket: string, name: string, o: Obj) {
  return { kind: 'storage#object', bucket, name, size: String(o.body.length), generation: String(o.generation), updated: o.updated.toISOString() };
}

function json(res: ServerResponse, status: number, doc: unknown): void {
  const text = JSON.stringify(doc);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function notFound(res: ServerResponse, what: string): void {
  json(res, 404, { error: { code: 404, message: what === 'bucket' ? 'The specified bucket does not exist.' : 'No such object.' } });
}

async function readBody(req: IncomingMessage): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const p of req) parts.push(p as Buffer);
  return Buffer.concat(parts);
}

/** `uploadType=multipart`: multipart/related with a JSON metadata part, then the media part. */
function parseUpload(req: IncomingMessage, url: URL, body: Buffer): { name: string | null; media: Buffer } {
  const type = String(req.headers['content-type'] ?? '');
  const b = /boundary="?([^";]+)"?/.exec(type);
  if (url.searchParams.get('uploadType') !== 'multipart' || !b) return { name: url.searchParams.get('name'), media: body };
  const delim = Buffer.from(`--${b[1]}`);
  const parts: Buffer[] = [];
  let at = body.indexOf(delim);
  while (at !== -1) {
    const start = at + delim.length;
    const next = body.indexOf(delim, start);
    if (next === -1) break;
    parts.push(body.subarray(start, next));
    at = next;
  }
  const content = (p: Buffer) => {
    const sep = p.indexOf('\r\n\r\n');
    let c = p.subarray(sep + 4);
    if (c.subarray(-2).toString() === '\r\n') c = c.subarray(0, -2);
    return c;
  };
  const metadata = JSON.parse(content(parts[0]!).toString('utf8')) as { name?: string };
  return { name: metadata.name ?? url.searchParams.get('name'), media: content(parts[1]!) };
}
