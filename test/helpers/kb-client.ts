import { expect } from "vitest";
import { modernRequest } from "./clients";
import { mcpFetch, rpcResult } from "./mcp-http";
import { mintToken } from "./tokens";

/**
 * A small MCP caller for the knowledge-base tools: raw, stateless 2026-07-28 requests (no session) sent to the
 * Worker in-process through `exports.default.fetch`, with a token minted for one tenant and subject.
 */
export interface ToolResult {
  readonly content?: { type: string; text?: string }[];
  readonly structuredContent?: Record<string, unknown>;
  readonly isError?: boolean;
}

export interface RpcAnswer {
  /** HTTP status of the exchange. */
  readonly status: number;
  readonly headers: Headers;
  /** The whole response body as received (for "never contains" assertions). */
  readonly text: string;
  /** The JSON-RPC message (the last one of an SSE stream), or the JSON error body of a refused request. */
  readonly body: Record<string, unknown>;
}

export interface KbCaller {
  readonly tenant: string;
  readonly sub: string;
  readonly token: string;
  /** Any JSON-RPC method, raw. */
  rpc(method: string, params?: Record<string, unknown>): Promise<RpcAnswer>;
  /** tools/call; fails the test unless the exchange is an HTTP 200 with a JSON-RPC result. */
  call(name: string, args: Record<string, unknown>): Promise<ToolResult & { raw: string }>;
  /** tools/call that must succeed; returns structuredContent. */
  ok<T = Record<string, unknown>>(name: string, args: Record<string, unknown>): Promise<T>;
}

let nextId = 1;

export async function kbCaller(
  tenant: string,
  options: { sub?: string; scope?: string; token?: string } = {},
): Promise<KbCaller> {
  const sub = options.sub ?? "alice";
  const token = options.token ?? (await mintToken({ tenant, sub, scope: options.scope ?? "mcp kb.read kb.write" }));
  const rpc = async (method: string, params: Record<string, unknown> = {}): Promise<RpcAnswer> => {
    const raw = modernRequest(nextId++, method, params);
    // resources/read names its URI in Mcp-Name, as tools/call names the tool.
    if (typeof params.uri === "string") raw.headers["mcp-name"] = params.uri;
    const response = await mcpFetch({ method: "POST", token, headers: raw.headers, body: raw.body });
    const status = response.status;
    const headers = response.headers;
    const contentType = headers.get("content-type") ?? "";
    const text = await response.text();
    const body = await rpcResult(new Response(text, { headers: { "content-type": contentType } }));
    return { status, headers, text, body };
  };
  const call = async (name: string, args: Record<string, unknown>) => {
    const answer = await rpc("tools/call", { name, arguments: args });
    expect(answer.status, answer.text).toBe(200);
    expect(answer.body.error, answer.text).toBeUndefined();
    const result = answer.body.result as ToolResult | undefined;
    expect(result, answer.text).toBeDefined();
    return { ...(result as ToolResult), raw: answer.text };
  };
  const ok = async <T = Record<string, unknown>>(name: string, args: Record<string, unknown>): Promise<T> => {
    const result = await call(name, args);
    expect(result.isError, result.raw).not.toBe(true);
    return result.structuredContent as T;
  };
  return { tenant, sub, token, rpc, call, ok };
}

/** Tenant names are per test: storage is shared by all tests of one file. */
export function uniqueTenant(prefix: string): string {
  return `${prefix}-${crypto.randomUUID().slice(0, 8)}`;
}

/**
 * How a tool call was refused. `code` is the tool's stable error code (structuredContent.error.code) when the
 * knowledge base refused it, or "SCHEMA" when the SDK's input-schema validation refused it before the tool ran
 * (those results carry only a text message, "Input validation error: ...").
 */
export interface Refusal {
  readonly code: string;
  readonly message: string;
}

export function refusal(result: ToolResult & { raw?: string }): Refusal {
  expect(result.isError, result.raw).toBe(true);
  const error = result.structuredContent?.error as { code?: unknown; message?: unknown } | undefined;
  const text = result.content?.map((part) => part.text ?? "").join("\n") ?? "";
  if (error && typeof error.code === "string") {
    expect(typeof error.message).toBe("string");
    return { code: error.code, message: String(error.message) };
  }
  expect(text).toMatch(/^Input validation error: /);
  return { code: "SCHEMA", message: text };
}

/** Types of the tool results used by the tests. */
export interface SearchHitOut {
  readonly id: string;
  readonly score: number;
  readonly text: string;
  readonly tags: string[];
  readonly source: string | null;
}

export interface StatsOut {
  readonly atoms: number;
  readonly cachedEmbeddings: number;
  readonly index: { vectors: number | null };
}

export async function searchIds(caller: KbCaller, query: string, topK = 10): Promise<SearchHitOut[]> {
  const { results } = await caller.ok<{ results: SearchHitOut[] }>("search", { query, top_k: topK });
  return results;
}
