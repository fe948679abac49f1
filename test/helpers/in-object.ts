import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { createMcpHandler, type McpServer } from "@modelcontextprotocol/server";
import { expect } from "vitest";
import type { Identity } from "../../src/auth/identity";
import { type Config, loadConfig } from "../../src/config";
import type { Env } from "../../src/env";
import { HandleCodec } from "../../src/mcp/handles";
import { createTenantMcpServer } from "../../src/mcp/server-factory";
import type { ToolDeclaration } from "../../src/mcp/tools/tool-declaration";
import { TenantContext } from "../../src/tenant/tenant-context";
import { MODERN_VERSION, modernRequest } from "./clients";
import { rpcResult } from "./mcp-http";

/**
 * The one in-object test harness: code run inside a tenant's Durable Object with that tenant's context, built from
 * the test env plus per-call overrides (`env`), and MCP requests served there by the real server factory
 * (createTenantMcpServer) for an identity with any scopes and any set of declared tools. It skips the edge (token,
 * body cap, scope check before dispatch): use it for what the edge would hide, such as a tool's own byte limit
 * above the test configuration's 64 KiB body cap, or a setting only one test changes.
 */

export const tenantStub = (tenant: string) => env.TENANT_SERVER.get(env.TENANT_SERVER.idFromName(tenant));

export interface InObjectOptions {
  /** Scopes of the caller (default `mcp kb.read kb.write`). */
  readonly scopes?: readonly string[];
  readonly subject?: string;
  /** Variables to override for this call only (the tenant context and the configuration see them). */
  readonly env?: Partial<Record<keyof Env, string>>;
  /** Tools the server registers (default: every declared tool). */
  readonly tools?: readonly ToolDeclaration[];
}

export interface InObject {
  readonly context: TenantContext;
  readonly config: Config;
  readonly env: Env;
  readonly state: DurableObjectState;
}

/** Runs `fn` inside `tenant`'s object, with a tenant context and configuration built from the overridden env. */
export async function inTenantObject<T>(
  tenant: string,
  fn: (scope: InObject) => Promise<T> | T,
  options: Pick<InObjectOptions, "env"> = {},
): Promise<T> {
  return runInDurableObject(tenantStub(tenant), async (_instance, state) => {
    const testEnv = { ...env, ...options.env } as Env;
    return fn({ context: new TenantContext(state, testEnv, tenant), config: loadConfig(testEnv), env: testEnv, state });
  });
}

/** One 2026-07-28 JSON-RPC request, served inside the tenant's object. Returns the JSON-RPC message and raw text. */
export async function rpcInObject(
  tenant: string,
  method: string,
  params: Record<string, unknown>,
  options: InObjectOptions = {},
): Promise<{ message: Record<string, unknown>; text: string }> {
  return inTenantObject(
    tenant,
    async ({ context, config, state }) => {
      const now = Math.floor(Date.now() / 1000);
      const identity: Identity = {
        tenant,
        subject: options.subject ?? "alice",
        scopes: options.scopes ?? ["mcp", "kb.read", "kb.write"],
        tokenId: null,
        expiresAt: now + 600,
        issuedAt: now,
      };
      const version = (await context.keyring.current()).version;
      const handles = await HandleCodec.create([await context.keyring.subkey(version, "handles")], identity);
      const server = createTenantMcpServer(
        { identity, era: "modern", protocolVersion: MODERN_VERSION, requestId: "in-object-test", handles },
        [await context.keyring.subkey(version, "request-state")],
        context,
        config,
        () => state.storage.setAlarm(Date.now()),
        options.tools,
      );
      return serveRpc(server, method, params);
    },
    options,
  );
}

/** tools/call inside the tenant's object; fails the test unless the answer is a JSON-RPC result. */
export async function callToolInObject(
  tenant: string,
  name: string,
  args: Record<string, unknown>,
  options: InObjectOptions = {},
): Promise<{ result: Record<string, unknown>; text: string }> {
  const { message, text } = await rpcInObject(tenant, "tools/call", { name, arguments: args }, options);
  expect(message.error, text).toBeUndefined();
  return { result: message.result as Record<string, unknown>, text };
}

/** One 2026-07-28 JSON-RPC request served by `server` through the SDK's handler, as the tenant object serves it. */
export async function serveRpc(
  server: McpServer,
  method: string,
  params: Record<string, unknown>,
): Promise<{ message: Record<string, unknown>; text: string }> {
  const handler = createMcpHandler(() => server, { legacy: "reject", maxRequestBodySize: 8 * 1024 * 1024 });
  const raw = modernRequest(1, method, params);
  const response = await handler.fetch(
    new Request("https://kb.test/mcp", {
      method: "POST",
      headers: { ...raw.headers, "content-type": "application/json", accept: "application/json, text/event-stream" },
      body: raw.body,
    }),
  );
  const text = await response.text();
  return { message: await rpcResult(new Response(text, { headers: response.headers })), text };
}
