/**
 * A TCP proxy on loopback that makes a healthy server look like one across a bad network: it adds
 * latency to every piece of data in each direction, caps the bandwidth of each connection, and cuts
 * connections part-way through a response (as a dropped NAT entry or a dying load balancer does):
 * the client gets a prefix of the bytes, then the connection closes. Test infrastructure, not a
 * fake: the server behind it is the real one.
 *
 * Home-made because nothing that fits installs here: this kernel has no `netem` qdisc (not even in a
 * private network namespace), Debian bookworm does not package toxiproxy, its binaries come from
 * GitHub (unreachable at install time), and no maintained npm package shapes TCP (issue 12).
 */
import { fork } from 'node:child_process';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { join } from 'node:path';

export interface ShapingOptions {
  /** Added to every piece of data, each direction, ms: a round trip gains twice this. Default 0. */
  latencyMs?: number;
  /** Per connection and direction, bytes per second; 0 or absent: no cap. */
  bytesPerSecond?: number;
  /**
   * Each time the bytes sent from the server, counted over all connections, reach another multiple
   * of this, the connection carrying them is cut there: the client gets exactly the bytes up to the
   * multiple, then the connection closes (resetAndDestroy; Node 20 delivers it to the client as an
   * early end). Counted over connections, not per connection, because HTTP clients keep a few
   * connections alive for every request. 0 or absent: never.
   */
  cutEveryBytes?: number;
}

export interface ShapingProxy {
  /** `http://127.0.0.1:<port>` */
  endpoint: string;
  port: number;
  /** Connections accepted and connections cut so far. */
  stats(): { connections: number; cut: number };
  close(): Promise<void>;
}

/**
 * Delays and paces one direction of a connection. Pieces wait in one FIFO queue, each with the time
 * it is due, and one timer at a time delivers the head (timers alone could reorder pieces due within
 * the same millisecond). `after` runs a function once everything queued so far is delivered.
 */
function shaper(deliver: (piece: Buffer) => void, options: ShapingOptions): { send(piece: Buffer): void; after(fn: () => void): void } {
  const latency = options.latencyMs ?? 0;
  const rate = options.bytesPerSecond ?? 0;
  const queue: Array<{ dueAt: number; piece?: Buffer; fn?: () => void }> = [];
  let freeAt = 0; // when the paced link has sent everything queued so far, ms since the epoch
  let timer: NodeJS.Timeout | undefined;
  const pump = (): void => {
    timer = undefined;
    while (queue.length > 0 && queue[0]!.dueAt <= Date.now()) {
      const { piece, fn } = queue.shift()!;
      if (fn) fn();
      else deliver(piece!);
    }
    if (queue.length > 0) timer = setTimeout(pump, Math.max(queue[0]!.dueAt - Date.now(), 1));
  };
  const push = (item: { dueAt: number; piece?: Buffer; fn?: () => void }): void => {
    queue.push(item);
    if (!timer) timer = setTimeout(pump, Math.max(queue[0]!.dueAt - Date.now(), 0));
  };
  return {
    send(piece) {
      const now = Date.now();
      freeAt = Math.max(freeAt, now) + (rate > 0 ? (piece.length * 1000) / rate : 0);
      push({ dueAt: freeAt + latency, piece });
    },
    after(fn) {
      push({ dueAt: Math.max(freeAt, Date.now()) + latency, fn });
    },
  };
}

