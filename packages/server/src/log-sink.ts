/**
 * Where the agent's log lines go: its stderr, which the plugin points at `<store>/agent.log`
 * (agent-control.ts), a file on the store's own disk. When that disk is full a write fails with
 * `ENOSPC`, and Node emits the failure as an `error` event on `process.stderr`; unhandled, it ends the
 * process. For the front, which owns the port, that ended the Nx run with it (the fault suite's
 * full-disk row found it: "Connection refused" mid-run). So lines are written here with one
 * synchronous `write(2)` each, and a line that cannot be written is dropped: a log must
 * never cost a build. Writing resumes by itself once there is room again.
 */
import { writeSync } from 'node:fs';

/** A pino destination (`{ write(line) }`) on stderr that never throws and never emits errors. */
export const stderrLogSink = {
  write(line: string): boolean {
    try {
      writeSync(2, line);
    } catch (err) {
      // A pipe that is full right now (stderr not redirected to agent.log): Node's own stream
      // queues the line. Anything else (a full disk, a closed descriptor) drops it.
      if ((err as NodeJS.ErrnoException).code === 'EAGAIN') process.stderr.write(line);
    }
    return true;
  },
};

/**
 * Makes stray writes to stdout and stderr (Node's own warnings, a dependency's `console.error`) as
 * harmless as the log's: their write errors are dropped instead of ending the process.
 */
export function tolerateStdioErrors(): void {
  for (const stream of [process.stdout, process.stderr]) stream.on('error', () => undefined);
}
