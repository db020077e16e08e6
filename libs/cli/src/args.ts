import { parseArgs } from 'node:util';

type Options = NonNullable<Parameters<typeof parseArgs>[0]>['options'];

/**
 * What was wrong with a command's arguments, from parseArgs' `error`, never quoting an argument: parseArgs names an
 * unknown option (`Unknown option '--S3cr3t'`) or a stray argument in full, and a secret pasted in the wrong place
 * would land on stderr (and in logs). The argument is named by its position among the command's arguments instead,
 * `first` being the position of `args[0]`. parseArgs' other errors name only an option of `options`, as declared.
 */
export function argumentsError(error: unknown, args: string[], options: Options, first: number): string {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  if (code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE') return (error as Error).message;
  // Read again without refusing anything, for the position of the first argument refused.
  const { tokens } = parseArgs({ args, options, strict: false, allowPositionals: true, tokens: true });
  const at = (index: number | undefined): string =>
    index === undefined ? 'not shown' : `argument ${index + first}, not shown`;
  if (code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') {
    const unknown = tokens.find(
      (token) => token.kind === 'option' && !Object.hasOwn(options ?? {}, token.name),
    );
    return `unknown option (${at(unknown?.index)})`;
  }
  if (code === 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL') {
    const stray = tokens.find((token) => token.kind === 'positional');
    return `unexpected argument (${at(stray?.index)}): this command takes options only`;
  }
  return 'the arguments could not be read (not shown)';
}
