/**
 * `cascache dashboard`: the dashboard of a local store (what `cascache stats` reports, drawn, plus
 * tier journals), served on 127.0.0.1 until interrupted. `cascache serve` serves the same page at
 * its `/`, with tokens.
 */
import type { Command } from 'commander';
import { listenDashboard } from '@cascache/server';
import { openExistingCliStore, withStoreFlags, type StoreFlags } from '../context';
import type { Io } from '../program';

interface DashboardFlags extends StoreFlags {
  host: string;
  port: number;
}

export function registerDashboard(program: Command, io: Io): void {
  withStoreFlags(
    program
      .command('dashboard')
      .description("Serve a page with the store's hit rates, time saved, sizes, latest runs and tasks that miss most, on 127.0.0.1")
      .option('--host <host>', 'loopback address to listen on', '127.0.0.1')
      .option('--port <port>', 'port, 0 for any free one', (v) => Number(v), 7381),
  ).action(async (flags: DashboardFlags) => {
    const s = await openExistingCliStore(flags, io);
    const { url, close } = await listenDashboard(s, { host: flags.host, port: flags.port });
    io.stdout.write(`${url}\n`);
    io.stderr.write(`cascache: dashboard of ${s.root} at ${url} (Ctrl-C to stop)\n`);
    await new Promise<void>((resolveStopped) => {
      const stop = (): void => void close().finally(resolveStopped);
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
    });
  });
}
