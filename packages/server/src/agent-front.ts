/**
 * The agent's front: the process that owns the port Nx and turbo talk to, and passes every request
 * to a worker process (the agent proper: store, tiers, uploads) over keep-alive connections to the
 * worker's Unix socket (a named pipe on Windows). It holds no store and does no work of its own, so it outlives what kills a worker (kill
 * -9, out of memory, a native crash).
 *
 * Why: Nx reads its cache server address once per run and fails the whole run on a refused or reset
 * connection, or on any status but 200/404 for a GET and 200/409 for a PUT (nx 24's client). An agent
 * that died mid-run failed the user's build. With the front, a request the worker cannot answer
 * becomes a miss: GET/HEAD 404, PUT 200 `{"stored":false}` (its body read to the end first), anything
 * else 503; the front starts a new worker at once, and the requests after it are served again.
 * A request whose response had already begun when the worker died is cut (its status is sent);
 * the clients treat a cut body as a failed download.
 *
 * Restarts are bounded: at most {@link MAX_RESTARTS} in {@link RESTART_WINDOW_MS}; beyond that the
 * front answers misses until the window has passed, then tries again. A worker that exits on its own
 * with code 0 (idle, SIGTERM, its store directory deleted) ends the front with it; one that fails to
 * start the first time does too, with its code, after writing its reason to the shared log. The
 * front also ends on its own when its store is deleted or replaced, or after `idleMs` without a
 * request, so a front whose workers keep failing never outlives its store or its use.
 *
 * `GET /_cascache/front` (the agent's token) answers `{pid, workerPid, restarts}`; `GET /healthz`
 * with the token answers 503 `{"status":"restarting"}` while there is no worker.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { Agent, createServer, request, type IncomingMessage, type OutgoingHttpHeaders, type ServerResponse } from 'node:http';
import { randomBytes } from 'node:crypto';
import { rmSync, statSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Most worker restarts within {@link RESTART_WINDOW_MS}. */
export const MAX_RESTARTS = 5;
/** Window over which restarts are counted, ms. */
export const RESTART_WINDOW_MS = 60_000;

/** A request body that sends nothing for this long is cut, as the worker does (server.ts), ms. */
const UPLOAD_IDLE_MS = 30_000;

/** Headers that describe one connection, not the message: never passed through. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade']);

export interface FrontOptions {
  /**
   * The worker's entry script. It is forked with `CASCACHE_AGENT_ROLE=worker` and
   * `CASCACHE_AGENT_SOCKET=<path>`, and must listen there and then send `{socketPath, storeDescriptor}`
   * over IPC (the descriptor: the file whose inode names the store it opened).
   */
  workerScript: string;
  /** Environment of the workers. */
  env: NodeJS.ProcessEnv;
  /** Bearer token that may read `/_cascache/front`. */
  token: string;
  /** Where the front's own log lines go (JSON lines, like the worker's). */
  log: (level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) => void;
  /** Stop after this long without a request, ms (the worker's own idle rule, for when it is not there). */
  idleMs: number;
}

export interface Front {
  port: number;
  /** Stops the worker (SIGTERM: it finishes what it is storing) and then the front. */
  stop(): void;
  /** Resolves with the exit code the front's process should end with. */
  done: Promise<number>;
}

interface Worker {
  child: ChildProcess;
  socketPath: string;
  /** The store's descriptor file, whose inode names the store the worker opened. */
  storeDescriptor: string;
}

/** How often the front checks that the store is still the one its worker opened, ms. */
const STORE_CHECK_MS = 1000;

function inodeOf(path: string): number | null {
  try {
    return statSync(path).ino;
  } catch {
    return null;
  }
}

/**
 * A fresh socket path for a worker: a Unix domain socket under the temp directory (short: the limit
 * is ~100 bytes), a named pipe on Windows. No port to allocate, and nothing listening on TCP but the
 * front; the worker still checks every request's token.
 */
function workerSocketPath(): string {
  const name = `cascache-agent-${process.pid}-${randomBytes(6).toString('hex')}`;
  return process.platform === 'win32' ? `\\\\.\\pipe\\${name}` : join(tmpdir(), `${name}.sock`);
}

function copyHeaders(h: IncomingMessage['headers']): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  for (const [k, v] of Object.entries(h)) if (v !== undefined && !HOP_BY_HOP.has(k)) out[k] = v;
  return out;
}

/**
 * Starts the first worker and listens on 127.0.0.1 (a free port).
 * @throws Error with the worker's exit code in `exitCode` when the first worker does not start.
 */
