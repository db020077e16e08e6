import { readFileSync } from 'node:fs';
import { ConfigError, readOptionalString, type Env } from './env';

/** The line each certificate of a PEM file begins with (RFC 7468). */
const PEM_CERTIFICATE = '-----BEGIN CERTIFICATE-----';

/**
 * The text of the PEM certificate file variable `name` names, or undefined when it is unset. Read with the
 * settings, before anything connects: a file that is missing, cannot be read or holds no certificate fails
 * the start at once with a ConfigError naming the variable and what is wrong, rather than inside a service's
 * setup after Kafka and Redis answered, with a bare ENOENT.
 */
export function readPemFile(env: Env, name: string): string | undefined {
  const file = readOptionalString(env, name);
  if (file === undefined) return undefined;
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    throw new ConfigError(name, `names ${file}, which ${unreadable(error as NodeJS.ErrnoException)}`);
  }
  if (!text.includes(PEM_CERTIFICATE)) {
    throw new ConfigError(
      name,
      `names ${file}, which is not a PEM certificate file (it has no "${PEM_CERTIFICATE}" line)`,
    );
  }
  return text;
}

/** Why a file could not be read, in words. */
function unreadable(error: NodeJS.ErrnoException): string {
  switch (error.code) {
    case 'ENOENT':
      return 'does not exist';
    case 'EACCES':
    case 'EPERM':
      return `this process may not read (${error.code})`;
    case 'EISDIR':
      return 'is a directory, not a file';
    default:
      return `cannot be read (${error.code ?? error.message})`;
  }
}
