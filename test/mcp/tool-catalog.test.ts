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
