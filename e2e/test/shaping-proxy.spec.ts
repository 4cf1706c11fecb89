/**
 * The shaping proxy the fault suite puts in front of a real S3-protocol server: it must deliver
 * every byte in order, add its latency, pace to its rate, and cut exactly the connections it says.
 */
import { createServer, connect, type Server } from 'node:net';
import { randomBytes } from 'node:crypto';
import { startShapingProxy, type ShapingProxy } from '../src/shaping-proxy';

/** A server that answers each connection with `reply` once the client has half-closed. */
async function echoServer(reply: Buffer): Promise<{ server: Server; port: number }> {
  const server = createServer((s) => {
    const got: Buffer[] = [];
    s.on('data', (d) => got.push(d));
    s.on('end', () => s.end(reply));
    s.on('error', () => undefined);
  });
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', () => ok()));
  return { server, port: (server.address() as { port: number }).port };
}

/** Sends `ping`, half-closes, and collects the reply; resolves with what arrived and how it ended. */
function roundTrip(port: number): Promise<{ bytes: Buffer; ms: number; error?: string }> {
  return new Promise((resolve) => {
    const t0 = Date.now();
    const parts: Buffer[] = [];
    const s = connect(port, '127.0.0.1', () => s.end('ping'));
    s.on('data', (d) => parts.push(d));
    s.on('error', (err: NodeJS.ErrnoException) => resolve({ bytes: Buffer.concat(parts), ms: Date.now() - t0, error: err.code }));
    s.on('end', () => resolve({ bytes: Buffer.concat(parts), ms: Date.now() - t0 }));
  });
}

describe('shaping proxy', () => {
  const reply = randomBytes(256 * 1024);
  let target: { server: Server; port: number };
  let proxy: ShapingProxy | undefined;
  beforeAll(async () => {
    target = await echoServer(reply);
  });
  afterEach(async () => proxy?.close());
  afterAll(() => target.server.close());

  it('delivers every byte in order, at least one latency each way later', async () => {
    proxy = await startShapingProxy(target.port, { latencyMs: 60 });
    const r = await roundTrip(proxy.port);
    expect(r.error).toBeUndefined();
    expect(r.bytes.equals(reply)).toBe(true);
    expect(r.ms).toBeGreaterThanOrEqual(120);
  });

  it('paces each direction to its rate: 256 KiB at 1 MiB/s takes at least 250 ms', async () => {
    proxy = await startShapingProxy(target.port, { bytesPerSecond: 1024 * 1024 });
    const r = await roundTrip(proxy.port);
    expect(r.bytes.equals(reply)).toBe(true);
    expect(r.ms).toBeGreaterThanOrEqual(240);
  });

  it('cuts the connection that carries the bytes to each multiple of cutEveryBytes there, and no other', async () => {
    proxy = await startShapingProxy(target.port, { cutEveryBytes: 100 * 1024 });
    const cut = await roundTrip(proxy.port);
    expect(cut.bytes.equals(reply.subarray(0, 100 * 1024))).toBe(true);
    expect(proxy.stats()).toEqual({ connections: 1, cut: 1 });
    await proxy.close();

    proxy = await startShapingProxy(target.port, { cutEveryBytes: 1024 * 1024 }); // 3 x 256 KiB stay below it
    const whole = [await roundTrip(proxy.port), await roundTrip(proxy.port), await roundTrip(proxy.port)];
    expect(whole.map((r) => r.error ?? (r.bytes.equals(reply) ? 'ok' : 'wrong bytes'))).toEqual(['ok', 'ok', 'ok']);
    expect(proxy.stats()).toEqual({ connections: 3, cut: 0 });
  });
});
