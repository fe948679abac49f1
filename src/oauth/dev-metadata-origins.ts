/**
 * Dev-only allowance for Client ID Metadata Documents served on loopback (docs/auth.md). The library fetches a
 * client's document with the global fetch, from its https client ID URL; in production global_fetch_strictly_public
 * refuses private and loopback destinations, and that stays so: OAUTH_DEV_METADATA_ORIGINS is refused in production
 * by configuration, and without it nothing is installed. Outside production a fetch of a mapped https origin goes
 * to its loopback origin instead, same path and query.
 *
 * Module state, tenant-neutral: the mapping comes from server configuration only (never from a request or a
 * tenant), and the wrapper is installed once, the first time a configuration with a mapping is seen.
 */
let mapping: ReadonlyMap<string, string> = new Map();
let installed = false;

export function installDevMetadataOrigins(map: ReadonlyMap<string, string>): void {
  if (map.size === 0) return;
  mapping = map;
  if (installed) return;
  const original = globalThis.fetch;
  globalThis.fetch = (input: RequestInfo | URL, init?: RequestInit) => {
    const url = new URL(input instanceof Request ? input.url : String(input));
    const target = mapping.get(url.origin);
    if (!target) return original(input, init);
    const rewritten = `${target}${url.pathname}${url.search}`;
    return original(input instanceof Request ? new Request(rewritten, input) : rewritten, init);
  };
  installed = true;
}
