// proxy-from-env ships no type declarations; this is the one function used (the one axios uses).
declare module 'proxy-from-env' {
  /** The proxy URL the environment names for requests to `url`, or '' when none applies (NO_PROXY). */
  export function getProxyForUrl(url: string | URL): string;
}
