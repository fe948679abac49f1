import { env } from "cloudflare:workers";
import type { ServerContext } from "@modelcontextprotocol/server";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import architecture from "../../docs/architecture.md?raw";
import readme from "../../README.md?raw";
import type { Identity } from "../../src/auth/identity";
import { loadConfig } from "../../src/config";
import { requiredScopes } from "../../src/mcp/tool-scopes";
import { TOOL_SCOPE_META_KEY, TOOL_SCOPES, TOOLS } from "../../src/mcp/tools/catalog";
import { defineTool, type ToolDeclaration, type ToolDeps } from "../../src/mcp/tools/tool-declaration";
import { runTool } from "../../src/mcp/tools/tool-result";
import { connectModernClient, connectV1Client } from "../helpers/clients";
import { kbCaller } from "../helpers/kb-client";
import { initializeBody, LEGACY_VERSION, mcpFetch } from "../helpers/mcp-http";
import { mintToken } from "../helpers/tokens";

/**
 * Each tool is declared once (src/mcp/tools/catalog.ts); what clients see, what the tenant object checks before
 * dispatch, and what the docs list are derived from those declarations and must equal them.
 */

const FULL = "mcp kb.read kb.write";
const declared = TOOLS.map((tool) => ({ name: tool.name, scope: tool.scope }));

interface ListedTool {
  readonly name: string;
  readonly _meta?: Record<string, unknown>;
}

const listedScopes = (tools: readonly ListedTool[]) =>
  tools.map((tool) => ({ name: tool.name, scope: (tool._meta?.[TOOL_SCOPE_META_KEY] as string | undefined) ?? null }));

describe("tools/list matches the declarations", () => {
  it("2026-07-28 (v2 client): names, order and each tool's scope", async () => {
    const { client, close } = await connectModernClient(await mintToken({ tenant: "catalog-modern", scope: FULL }));
    try {
      expect(listedScopes((await client.listTools()).tools)).toEqual(declared);
    } finally {
      await close();
    }
  });

  it("2025-11-25 (v1 client, session): names, order and each tool's scope", async () => {
    const { client, close } = await connectV1Client(await mintToken({ tenant: "catalog-legacy", scope: FULL }));
    try {
      expect(listedScopes((await client.listTools()).tools)).toEqual(declared);
    } finally {
      await close();
    }
  });

  it("every declaration has a unique name and a known scope, and the scope table is derived from them", () => {
    expect(new Set(TOOLS.map((tool) => tool.name)).size).toBe(TOOLS.length);
    for (const tool of TOOLS) expect([null, "kb.read", "kb.write"]).toContain(tool.scope);
    expect([...TOOL_SCOPES]).toEqual(TOOLS.map((tool) => [tool.name, tool.scope]));
    for (const tool of TOOLS) {
      const body = { jsonrpc: "2.0", id: 1, method: "tools/call", params: { name: tool.name, arguments: {} } };
      expect(requiredScopes(body)).toEqual(tool.scope === null ? [] : [tool.scope]);
    }
  });
});

