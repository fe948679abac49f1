// The comparison target of `npm run bench -- --suite=edge` (scripts/bench-edge.mjs): the shape of Cloudflare's
// remote-MCP template. A stateless `createMcpHandler` whose factory builds an McpServer with one tool on every
// request, no auth. With MODE = "do" the same handler runs behind a bare Durable Object hop (one object, by name),
// which isolates the cost of the hop itself. Not part of the deployed server (its own wrangler config).
import { DurableObject } from "cloudflare:workers";
import { createMcpHandler, McpServer } from "@modelcontextprotocol/server";
import { z } from "zod";

interface BenchEnv {
  readonly MODE?: string;
  readonly BARE: DurableObjectNamespace<BareObject>;
}

const whoamiOutput = z.object({ tenant: z.string(), subject: z.string(), scopes: z.array(z.string()) });

function buildServer(): McpServer {
  const server = new McpServer({ name: "template", version: "0.0.0" }, { capabilities: { tools: {} } });
  server.registerTool(
    "whoami",
    {
      title: "Who am I",
      description: "Returns a fixed identity (the template has no auth).",
      inputSchema: z.object({}).strict(),
      outputSchema: whoamiOutput,
      annotations: { readOnlyHint: true },
    },
    async () => {
      const info = { tenant: "bench", subject: "anonymous", scopes: ["mcp"] };
      return { content: [{ type: "text", text: JSON.stringify(info) }], structuredContent: info };
    },
  );
  return server;
}

const handler = createMcpHandler(buildServer);

export class BareObject extends DurableObject<BenchEnv> {
  override async fetch(request: Request): Promise<Response> {
    return handler.fetch(request);
  }
}

export default {
  async fetch(request: Request, env: BenchEnv): Promise<Response> {
    const url = new URL(request.url);
    if (url.pathname === "/healthz") return Response.json({ ok: true });
    if (url.pathname !== "/mcp") return new Response("not found", { status: 404 });
    if (env.MODE === "do") return env.BARE.get(env.BARE.idFromName("bench")).fetch(request);
    return handler.fetch(request);
  },
} satisfies ExportedHandler<BenchEnv>;
