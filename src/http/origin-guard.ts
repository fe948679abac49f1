import type { Config } from "../config";
import { KbError } from "../errors";

/**
 * DNS-rebinding protection (MCP transport security): a request whose Host is not one of ours, or that carries an
 * Origin that is not allowed, is refused before anything else happens. A missing Origin is fine (non-browser
 * clients); `Origin: null` is not.
 */
export function checkOriginAndHost(request: Request, config: Config): void {
  const host = hostnameOf(request.headers.get("host") ?? new URL(request.url).host);
  if (host === null || !config.allowedHosts.includes(host)) {
    throw new KbError("ERR_HOST_FORBIDDEN", "Forbidden: host not allowed");
  }
  const origin = request.headers.get("origin");
  if (origin !== null && !config.allowedOrigins.includes(origin.trim().toLowerCase())) {
    throw new KbError("ERR_ORIGIN_FORBIDDEN", "Forbidden: origin not allowed");
  }
}

function hostnameOf(hostHeader: string): string | null {
  try {
    return new URL(`http://${hostHeader}`).hostname.toLowerCase();
  } catch {
    return null;
  }
}
