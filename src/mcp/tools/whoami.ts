import type { McpServer } from "@modelcontextprotocol/server";
import { z } from "zod";
import type { RequestScope } from "../request-scope";

const whoamiOutput = z.object({
  tenant: z.string(),
  subject: z.string(),
  scopes: z.array(z.string()),
  protocolVersion: z.string(),
  era: z.enum(["legacy", "modern"]),
  tokenExpiresAt: z.string(),
});

/** `whoami`: the verified identity as the server sees it. Never the token. */
export function registerWhoami(server: McpServer, scope: RequestScope): void {
  server.registerTool(
    "whoami",
    {
      title: "Who am I",
      description:
        "Returns the tenant, subject and scopes of the verified caller, and the MCP protocol revision in use.",
      inputSchema: z.object({}).strict(),
      outputSchema: whoamiOutput,
      annotations: { readOnlyHint: true, idempotentHint: true, openWorldHint: false },
    },
    async () => {
      const info: z.infer<typeof whoamiOutput> = {
        tenant: scope.identity.tenant,
        subject: scope.identity.subject,
        scopes: [...scope.identity.scopes],
        protocolVersion: scope.protocolVersion,
        era: scope.era,
        tokenExpiresAt: new Date(scope.identity.expiresAt * 1000).toISOString(),
      };
      return { content: [{ type: "text", text: JSON.stringify(info) }], structuredContent: info };
    },
  );
}
