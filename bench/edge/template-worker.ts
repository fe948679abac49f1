// The comparison target of `npm run bench -- --suite=edge` (scripts/bench-edge.mjs): the shape of Cloudflare's
// remote-MCP template. A stateless `createMcpHandler` whose factory builds an McpServer on every request, no auth:
// `whoami`, and `search` over a fixed in-memory set of 1,000 atoms (bench/edge/atoms.mjs). With MODE = "do" the
// same handler runs behind a bare Durable Object hop (one object, by name), which isolates the cost of the hop. Not part of the deployed server (its own wrangler config).
import { DurableObject } from "cloudflare:workers";
import { createMcpHandler, McpServer } from "@modelcontextprotocol/server";
import { z } from "zod";
import { hashEmbed, LOCAL_DIMENSIONS } from "../../src/kb/embedder";
import { SEARCH_ATOMS, searchAtom } from "./atoms.mjs";

interface BenchEnv {
  readonly MODE?: string;
  readonly BARE: DurableObjectNamespace<BareObject>;
}

const whoamiOutput = z.object({ tenant: z.string(), subject: z.string(), scopes: z.array(z.string()) });

interface TemplateAtom {
  readonly id: string;
  readonly text: string;
  readonly tags: string[];
  readonly source: string;
  readonly vector: Float32Array;
}

/**
 * The template's data for `search`: the bench's 1,000 atoms, embedded once per isolate with the public local hash
 * (bench data, no tenant: a stateless template has nowhere else to keep an index), then a brute-force scan.
 */
let atoms: TemplateAtom[] | null = null;
function searchAtoms(): TemplateAtom[] {
  atoms ??= Array.from({ length: SEARCH_ATOMS }, (_, i) => {
    const atom = searchAtom(i) as Omit<TemplateAtom, "vector">;
    return { ...atom, vector: hashEmbed(atom.text, LOCAL_DIMENSIONS) };
  });
  return atoms;
}

function search(query: string, topK: number) {
  const q = hashEmbed(query, LOCAL_DIMENSIONS);
  return searchAtoms()
    .map((atom) => {
      let score = 0;
      for (let d = 0; d < LOCAL_DIMENSIONS; d++) score += (atom.vector[d] as number) * (q[d] as number);
      return { atom, score };
    })
    .sort((a, b) => b.score - a.score)
    .slice(0, topK)
    .map(({ atom, score }) => ({ id: atom.id, score, text: atom.text, tags: atom.tags, source: atom.source }));
}

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
  server.registerTool(
    "search",
    {
      title: "Search atoms",
      description: "Nearest atoms to a query (the bench's fixed 1,000 atoms).",
      inputSchema: z.object({ query: z.string(), top_k: z.number().int().min(1).max(50).optional() }).strict(),
      annotations: { readOnlyHint: true },
    },
    async ({ query, top_k }) => {
      const results = search(query, top_k ?? 10);
      return { content: [{ type: "text", text: JSON.stringify({ results }) }], structuredContent: { results } };
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