describe("tools/list offers only the tools the token's scopes allow", () => {
  const allowed = (granted: readonly string[]) =>
    declared.filter((tool) => tool.scope === null || granted.includes(tool.scope));

  it("kb.read only, 2026-07-28: no write tool is listed", async () => {
    const { client, close } = await connectModernClient(
      await mintToken({ tenant: "catalog-ro-modern", scope: "mcp kb.read" }),
    );
    try {
      const listed = listedScopes((await client.listTools()).tools);
      expect(listed).toEqual(allowed(["kb.read"]));
      expect(listed.some((tool) => tool.scope === "kb.write")).toBe(false);
      expect(listed.map((tool) => tool.name)).toContain("search");
    } finally {
      await close();
    }
  });

  it("kb.read only, 2025-11-25 with a session: no write tool is listed", async () => {
    const { client, close } = await connectV1Client(
      await mintToken({ tenant: "catalog-ro-legacy", scope: "mcp kb.read" }),
    );
    try {
      expect(listedScopes((await client.listTools()).tools)).toEqual(allowed(["kb.read"]));
    } finally {
      await close();
    }
  });

  it("mcp only lists whoami; kb.write only lists whoami and the write tools", async () => {
    for (const scope of ["mcp", "mcp kb.write"]) {
      const caller = await kbCaller("catalog-narrow", { scope });
      const answer = await caller.rpc("tools/list", {});
      expect(answer.status, answer.text).toBe(200);
      const tools = (answer.body.result as { tools: ListedTool[] }).tools;
      expect(listedScopes(tools)).toEqual(allowed(scope.split(" ")));
    }
  });

  it("a hidden tool called anyway is refused as before: 403 insufficient_scope naming the scope, in both eras", async () => {
    const token = await mintToken({ tenant: "catalog-hidden", scope: "mcp kb.read" });
    const call = JSON.stringify({
      jsonrpc: "2.0",
      id: 2,
      method: "tools/call",
      params: { name: "add_atoms", arguments: { atoms: [{ text: "hidden, but called" }] } },
    });
    const expectStepUp = async (response: Response) => {
      expect(response.status).toBe(403);
      const challenge = response.headers.get("www-authenticate") ?? "";
      expect(challenge).toContain('error="insufficient_scope"');
      // The challenge names the token's scopes plus the missing one (step-up keeps what the client holds).
      expect(challengeScopes(challenge)).toContain("kb.write");
      expect(await response.json()).toMatchObject({ error: "insufficient_scope", scope: "kb.write" });
    };
    const modern = await kbCaller("catalog-hidden", { token });
    const refused = await modern.rpc("tools/call", { name: "add_atoms", arguments: { atoms: [{ text: "x" }] } });
    expect(refused.status, refused.text).toBe(403);
    expect(challengeScopes(refused.headers.get("www-authenticate") ?? "")).toContain("kb.write");
    expect(refused.body).toMatchObject({ error: "insufficient_scope", scope: "kb.write" });

    const init = await mcpFetch({ method: "POST", token, body: initializeBody(1) });
    expect(init.status).toBe(200);
    const session = init.headers.get("mcp-session-id");
    expect(session).toBeTruthy();
    await init.text();
    await expectStepUp(
      await mcpFetch({
        method: "POST",
        token,
        headers: { "mcp-session-id": session ?? "", "mcp-protocol-version": LEGACY_VERSION },
        body: call,
      }),
    );
    // Nothing was written by either refused call.
    expect((await modern.ok<{ atoms: number }>("kb_stats", {})).atoms).toBe(0);
  });
});

describe("published input schemas are as tight as the checks", () => {
  interface Schema {
    readonly type?: string;
    readonly properties?: Record<string, Schema>;
    readonly additionalProperties?: unknown;
    readonly items?: Schema;
    readonly anyOf?: Schema[];
    readonly minimum?: number;
    readonly maximum?: number;
  }
  let schemas: Map<string, Schema>;

  const listSchemas = async (): Promise<Map<string, Schema>> => {
    const caller = await kbCaller("catalog-schemas", { scope: FULL });
    const answer = await caller.rpc("tools/list", {});
    expect(answer.status, answer.text).toBe(200);
    const tools = (answer.body.result as { tools: { name: string; inputSchema: Schema }[] }).tools;
    return new Map(tools.map((tool) => [tool.name, tool.inputSchema]));
  };

  /** Every object schema below `schema`, with its path (bounded by the schema's own finite depth). */
  const objects = (schema: Schema, path: string, out: [string, Schema][] = []): [string, Schema][] => {
    if (schema.type === "object" || schema.properties) out.push([path, schema]);
    for (const [key, child] of Object.entries(schema.properties ?? {})) objects(child, `${path}.${key}`, out);
    if (schema.items) objects(schema.items, `${path}[]`, out);
    for (const [i, child] of (schema.anyOf ?? []).entries()) objects(child, `${path}|${i}`, out);
    return out;
  };

  it("search.top_k is 1..50 (not the safe-integer range)", async () => {
    schemas = await listSchemas();
    const topK = schemas.get("search")?.properties?.top_k;
    expect(topK).toMatchObject({ type: "integer", minimum: 1, maximum: 50 });
  });

  it("search.filter and every clause in it refuse extra keys", async () => {
    schemas ??= await listSchemas();
    const filter = schemas.get("search")?.properties?.filter as Schema;
    expect(filter).toMatchObject({ type: "object", additionalProperties: false });
    expect(Object.keys(filter.properties ?? {}).sort()).toEqual(["source", "tags"]);
    const clauses = objects(filter, "filter");
    // filter itself, tags {any, all} and source {in}.
    expect(clauses.map(([path]) => path)).toEqual(["filter", "filter.tags|1", "filter.source|1"]);
    for (const [path, clause] of clauses) expect(clause.additionalProperties, path).toBe(false);
  });

  it("every object in every tool's input schema has additionalProperties: false", async () => {
    schemas ??= await listSchemas();
    expect([...schemas.keys()]).toEqual(TOOLS.map((tool) => tool.name));
    let checked = 0;
    for (const [name, schema] of schemas) {
      for (const [path, object] of objects(schema, name)) {
        expect(object.additionalProperties, path).toBe(false);
        checked++;
      }
    }
    // Each tool's root, add_atoms' atoms[] items, and the three filter objects.
    expect(checked).toBe(TOOLS.length + 4);
  });
});

