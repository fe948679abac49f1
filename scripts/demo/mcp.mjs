// Real MCP clients for one identity (tenant + subject + bearer token): the v2 client pinned to 2026-07-28
// (stateless) and the v1 SDK client on a 2025-11-25 session, plus raw HTTP for what no client would send (foreign
// session ids, tenant hints in headers and paths, forged requestState). Every answer keeps its full text so the
// demo can scan it for another tenant's canaries.
import { Client as ModernClient, StreamableHTTPClientTransport as ModernTransport } from "@modelcontextprotocol/client";
import { Client as LegacyClient } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport as LegacyTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

export const MODERN = "2026-07-28";
export const LEGACY = "2025-11-25";
const TIMEOUT_MS = 30_000;

let nextId = 1;

export class Caller {
  #modern = null;
  #legacy = null;

  /** identity: {tenant, subject, token, label}; url: the MCP endpoint. */
  constructor(url, identity) {
    this.url = url;
    this.tenant = identity.tenant;
    this.subject = identity.subject;
    this.token = identity.token;
    this.label = identity.label;
  }

  async modern() {
    if (!this.#modern) {
      const client = new ModernClient(
        { name: "containment-demo", version: "1.0.0" },
        { versionNegotiation: { mode: { pin: MODERN } } },
      );
      await client.connect(new ModernTransport(new URL(this.url), { requestInit: this.#init() }));
      if (client.getNegotiatedProtocolVersion() !== MODERN) throw new Error("the v2 client did not get 2026-07-28");
      this.#modern = client;
    }
    return this.#modern;
  }

  async legacy() {
    if (!this.#legacy) {
      const client = new LegacyClient({ name: "containment-demo-legacy", version: "1.0.0" });
      const transport = new LegacyTransport(new URL(this.url), { requestInit: this.#init() });
      await client.connect(transport);
      if (transport.protocolVersion !== LEGACY || !transport.sessionId) {
        throw new Error("the v1 client did not get a 2025-11-25 session");
      }
      this.#legacy = { client, transport };
    }
    return this.#legacy;
  }

  #init() {
    return { headers: { authorization: `Bearer ${this.token}` } };
  }

  async sessionId() {
    return (await this.legacy()).transport.sessionId;
  }

  /**
   * tools/call through one era's client. Returns {result, text, refused, code}: `refused` for an isError result or a
   * JSON-RPC error (thrown by the client), `code` the ERR_* code (or "SCHEMA" for input validation, or the JSON-RPC
   * error code). Never throws for a refusal; transport failures do throw.
   */
  async call(era, name, args = {}) {
    const client = era === "legacy" ? (await this.legacy()).client : await this.modern();
    try {
      const result = await client.callTool({ name, arguments: args }, undefined, { timeout: TIMEOUT_MS });
      return describeResult(result);
    } catch (error) {
      const refusal = refusalOf(error);
      if (refusal) return refusal;
      throw error;
    }
  }

  /** A tool call that must succeed; returns structuredContent. */
  async ok(era, name, args = {}) {
    const answer = await this.call(era, name, args);
    if (answer.refused) throw new Error(`${this.label} ${name} refused: ${answer.text.slice(0, 300)}`);
    return answer.result.structuredContent ?? {};
  }

  async readResource(era, uri) {
    const client = era === "legacy" ? (await this.legacy()).client : await this.modern();
    try {
      const result = await client.readResource({ uri }, { timeout: TIMEOUT_MS });
      return { result, text: JSON.stringify(result), refused: false, code: null };
    } catch (error) {
      const refusal = refusalOf(error);
      if (refusal) return refusal;
      throw error;
    }
  }

  /**
   * Raw HTTP. `rpc` is {method, params} sent as a 2026-07-28 request (or as 2025-11-25 with `sessionId`);
   * `headers` are added (and may override), `path` replaces /mcp, `token: null` sends no Authorization header.
   */
  async raw({ rpc, headers = {}, path, method = "POST", sessionId, token = this.token, body }) {
    const target = new URL(this.url);
    if (path !== undefined) {
      const replaced = new URL(path, target.origin);
      target.pathname = replaced.pathname;
      target.search = replaced.search;
    }
    const sent = {
      "content-type": "application/json",
      accept: "application/json, text/event-stream",
      ...(token ? { authorization: `Bearer ${token}` } : {}),
    };
    let payload = body;
    if (rpc) {
      const id = nextId++;
      if (sessionId !== undefined) {
        sent["mcp-protocol-version"] = LEGACY;
        sent["mcp-session-id"] = sessionId;
        payload = JSON.stringify({ jsonrpc: "2.0", id, method: rpc.method, params: rpc.params ?? {} });
      } else {
        sent["mcp-method"] = rpc.method;
        sent["mcp-protocol-version"] = MODERN;
        if (typeof rpc.params?.name === "string") sent["mcp-name"] = rpc.params.name;
        const _meta = {
          "io.modelcontextprotocol/protocolVersion": MODERN,
          "io.modelcontextprotocol/clientInfo": { name: "containment-demo-raw", version: "1" },
          "io.modelcontextprotocol/clientCapabilities": {},
        };
        payload = JSON.stringify({ jsonrpc: "2.0", id, method: rpc.method, params: { ...rpc.params, _meta } });
      }
    }
    const response = await fetch(target, {
      method,
      headers: { ...sent, ...headers },
      body: method === "GET" || method === "HEAD" ? undefined : payload,
      signal: AbortSignal.timeout(TIMEOUT_MS),
    });
    const text = await response.text();
    return { status: response.status, text, json: lastJson(text), headers: response.headers };
  }

  async close() {
    await this.#modern?.close().catch(() => {});
    if (this.#legacy) {
      await this.#legacy.transport.terminateSession().catch(() => {});
      await this.#legacy.client.close().catch(() => {});
    }
    this.#modern = null;
    this.#legacy = null;
  }
}

/**
 * A refusal the client surfaced as an exception: a JSON-RPC error, or an HTTP error whose body is a JSON-RPC error
 * (the SDKs put the body in the message). The stable ERR_* code in `error.data.code` wins. Null for anything else.
 */
function refusalOf(error) {
  const message = String(error?.message ?? "");
  const body = /Error POSTing to endpoint[^:]*: (\{.*\})\s*$/s.exec(message)?.[1];
  if (body) {
    const parsed = lastJson(body);
    const code = parsed?.error?.data?.code ?? (parsed?.error ? `RPC ${parsed.error.code}` : "HTTP error");
    return { result: null, text: message, refused: true, code };
  }
  if (typeof error?.code === "number") return { result: null, text: message, refused: true, code: `RPC ${error.code}` };
  return null;
}

export function describeResult(result) {
  const text = JSON.stringify(result);
  if (!result?.isError) return { result, text, refused: false, code: null };
  const error = result.structuredContent?.error;
  const content = (result.content ?? []).map((part) => part.text ?? "").join("\n");
  const code = typeof error?.code === "string" ? error.code : /^Input validation error/.test(content) ? "SCHEMA" : "?";
  return { result, text, refused: true, code };
}

/** The JSON body, or the last `data:` message of an SSE stream, or null. */
export function lastJson(text) {
  try {
    return JSON.parse(text);
  } catch {
    const data = text
      .split("\n")
      .filter((line) => line.startsWith("data:"))
      .map((line) => line.slice(5).trim());
    for (let i = data.length - 1; i >= 0; i--) {
      try {
        return JSON.parse(data[i]);
      } catch {
        // not JSON; try the previous message
      }
    }
    return null;
  }
}
