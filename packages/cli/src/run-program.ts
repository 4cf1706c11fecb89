/**
 * Parses argv with a command tree and maps what it throws to an exit code: the one place where
 * errors become exit codes and messages. Light (commander and the exit codes only), so an entry
 * that needs little (`cascache turbo`) loads little.
 */
import { Command, CommanderError } from 'commander';
import { describeError, ExitCodes } from './exit-codes';

/** Where a command writes; the real process streams in production, buffers in tests. */
export interface Io {
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
}

/**
 * Builds a program with `build`, runs it on `argv` (without the node and script entries) and returns
 * the exit code. Never throws and never exits.
 */
export async function runProgram(build: (setExitCode: (code: number) => void) => Command, argv: string[], io: Io): Promise<number> {
  let exitCode: number = ExitCodes.OK;
  const program = build((code) => {
    exitCode = code;
  });
  try {
    await program.parseAsync(argv, { from: 'user' });
    return exitCode;
  } catch (err) {
    if (err instanceof CommanderError) {
      // --help and --version end here with exit code 0; usage errors were already printed.
      return err.exitCode === 0 ? ExitCodes.OK : ExitCodes.USAGE;
    }
    const { exitCode: code, message } = describeError(err);
    io.stderr.write(`cascache: ${message}\n`);
    return code;
  }
}

/** The root command every entry shares: output to `io`, errors thrown rather than exiting. */
export function rootCommand(io: Io): Command {
  return new Command('cascache')
    .description('Content-addressed, chunked, tiered build cache for JavaScript monorepos')
    // Root options only before the subcommand, so `cache build x --version 1.0.0` is the command's own.
    .enablePositionalOptions()
    .configureOutput({ writeOut: (s) => io.stdout.write(s), writeErr: (s) => io.stderr.write(s) })
    .exitOverride()
    .showHelpAfterError('(run with --help for usage)');
}