export async function startFront(options: FrontOptions): Promise<Front> {
  const upstream = new Agent({ keepAlive: true, maxSockets: 256 });
  let worker: Worker | null = null;
  let starting: Promise<void> | null = null;
  let stopping = false;
  let restarts = 0;
  const recent: number[] = [];
  let finish!: (code: number) => void;
  const done = new Promise<number>((r) => (finish = r));
  let idleTimer: NodeJS.Timeout | undefined;
  let storeWatch: NodeJS.Timeout | undefined;
  const end = (code: number): void => {
    clearTimeout(idleTimer);
    clearInterval(storeWatch);
    server.close();
    finish(code);
  };
  /** Stops the worker (SIGTERM: it finishes what it is storing), then the front. */
  const stop = (why: string): void => {
    if (stopping) return;
    stopping = true;
    options.log('info', 'agent stopping', { why });
    if (worker) worker.child.kill('SIGTERM');
    else if (!starting) end(0);
  };
  const touch = (): void => {
    clearTimeout(idleTimer);
    idleTimer = setTimeout(() => stop('idle'), options.idleMs);
    idleTimer.unref();
  };

  const spawnWorker = (): Promise<Worker> =>
    new Promise((resolve, reject) => {
      const socketPath = workerSocketPath();
      const child = fork(options.workerScript, [], { env: { ...options.env, CASCACHE_AGENT_ROLE: 'worker', CASCACHE_AGENT_SOCKET: socketPath }, stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
      const onExit = (code: number | null, signal: NodeJS.Signals | null): void => {
        const err = new Error(`the agent worker exited before listening (${signal ?? `code ${code}`})`) as Error & { exitCode: number };
        err.exitCode = code ?? 1;
        reject(err);
      };
      child.once('exit', onExit);
      child.once('message', (m: unknown) => {
        const msg = m as { socketPath?: unknown; storeDescriptor?: unknown } | null;
        if (msg?.socketPath !== socketPath || typeof msg.storeDescriptor !== 'string') return;
        child.off('exit', onExit);
        resolve({ child, socketPath, storeDescriptor: msg.storeDescriptor });
      });
    });

  const adopt = (w: Worker): void => {
    worker = w;
    w.child.once('exit', (code, signal) => {
      if (worker === w) worker = null;
      upstream.destroy(); // its sockets lead nowhere now
      if (process.platform !== 'win32') rmSync(w.socketPath, { force: true }); // left behind by a kill -9
      if (stopping || (code === 0 && signal === null)) return end(code ?? 0);
      options.log('warn', 'agent worker died; starting a new one (lookups are misses until it listens)', { pid: w.child.pid, code, signal });
      restart();
    });
  };

  const restart = (): void => {
    if (stopping || starting) return;
    const now = Date.now();
    while (recent.length > 0 && recent[0]! <= now - RESTART_WINDOW_MS) recent.shift();
    if (recent.length >= MAX_RESTARTS) {
      options.log('error', `agent worker died ${MAX_RESTARTS} times within ${RESTART_WINDOW_MS / 1000} s; answering misses until the window has passed`);
      setTimeout(restart, recent[0]! + RESTART_WINDOW_MS - now).unref();
      return;
    }
    recent.push(now);
    restarts++;
    starting = spawnWorker().then(
      (w) => {
        starting = null;
        if (stopping) w.child.kill('SIGTERM');
        adopt(w);
        options.log('info', 'agent worker started again', { pid: w.child.pid });
      },
      (err: Error) => {
        starting = null;
        options.log('error', err.message);
        if (!stopping) return restart();
        end(0);
      },
    );
  };

  const miss = (req: IncomingMessage, res: ServerResponse): void => {
    const answer = (): void => {
      if (res.headersSent) return void res.destroy();
      if (req.method === 'GET' || req.method === 'HEAD') res.writeHead(404, { 'content-type': 'application/json' }).end(req.method === 'GET' ? '{"error":"not found"}' : undefined);
      else if (req.method === 'PUT') res.writeHead(200, { 'content-type': 'application/json' }).end('{"stored":false}');
      else res.writeHead(503, { 'content-type': 'application/json', 'retry-after': '1' }).end('{"error":"the agent is restarting"}');
    };
    if (req.complete) return answer();
    req.once('end', answer);
    req.once('error', () => res.destroy());
    req.resume();
  };

  const server = createServer((req, res) => {
    touch();
    if (req.url === '/_cascache/front' && req.method === 'GET') {
      if (req.headers.authorization !== `Bearer ${options.token}`) return void res.writeHead(401).end();
      return void res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ pid: process.pid, workerPid: worker?.child.pid ?? null, restarts }));
    }
    if (!worker && req.url === '/healthz' && req.headers.authorization === `Bearer ${options.token}`) {
      // Ours, and alive, but between workers: whoever probes waits rather than starting another agent.
      return void res.writeHead(503, { 'content-type': 'application/json', 'retry-after': '1' }).end('{"status":"restarting"}');
    }
    if (!req.complete && req.method !== 'GET' && req.method !== 'HEAD') {
      // The worker cuts a stalled body; the front must too, or it would hold one a dead worker left.
      req.socket.setTimeout(UPLOAD_IDLE_MS, () => req.socket.destroy());
      req.once('end', () => req.socket.setTimeout(0));
    }
    const w = worker;
    if (!w) return miss(req, res);
    const up = request({ socketPath: w.socketPath, method: req.method, path: req.url, headers: copyHeaders(req.headers), agent: upstream }, (ures) => {
      res.writeHead(ures.statusCode ?? 502, copyHeaders(ures.headers));
      ures.pipe(res);
      ures.once('error', () => res.destroy());
      ures.once('aborted', () => res.destroy());
    });
    up.once('error', () => {
      req.unpipe(up);
      miss(req, res);
    });
    res.once('close', () => {
      if (!res.writableFinished) up.destroy();
    });
    req.pipe(up);
  });
  server.keepAliveTimeout = 65_000;
  server.headersTimeout = 66_000;

  let first: Worker;
  try {
    first = await spawnWorker();
  } catch (err) {
    upstream.destroy();
    throw err;
  }
  adopt(first);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  touch();
  // A store deleted or replaced under the agent ends it, whether or not a worker is there to notice.
  const inode = inodeOf(first.storeDescriptor);
  storeWatch = setInterval(() => {
    if (inodeOf(first.storeDescriptor) !== inode) stop('its store directory was deleted or replaced');
  }, STORE_CHECK_MS);
  storeWatch.unref();
  return { port: (server.address() as AddressInfo).port, done, stop: () => stop('stop') };
}
