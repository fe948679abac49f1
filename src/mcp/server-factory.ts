import { createRequestStateCodec, McpServer, type ServerContext } from "@modelcontextprotocol/server";
import type { Config } from "../config";
import { KbError } from "../errors";
import type { TenantContext } from "../tenant/tenant-context";
import type { RequestScope } from "./request-scope";
import { registerTools, TOOLS } from "./tools/catalog";
import { registerAtomListing, registerAtomResource } from "./tools/kb-tools";
import type { ToolDeclaration, ToolDeps } from "./tools/tool-declaration";

export const SERVER_INFO = { name: "tenant-mcp-kb", version: "0.1.0" } as const;

/** Results that carry tenant data must never be stored by a shared cache (2026-07-28 `cacheScope`). */
const PRIVATE = { ttlMs: 0, cacheScope: "private" } as const;

/**
 * An MCP server prepared for one caller shape of one tenant object: the caller's tenant, subject and scope set,
 * one protocol era and revision, and the tenant's live request-state keys. The SDK serves one request per
 * instance at a time (it refuses an instance that is still serving), so the instance can be bound to the next
 * request's scope and reused after the previous exchange closed (src/mcp/server-pool.ts): the 13 tool
 * registrations, their JSON Schemas and the request-state codecs are then built once instead of per request.
 */
export interface PreparedMcpServer {
  readonly server: McpServer;
  /** The shape this instance was prepared for (tenant, subject, scopes, era, revision): bind refuses others. */
  readonly shape: string;
  /** Binds the request this instance serves next (its identity, request id and handle codec). */
  bind(scope: RequestScope): void;
  /** Forgets the bound request (the exchange is over): an idle instance holds no request's identity. */
  unbind(): void;
}

/** The shape key of a request scope: what a prepared server's registrations and codecs depend on. */
export function serverShape(scope: RequestScope): string {
  const { identity } = scope;
  return [identity.tenant, identity.subject, [...identity.scopes].sort().join(" "), scope.era, scope.protocolVersion]
    .map((part) => encodeURIComponent(part))
    .join("|");
}

/**
 * Builds a fresh MCP server for one request of one verified caller. Runs inside the caller's tenant object.
 * `tools` is every declared tool but in tests.
 */
export function createTenantMcpServer(
  scope: RequestScope,
  requestStateKeys: readonly Uint8Array[],
  tenant: TenantContext,
  config: Config,
  schedule: () => Promise<void>,
  tools: readonly ToolDeclaration[] = TOOLS,
): McpServer {
  const prepared = prepareTenantMcpServer(scope, requestStateKeys, tenant, config, schedule, tools);
  prepared.bind(scope);
  return prepared.server;
}

/**
 * Builds a server for `first`'s shape (registering only the tools its scopes allow). Every handler reads the
 * bound request's scope when it runs, never one captured at registration; with no request bound, a handler fails
 * (500) instead of acting for anyone.
 */
export function prepareTenantMcpServer(
  first: RequestScope,
  requestStateKeys: readonly Uint8Array[],
  tenant: TenantContext,
  config: Config,
  schedule: () => Promise<void>,
  tools: readonly ToolDeclaration[] = TOOLS,
): PreparedMcpServer {
  const shape = serverShape(first);
  let bound: RequestScope | null = null;
  const current = (): RequestScope => {
    if (!bound) throw new KbError("ERR_INTERNAL", "no request bound to this server");
    return bound;
  };
  // requestState round-trips through the client: it is MAC'd under the tenant's key and bound to tenant, subject
  // and method, so state minted for one caller is refused for any other. One codec per live key version (current
  // first): state minted before a key rotation still verifies until its version is destroyed.
  const codecs = requestStateKeys.map((key) =>
    createRequestStateCodec({
      key,
      ttlSeconds: 600,
      bind: (ctx: ServerContext) => `${current().identity.tenant}\0${current().identity.subject}\0${ctx.mcpReq.method}`,
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
  const deps: ToolDeps = {
    get scope() {
      return current();
    },
    tenant,
    config,
    schedule,
  };
  registerTools(server, deps, tools, first.identity.scopes);
  // The atom template is offered, like the tools, only to a caller who may read it.
  if (first.identity.scopes.includes("kb.read")) {
    registerAtomResource(server, deps);
    registerAtomListing(server, deps);
  }
  return {
    server,
    shape,
    bind(scope) {
      if (serverShape(scope) !== shape) throw new KbError("ERR_INTERNAL", "server prepared for another caller");
      bound = scope;
    },
    unbind() {
      bound = null;
    },
  };
}
