import { join } from 'node:path';

/**
 * Runs a TypeScript file in a child process as jest runs tests (swc, `@urs/<lib>` from the sources):
 * `spawn(process.execPath, [RUN_TS, file, ...args])`.
 */
export const RUN_TS = join(__dirname, 'run-ts.js');