describe("the documented tool lists are the declared tools", () => {
  const names = (text: string) => [...text.matchAll(/`([a-z_]+)`/g)].map((match) => match[1] as string);
  const declaredNames = TOOLS.map((tool) => tool.name).sort();

  it("README.md, the Tools paragraph", () => {
    const paragraph = readme.slice(readme.indexOf("\nTools: "), readme.indexOf("Scopes: `mcp`"));
    expect(paragraph.length).toBeGreaterThan(0);
    expect([...new Set(names(paragraph))].sort()).toEqual(declaredNames);
  });

  it("docs/architecture.md, the tool table", () => {
    const start = architecture.indexOf("<!-- tools:begin -->");
    const end = architecture.indexOf("<!-- tools:end -->");
    expect(start).toBeGreaterThan(0);
    expect(end).toBeGreaterThan(start);
    const rows = architecture
      .slice(start, end)
      .split("\n")
      .filter((line) => line.startsWith("| `"))
      .map((line) => line.split("|").map((cell) => cell.trim()));
    // | `name` | scope | ... : the scope column says `kb.read`, `kb.write` or "endpoint only".
    const table = rows.map((cells) => ({
      name: (cells[1] ?? "").replaceAll("`", ""),
      scope: (cells[2] ?? "") === "endpoint only" ? null : (cells[2] ?? "").replaceAll("`", ""),
    }));
    expect(table).toEqual(declared);
  });
});

describe("the scope check inside a tool fails closed", () => {
  const identity = (scopes: readonly string[]): Identity => ({
    tenant: "catalog-inside",
    subject: "alice",
    scopes,
    tokenId: null,
    expiresAt: Math.floor(Date.now() / 1000) + 600,
    issuedAt: Math.floor(Date.now() / 1000),
  });
  let ran = 0;
  const probe = (scope: unknown): ToolDeclaration =>
    ({
      name: "probe",
      scope,
      title: "Probe",
      description: "test only",
      input: z.object({}).strict(),
      annotations: {},
      run: async () => {
        ran++;
        return { ran: true };
      },
    }) as ToolDeclaration;
  const deps = (scopes: readonly string[]): ToolDeps =>
    ({
      scope: { identity: identity(scopes), era: "modern", protocolVersion: "2026-07-28", requestId: "r" },
      config: loadConfig(env),
    }) as unknown as ToolDeps;
  const ctx = {} as ServerContext;

  it("refuses a tool whose scope the caller lacks, and one whose scope is missing or malformed", async () => {
    const cases: [unknown, readonly string[]][] = [
      ["kb.write", ["mcp", "kb.read"]],
      [undefined, ["mcp", "kb.read", "kb.write"]],
      ["", ["mcp", "kb.read", "kb.write", ""]],
      [["kb.read"], ["mcp", "kb.read"]],
    ];
    for (const [scope, granted] of cases) {
      const result = await runTool(probe(scope), {}, deps(granted), ctx);
      expect(result.isError, JSON.stringify(scope)).toBe(true);
      expect(result.structuredContent?.error).toMatchObject({ code: "ERR_INSUFFICIENT_SCOPE" });
    }
    expect(ran).toBe(0);
  });

  it("runs a tool whose scope the caller holds, and an endpoint-only tool", async () => {
    expect((await runTool(probe("kb.read"), {}, deps(["mcp", "kb.read"]), ctx)).structuredContent).toEqual({
      ran: true,
    });
    expect((await runTool(probe(null), {}, deps(["mcp"]), ctx)).structuredContent).toEqual({ ran: true });
    expect(ran).toBe(2);
  });

  it("a declaration without a scope does not compile", () => {
    const tool = defineTool(
      // @ts-expect-error scope is required (null says "the endpoint scope only")
      {
        name: "unscoped",
        title: "Unscoped",
        description: "test only",
        input: z.object({}).strict(),
        annotations: {},
        run: async () => ({}),
      },
    );
    expect(tool.name).toBe("unscoped");
  });
});

/** The scopes a step-up challenge names (it lists the token's own scopes plus the missing ones). */
function challengeScopes(challenge: string): string[] {
  return (/scope="([^"]*)"/.exec(challenge)?.[1] ?? "").split(" ").filter(Boolean);
}