/** Starts a proxy to `target` (`host:port`) on 127.0.0.1 with the given shaping. */
export async function startShapingProxy(targetPort: number, options: ShapingOptions, targetHost = '127.0.0.1'): Promise<ShapingProxy> {
  let connections = 0;
  let cut = 0;
  let served = 0; // server-to-client bytes delivered, all connections
  const open = new Set<Socket>();
  // Half-open on both sides: a client's half-close (end of request) must not end the reply.
  const server: Server = createServer({ allowHalfOpen: true }, (client) => {
    connections++;
    const upstream = connect({ port: targetPort, host: targetHost, allowHalfOpen: true });
    open.add(client).add(upstream);
    let cutting = false; // a reset is on its way: nothing else may reach the client, not even a FIN
    const end = (): void => {
      if (cutting && !client.destroyed) return;
      client.destroy();
      upstream.destroy();
      open.delete(client);
      open.delete(upstream);
    };
    const toServer = shaper((piece) => void (upstream.destroyed || upstream.write(piece)), options);
    const every = options.cutEveryBytes ?? 0;
    const toClient = shaper((piece) => {
      if (client.destroyed || cutting) return;
      // Bytes left before the next multiple of `every`: deliver those, then reset once they are out.
      const left = every > 0 ? every - (served % every) : Infinity;
      if (piece.length < left) {
        served += piece.length;
        client.write(piece);
        return;
      }
      served += left;
      cut++;
      cutting = true;
      client.write(piece.subarray(0, left), () => {
        client.resetAndDestroy();
        end();
      });
    }, options);
    client.on('data', toServer.send);
    upstream.on('data', toClient.send);
    // A half-close or close travels after the data queued before it.
    client.on('end', () => toServer.after(() => upstream.end()));
    upstream.on('end', () => toClient.after(() => cutting || client.end()));
    client.on('error', end);
    upstream.on('error', () => toClient.after(end));
    client.on('close', end);
    upstream.on('close', () => toClient.after(end));
  });
  await new Promise<void>((ok, fail) => {
    server.once('error', fail);
    server.listen(0, '127.0.0.1', () => ok());
  });
  const port = (server.address() as { port: number }).port;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    port,
    stats: () => ({ connections, cut }),
    close: () =>
      new Promise<void>((ok) => {
        for (const s of open) s.destroy();
        server.close(() => ok());
      }),
  };
}

/**
 * The same proxy in a child process, for callers that block their own event loop while traffic
 * flows (the fault suite runs nx and turbo with spawnSync, which would stall an in-process proxy).
 * `stats()` asks the child over IPC.
 */
export async function startShapingProxyProcess(targetPort: number, options: ShapingOptions): Promise<Omit<ShapingProxy, 'stats'> & { stats(): Promise<{ connections: number; cut: number }> }> {
  // Under ts-jest this module is the .ts source, which node cannot run: fork the build of it (the
  // e2e package builds before its tests run).
  const entry = __filename.endsWith('.ts') ? join(__dirname, '..', 'dist', 'shaping-proxy.js') : __filename;
  const child = fork(entry, [], { env: { ...process.env, CASCACHE_SHAPING_PROXY: JSON.stringify({ targetPort, options }) }, stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
  const next = <T>(): Promise<T> =>
    new Promise((ok, fail) => {
      const onExit = (code: number | null): void => fail(new Error(`the shaping proxy process exited (${code})`));
      child.once('exit', onExit);
      child.once('message', (m) => {
        child.off('exit', onExit);
        ok(m as T);
      });
    });
  const { port } = await next<{ port: number }>();
  return {
    endpoint: `http://127.0.0.1:${port}`,
    port,
    async stats() {
      const answer = next<{ connections: number; cut: number }>();
      child.send('stats');
      return answer;
    },
    close: () =>
      new Promise<void>((ok) => {
        if (child.exitCode !== null) return ok();
        child.once('exit', () => ok());
        child.kill();
      }),
  };
}

// The child process's side of startShapingProxyProcess.
if (require.main === module && process.env.CASCACHE_SHAPING_PROXY && process.send) {
  const { targetPort, options } = JSON.parse(process.env.CASCACHE_SHAPING_PROXY) as { targetPort: number; options: ShapingOptions };
  void startShapingProxy(targetPort, options).then((proxy) => {
    process.on('message', () => process.send!(proxy.stats()));
    process.on('disconnect', () => process.exit(0));
    process.send!({ port: proxy.port });
  });
}
