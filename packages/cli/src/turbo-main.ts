/**
 * The fast entry for `cascache turbo` and `cascache env turbo`: they run before every turbo command,
 * so they load only what they need (the agent's control client, git state, byte formatting), not the
 * store, the server or the cloud SDKs (~0.15 s less per run). `bin.ts` picks this entry.
 */
import { registerTurbo } from './commands/turbo';
import { rootCommand, runProgram, type Io } from './run-program';

/** True when `argv` is a command this entry serves. */
export const isTurboCommand = (argv: string[]): boolean => argv[0] === 'turbo' || (argv[0] === 'env' && argv[1] === 'turbo');

export function runTurbo(argv: string[], io: Io): Promise<number> {
  return runProgram(
    (setExitCode) => {
      const program = rootCommand(io);
      registerTurbo(program, io, setExitCode);
      return program;
    },
    argv,
    io,
  );
}
