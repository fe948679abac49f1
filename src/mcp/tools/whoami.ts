import { z } from "zod";
import { defineTool } from "./tool-declaration";

const whoamiOutput = z.object({
  tenant: z.string(),
  subject: z.string(),
  scopes: z.array(z.string()),
  protocolVersion: z.string(),
  era: z.enum(["legacy", "modern"]),
  tokenExpiresAt: z.string(),
});

/** `whoami`: the verified identity as the server sees it. Never the token. Needs only the endpoint scope. */
const whoami = defineTool({
  name: "whoami",
  scope: null,
  title: "Who am I",
  description: "Returns the tenant, subject and scopes of the verified caller, and the MCP protocol revision in use.",
  input: z.object({}).strict(),
  output: whoamiOutput,
  annotations: { readOnlyHint: true, idempotentHint: true, openWorldHint: false },
  run: async (_args, { scope }) => {
    const info: z.infer<typeof whoamiOutput> = {
      tenant: scope.identity.tenant,
      subject: scope.identity.subject,
      scopes: [...scope.identity.scopes],
      protocolVersion: scope.protocolVersion,
      era: scope.era,
      tokenExpiresAt: new Date(scope.identity.expiresAt * 1000).toISOString(),
    };
    return info;
  },
});

export const WHOAMI_TOOLS = [whoami] as const;
