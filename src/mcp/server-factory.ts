import { createRequestStateCodec, McpServer, type ServerContext } from "@modelcontextprotocol/server";
import type { Config } from "../config";
import type { TenantContext } from "../tenant/tenant-context";
import type { RequestScope } from "./request-scope";
import { registerTools, TOOLS } from "./tools/catalog";
import { registerAtomListing, registerAtomResource } from "./tools/kb-tools";
import type { ToolDeclaration } from "./tools/tool-declaration";

export const SERVER_INFO = { name: "tenant-mcp-kb", version: "0.1.0" } as const;

/** Results that carry tenant data must never be stored by a shared cache (2026-07-28 `cacheScope`). */
const PRIVATE = { ttlMs: 0, cacheScope: "private" } as const;

/**
 * Builds a fresh MCP server for one request of one verified caller. Nothing is shared between instances: the
 * factory runs per request, inside the caller's tenant object. `tools` is every declared tool but in tests.
 */
export function createTenantMcpServer(
  scope: RequestScope,
  requestStateKeys: readonly Uint8Array[],
  tenant: TenantContext,
  config: Config,
  schedule: () => Promise<void>,
  tools: readonly ToolDeclaration[] = TOOLS,
): McpServer {
  // requestState round-trips through the client: it is MAC'd under the tenant's key and bound to tenant, subject
  // and method, so state minted for one caller is refused for any other. One codec per live key version (current
  // first): state minted before a key rotation still verifies until its version is destroyed.
  const codecs = requestStateKeys.map((key) =>
    createRequestStateCodec({
      key,
      ttlSeconds: 600,
      bind: (ctx: ServerContext) => `${scope.identity.tenant}\0${scope.identity.subject}\0${ctx.mcpReq.method}`,
    }),
  );
  const requestState = {
    verify: async (state: string, ctx: ServerContext): Promise<unknown> => {
      let failure: unknown = new Error("mac");
      for (const codec of codecs) {
        try {
          return await codec.verify(state, ctx);
        } catch (error) {
          failure = error;
        }
      }
      throw failure;
    },
  };
  const server = new McpServer(SERVER_INFO, {
    capabilities: { tools: {}, resources: {} },
    instructions: "Tenant-scoped knowledge server. Every call is confined to the tenant named in your access token.",
    cacheHints: {
      "tools/list": PRIVATE,
      "resources/list": PRIVATE,
      "resources/templates/list": PRIVATE,
      "resources/read": PRIVATE,
      "prompts/list": PRIVATE,
      "server/discover": PRIVATE,
    },
    requestState: { verify: requestState.verify },
  });
  const deps = { scope, tenant, config, schedule };
  registerTools(server, deps, tools);
  // The atom template is offered, like the tools, only to a caller who may read it.
  if (scope.identity.scopes.includes("kb.read")) {
    registerAtomResource(server, deps);
    registerAtomListing(server, deps);
  }
  return server;
}
