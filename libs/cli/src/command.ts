/** What a subcommand gets: its arguments and the process streams, injected so tests can drive it. */
export interface CommandIo {
  stdin: NodeJS.ReadableStream;
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
  env: NodeJS.ProcessEnv;
}

/** A subcommand resolves to the process exit code. */
export type Command = (args: string[], io: CommandIo) => Promise<number>;
