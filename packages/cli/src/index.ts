/** Programmatic entry points of the `cascache` CLI package. */
export { createProgram, run, type Io } from './program';
export { ExitCodes, describeError } from './exit-codes';
export { parseAge, parseSize } from './sizes';
