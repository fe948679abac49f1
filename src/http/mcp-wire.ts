/**
 * MCP requests and responses between the edge and the tenant object as plain RPC data. A Request or Response
 * passed over RPC carries its body as a stream, pumped chunk by chunk between the isolates after the call
 * returns; the edge has already read the (capped) request body, and most answers are one JSON document, so both
 * travel inside the RPC message itself. An answer the SDK streams (`text/event-stream`: notifications before the
 * result) stays a stream, so nothing a client could observe changes.
 */
export interface WireRequest {
  readonly url: string;
  readonly method: string;
  readonly headers: string[][];
  readonly body: ArrayBuffer | null;
}

export interface WireResponse {
  readonly status: number;
  readonly headers: string[][];
  readonly body: ArrayBuffer | ReadableStream<Uint8Array> | null;
}

/**
 * `request` (already sanitized by the edge) with the body the edge read. Headers travel as `[name, value]` pairs
 * (RPC typing does not keep tuples; every pair comes from a Headers object).
 */
export function wireRequest(request: Request, body: ArrayBuffer | null): WireRequest {
  const headers: string[][] = [...request.headers];
  return { url: request.url, method: request.method, headers, body };
}

export function requestFromWire(wire: WireRequest): Request {
  return new Request(wire.url, {
    method: wire.method,
    headers: wire.headers as [string, string][],
    body: wire.body !== null && wire.method !== "GET" && wire.method !== "HEAD" ? wire.body : null,
  });
}

/** Buffers the answer unless it is an event stream (which must reach the client as it is produced). */
export async function wireResponse(response: Response): Promise<WireResponse> {
  const headers: string[][] = [...response.headers];
  const streamed = (response.headers.get("content-type") ?? "").toLowerCase().startsWith("text/event-stream");
  const body = response.body === null ? null : streamed ? response.body : await response.arrayBuffer();
  return { status: response.status, headers, body };
}

export function responseFromWire(wire: WireResponse): Response {
  // 204/304 and friends must not carry a body object at all.
  const empty = wire.status === 204 || wire.status === 304 || wire.status < 200;
  return new Response(empty ? null : wire.body, { status: wire.status, headers: wire.headers as [string, string][] });
}
