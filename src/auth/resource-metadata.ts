import type { Config } from "../config";

/** RFC 9728 Protected Resource Metadata for the MCP endpoint. Public, tenant-neutral, derived from config only. */
export function protectedResourceMetadata(config: Config): Record<string, unknown> {
  return {
    resource: config.resource,
    authorization_servers: config.authorizationServers,
    scopes_supported: config.scopesSupported,
    bearer_methods_supported: ["header"],
    resource_signing_alg_values_supported: config.algorithms,
    resource_name: "Tenant MCP knowledge server",
  };
}
