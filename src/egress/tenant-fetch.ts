import { KbError } from "../errors";
import { isForbiddenHost } from "./address-guard";
import { type DownstreamResource, type EgressPolicy, resourceForUrl } from "./egress-policy";

/**
 * The only way server code makes an outbound HTTP request for a tenant (the egress half of the tenant boundary).
 * It builds each request from scratch: no header of any inbound request exists here, so no Authorization, cookie or
 * client header can be forwarded. Only the tenant's allowed origins are reachable, never a local, private,
 * link-local or metadata address; redirects are followed by hand and re-checked at every hop. When the target is
 * one of the tenant's downstream resources, a freshly exchanged, audience-bound token is attached (never the
 * client's). Responses are capped in size and time.
 */
export interface TenantFetchOptions {
  readonly policy: EgressPolicy;
  /** An exchanged token for a downstream resource (cached by the caller per tenant, audience and scope). */
  readonly tokenFor: (target: DownstreamResource) => Promise<string>;
  readonly fetcher?: typeof fetch;
  readonly maxBytes: number;
  readonly timeoutMs: number;
  readonly accept?: string;
}

export interface FetchedBody {
  readonly url: string;
  readonly status: number;
  readonly contentType: string;
  readonly body: Uint8Array;
}

const MAX_REDIRECTS = 3;

export async function tenantFetch(rawUrl: string, options: TenantFetchOptions): Promise<FetchedBody> {
  const fetcher = options.fetcher ?? fetch;
  const signal = AbortSignal.timeout(options.timeoutMs);
  let url = checkUrl(rawUrl, options.policy);
  for (let hop = 0; ; hop++) {
    const headers = new Headers({ accept: options.accept ?? "*/*", "user-agent": "tenant-mcp-kb/0.1" });
    const target = resourceForUrl(options.policy, url);
    if (target) headers.set("authorization", `Bearer ${await options.tokenFor(target)}`);
    let response: Response;
    try {
      response = await fetcher(url.href, { method: "GET", headers, redirect: "manual", signal });
    } catch {
      throw new KbError(
        signal.aborted ? "ERR_EGRESS_TIMEOUT" : "ERR_EGRESS_FAILED",
        signal.aborted ? "the fetch timed out" : "the fetch failed",
      );
    }
    if (response.status >= 300 && response.status < 400 && response.headers.has("location")) {
      await response.body?.cancel();
      if (hop >= MAX_REDIRECTS) throw new KbError("ERR_EGRESS_DENIED", "too many redirects");
      const location = response.headers.get("location") as string;
      url = checkUrl(new URL(location, url).href, options.policy);
      continue;
    }
    if (!response.ok) {
      await response.body?.cancel();
      throw new KbError("ERR_EGRESS_FAILED", `the server answered HTTP ${response.status}`);
    }
    const body = await readCapped(response, options.maxBytes, signal);
    return { url: url.href, status: response.status, contentType: response.headers.get("content-type") ?? "", body };
  }
}

/** Parses and checks one URL (first request or redirect target) against the guard and the tenant's allow-list. */
export function checkUrl(raw: string, policy: EgressPolicy): URL {
  if (!URL.canParse(raw)) throw new KbError("ERR_EGRESS_DENIED", "not a valid URL");
  const url = new URL(raw);
  if (url.protocol !== "https:") throw new KbError("ERR_EGRESS_DENIED", "only https URLs can be fetched");
  if (url.username || url.password) throw new KbError("ERR_EGRESS_DENIED", "URLs with credentials are refused");
  if (isForbiddenHost(url.hostname)) throw new KbError("ERR_EGRESS_DENIED", "that host is not reachable from here");
  if (!policy.origins.includes(url.origin))
    throw new KbError("ERR_EGRESS_DENIED", "that origin is not on this tenant's allow-list");
  url.hash = "";
  return url;
}

async function readCapped(response: Response, maxBytes: number, signal: AbortSignal): Promise<Uint8Array> {
  const declared = Number(response.headers.get("content-length") ?? "NaN");
  if (Number.isFinite(declared) && declared > maxBytes) {
    await response.body?.cancel();
    throw new KbError("ERR_EGRESS_TOO_LARGE", `the response is larger than ${maxBytes} bytes`);
  }
  if (!response.body) return new Uint8Array(0);
  const reader = response.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      total += value.byteLength;
      if (total > maxBytes) {
        await reader.cancel();
        throw new KbError("ERR_EGRESS_TOO_LARGE", `the response is larger than ${maxBytes} bytes`);
      }
      chunks.push(value);
    }
  } catch (error) {
    if (error instanceof KbError) throw error;
    throw new KbError(
      signal.aborted ? "ERR_EGRESS_TIMEOUT" : "ERR_EGRESS_FAILED",
      signal.aborted ? "the fetch timed out" : "the fetch failed",
    );
  }
  const out = new Uint8Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return out;
}
