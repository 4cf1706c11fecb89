/**
 * The `cascache` command tree. `createProgram()` builds it without running, so tests drive it with
 * their own argv and streams; `bin.ts` is the only file that touches `process`.
 */
import { createReadStream } from 'node:fs';
import type { Command } from 'commander';
import { chunkStream, DEFAULT_CHUNKER_PARAMS, digestFile, digestOf, validateChunkerParams } from '@cascache/core';
import { closeCliStores } from './context';
import { registerCache } from './commands/cache';
import { registerFlush } from './commands/flush';
import { registerDashboard } from './commands/dashboard';
import { registerGc } from './commands/gc';
import { registerKeygen } from './commands/keygen';
import { registerStats } from './commands/stats';
import { registerStore } from './commands/store';
import { registerVerify } from './commands/verify';
import { registerTurbo } from './commands/turbo';
import { registerWarm } from './commands/warm';
import { registerServe } from './serve';
import { rootCommand, runProgram, type Io } from './run-program';
import { parseSize } from './sizes';

export type { Io } from './run-program';

const VERSION: string = (require('../package.json') as { version: string }).version;

/** Writes with backpressure, so large outputs (a chunk list of a big file) stay bounded. */
async function write(out: NodeJS.WritableStream, text: string): Promise<void> {
  if (!out.write(text)) await new Promise<void>((resolve) => out.once('drain', resolve));
}

export function createProgram(io: Io, setExitCode: (code: number) => void = () => undefined): Command {
  const program = rootCommand(io).version(VERSION);

  const debug = program.command('debug').description('Low-level tools for inspecting digests and chunk boundaries');

  debug
    .command('digest')
    .description('Print the BLAKE3-256 digest (lowercase hex) of a file, as cascache addresses it')
    .argument('<file>', 'file to hash ("-" for standard input)')
    .action(async (file: string) => {
      if (file === '-') {
        const parts: Buffer[] = [];
        for await (const p of process.stdin) parts.push(p as Buffer);
        await write(io.stdout, `${digestOf(Buffer.concat(parts))}\n`);
        return;
      }
      await write(io.stdout, `${await digestFile(file)}  ${file}\n`);
    });

  debug
    .command('chunk')
    .description('Print the FastCDC 2020 chunk lengths of a file, one per line, as cascache would cut it')
    .argument('<file>', 'file to chunk')
    .option('--min <size>', 'minimum chunk size', parseSize, DEFAULT_CHUNKER_PARAMS.min)
    .option('--avg <size>', 'average chunk size', parseSize, DEFAULT_CHUNKER_PARAMS.avg)
    .option('--max <size>', 'maximum chunk size', parseSize, DEFAULT_CHUNKER_PARAMS.max)
    .option('--digests', 'print "<length> <digest>" per chunk, for comparing two versions of a file')
    .action(async (file: string, opts: { min: number; avg: number; max: number; digests?: boolean }) => {
      const params = validateChunkerParams({ min: opts.min, avg: opts.avg, max: opts.max });
      for await (const chunk of chunkStream(createReadStream(file, { highWaterMark: 1 << 20 }), params)) {
        await write(io.stdout, opts.digests ? `${chunk.length} ${digestOf(chunk)}\n` : `${chunk.length}\n`);
      }
    });

  registerServe(program, io);
  registerStore(program, io);
  registerCache(program, io, setExitCode);
  registerGc(program, io);
  registerStats(program, io);
  registerVerify(program, io, setExitCode);
  registerTurbo(program, io, setExitCode);
  registerFlush(program, io, setExitCode);
  registerWarm(program, io, setExitCode);
  registerKeygen(program, io);
  registerDashboard(program, io);
  return program;
}

/**
 * Runs the CLI with `argv` (without the node and script entries) and returns the exit code.
 * Never throws and never exits: `bin.ts` decides what to do with the code.
 */
export async function run(argv: string[], io: Io): Promise<number> {
  try {
    return await runProgram((setExitCode) => createProgram(io, setExitCode), argv, io);
  } finally {
    closeCliStores();
  }
}
