/** SimulatorOptions.publicUrl, checked to be `https://host[:port]` and nothing more. */
export function checkedPublicUrl(text: string): URL {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new Error(`publicUrl must be an https URL, got '${text}'`);
  }
  if (
    url.protocol !== 'https:' ||
    url.username ||
    url.password ||
    url.search ||
    url.hash ||
    url.pathname !== '/'
  )
    throw new Error(`publicUrl must be https://<host>[:<port>] and nothing more, got '${text}'`);
  return url;
}
