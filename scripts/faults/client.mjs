// Plain HTTP against the server under test: stateless 2026-07-28 JSON-RPC tool calls, the streaming document
// route and the admin API. Every request has a time limit; a request cut by a kill rejects (the caller decides
// whether that write counts as acknowledged: only a complete, successful answer does).
export const MODERN = "2026-07-28";
const REQUEST_TIMEOUT_MS = 60_000;
let nextId = 1;

/** Reads a JSON-RPC answer from a JSON or SSE body; all messages of an SSE stream are returned too. */
export function parseRpc(text, contentType) {
  if ((contentType ?? "").includes("text/event-stream")) {
    const messages = text
      .split("\n")
      .filter((line) => line.startsWith("data:"))
      .map((line) => line.slice(5).trim())
      .filter(Boolean)
      .map((line) => JSON.parse(line));
    return { last: messages.at(-1) ?? null, messages };
  }
  const last = JSON.parse(text);
  return { last, messages: [last] };
}

export class ToolError extends Error {
  constructor(message, code) {
    super(message);
    this.code = code;
  }
}

function rpcBody(method, params, meta = {}) {
  const _meta = {
    "io.modelcontextprotocol/protocolVersion": MODERN,
    "io.modelcontextprotocol/clientInfo": { name: "faults", version: "1" },
    "io.modelcontextprotocol/clientCapabilities": {},
    ...meta,
  };
  return JSON.stringify({ jsonrpc: "2.0", id: nextId++, method, params: { ...params, _meta } });
}

/** A tool caller for one tenant token. `call` resolves with structuredContent or throws (ToolError carries the code). */
export function toolClient(base, token) {
  const headersFor = (name) => ({
    authorization: `Bearer ${token}`,
    "content-type": "application/json",
    accept: "application/json, text/event-stream",
    "mcp-protocol-version": MODERN,
    "mcp-method": "tools/call",
    "mcp-name": name,
  });
  /**
   * `onMessage` sees every SSE message as it arrives (progress notifications carry a run handle once issue 9 is
   * fixed), so a client cut off by a kill still keeps whatever it was told before the kill.
   */
  const call = async (name, args, { timeoutMs = REQUEST_TIMEOUT_MS, progressToken, onMessage } = {}) => {
    const meta = progressToken ? { progressToken } : {};
    const response = await fetch(`${base}/mcp`, {
      method: "POST",
      headers: headersFor(name),
      body: rpcBody("tools/call", { name, arguments: args }, meta),
      signal: AbortSignal.timeout(timeoutMs),
    });
    const contentType = response.headers.get("content-type") ?? "";
    const text = onMessage ? await readStreaming(response, onMessage) : await response.text();
    if (response.status !== 200) throw new ToolError(`${name}: HTTP ${response.status} ${text.slice(0, 200)}`, null);
    const { last } = parseRpc(text, contentType);
    if (last?.error) throw new ToolError(`${name}: JSON-RPC ${JSON.stringify(last.error).slice(0, 200)}`, null);
    const result = last?.result;
    if (!result) throw new ToolError(`${name}: no result in ${text.slice(0, 200)}`, null);
    if (result.isError) {
      const code = result.structuredContent?.error?.code ?? null;
      throw new ToolError(`${name}: ${code ?? "tool error"} ${result.content?.[0]?.text?.slice(0, 200) ?? ""}`, code);
    }
    return result.structuredContent ?? {};
  };
  return { call, token };
}

/** Reads a response body chunk by chunk, handing each complete SSE `data:` message to `onMessage`. */
async function readStreaming(response, onMessage) {
  const decoder = new TextDecoder();
  let text = "";
  let pending = "";
  for await (const chunk of response.body) {
    const piece = decoder.decode(chunk, { stream: true });
    text += piece;
    pending += piece;
    let newline = pending.indexOf("\n");
    while (newline >= 0) {
      const line = pending.slice(0, newline).trim();
      pending = pending.slice(newline + 1);
      if (line.startsWith("data:")) {
        try {
          onMessage(JSON.parse(line.slice(5).trim()));
        } catch {
          // a partial or non-JSON line: the final parse reports it
        }
      }
      newline = pending.indexOf("\n");
    }
  }
  return text;
}

/** PUT /v1/documents/:id with an explicit Content-Length (the route requires it). */
export async function putDocument(base, token, id, bytes, contentType = "text/plain; charset=utf-8") {
  const response = await fetch(`${base}/v1/documents/${encodeURIComponent(id)}`, {
    method: "PUT",
    headers: {
      authorization: `Bearer ${token}`,
      "content-type": contentType,
      "content-length": String(bytes.byteLength),
    },
    body: bytes,
    duplex: "half",
    signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
  });
  const text = await response.text();
  if (response.status !== 201) throw new Error(`PUT document ${id}: HTTP ${response.status} ${text.slice(0, 200)}`);
  return JSON.parse(text).document;
}

/** GET /v1/documents/:id: {status, bytes, text} (bytes null unless 200). */
export async function getDocument(base, token, id) {
  const response = await fetch(`${base}/v1/documents/${encodeURIComponent(id)}`, {
    headers: { authorization: `Bearer ${token}` },
    signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
  });
  const buffer = Buffer.from(await response.arrayBuffer());
  return { status: response.status, bytes: response.status === 200 ? buffer : null, text: buffer.toString("utf8") };
}

/** Admin API: `admin(method, path, body)` resolves with {status, body}. */
export function adminClient(base, token) {
  return async (method, path, body) => {
    const response = await fetch(`${base}/admin${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    });
    const text = await response.text();
    let parsed = null;
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = { raw: text.slice(0, 300) };
    }
    return { status: response.status, body: parsed };
  };
}
