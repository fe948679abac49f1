import { describe, expect, it } from "vitest";
import type { Identity } from "../../src/auth/identity";
import { HandleCodec } from "../../src/mcp/handles";
import type { RequestScope } from "../../src/mcp/request-scope";
import { type PreparedMcpServer, prepareTenantMcpServer, serverShape } from "../../src/mcp/server-factory";
import { ServerPool } from "../../src/mcp/server-pool";
import { MODERN_VERSION } from "../helpers/clients";
import { inTenantObject, serveRpc } from "../helpers/in-object";

/** Prepared servers are reused across requests of one caller shape, each request served with its own identity. */
describe("prepared MCP servers (server-pool.ts)", () => {
  const tenant = "pool-tenant";

  async function scopeFor(
    context: {
      keyring: { current(): Promise<{ version: number }>; subkey(v: number, p: "handles"): Promise<Uint8Array> };
    },
    identity: Identity,
    requestId: string,
  ): Promise<RequestScope> {
    const version = (await context.keyring.current()).version;
    const handles = await HandleCodec.create([await context.keyring.subkey(version, "handles")], identity);
    return { identity, era: "modern", protocolVersion: MODERN_VERSION, requestId, handles };
  }

  const identityOf = (subject: string, expiresAt: number, scopes = ["mcp", "kb.read"]): Identity => ({
    tenant,
    subject,
    scopes,
    tokenId: null,
    expiresAt,
    issuedAt: expiresAt - 600,
  });

  async function whoami(prepared: PreparedMcpServer): Promise<Record<string, unknown>> {
    const { message } = await serveRpc(prepared.server, "tools/call", { name: "whoami", arguments: {} });
    // The SDK closes the exchange's transport in a microtask after the response: let it run.
    await new Promise((resolve) => setTimeout(resolve, 0));
    return (message.result as { structuredContent: Record<string, unknown> }).structuredContent;
  }

  it("reuses a closed server for the same shape, bound to the new request's identity", async () => {
    await inTenantObject(tenant, async ({ context, config, state }) => {
      const pool = new ServerPool();
      let prepared = 0;
      const now = Math.floor(Date.now() / 1000);
      const keys = [await context.keyring.subkey((await context.keyring.current()).version, "request-state")];
      const take = (scope: RequestScope, generation = "1") => {
        const server = pool.take(serverShape(scope), generation, () => {
          prepared++;
          return prepareTenantMcpServer(scope, keys, context, config, () => state.storage.setAlarm(Date.now()));
        });
        server.bind(scope);
        return server;
      };

      const first = take(await scopeFor(context, identityOf("alice", now + 600), "r1"));
      expect((await whoami(first)).tokenExpiresAt).toBe(new Date((now + 600) * 1000).toISOString());
      const second = take(await scopeFor(context, identityOf("alice", now + 900), "r2"));
      expect(second).toBe(first);
      expect(prepared).toBe(1);
      // Served with the second request's identity, not the one the server was prepared with.
      expect((await whoami(second)).tokenExpiresAt).toBe(new Date((now + 900) * 1000).toISOString());

      // Another subject, or another scope set, is another shape: never the same instance.
      const bob = take(await scopeFor(context, identityOf("bob", now + 600), "r3"));
      expect(bob).not.toBe(first);
      expect((await whoami(bob)).subject).toBe("bob");
      const narrower = take(await scopeFor(context, identityOf("alice", now + 600, ["mcp"]), "r4"));
      expect(narrower).not.toBe(first);
      expect(prepared).toBe(3);

      // A server still serving (not closed) is not handed out twice.
      const busy = take(await scopeFor(context, identityOf("alice", now + 600), "r5"));
      const other = take(await scopeFor(context, identityOf("alice", now + 600), "r6"));
      expect(other).not.toBe(busy);
      expect(prepared).toBe(4);
    });
  });

  it("drops idle servers when the key generation changes or the pool is cleared", async () => {
    await inTenantObject(tenant, async ({ context, config, state }) => {
      const pool = new ServerPool();
      let prepared = 0;
      const now = Math.floor(Date.now() / 1000);
      const keys = [await context.keyring.subkey((await context.keyring.current()).version, "request-state")];
      const scope = await scopeFor(context, identityOf("alice", now + 600), "g");
      const take = (generation: string) => {
        const server = pool.take(serverShape(scope), generation, () => {
          prepared++;
          return prepareTenantMcpServer(scope, keys, context, config, () => state.storage.setAlarm(Date.now()));
        });
        server.bind(scope);
        return server;
      };
      const a = take("1");
      await whoami(a);
      const b = take("1,2");
      expect(b).not.toBe(a);
      await whoami(b);
      pool.clear();
      const c = take("1,2");
      expect(c).not.toBe(b);
      expect(prepared).toBe(3);
    });
  });

  it("refuses to bind a request of another shape, and an unbound server acts for no one", async () => {
    await inTenantObject(tenant, async ({ context, config, state }) => {
      const now = Math.floor(Date.now() / 1000);
      const keys = [await context.keyring.subkey((await context.keyring.current()).version, "request-state")];
      const alice = await scopeFor(context, identityOf("alice", now + 600), "s1");
      const prepared = prepareTenantMcpServer(alice, keys, context, config, () => state.storage.setAlarm(Date.now()));
      expect(() => prepared.bind({ ...alice, identity: identityOf("bob", now + 600) })).toThrow(
        expect.objectContaining({ code: "ERR_INTERNAL" }),
      );
      // Never bound: the call fails instead of acting for the caller the server was prepared with.
      const { text } = await serveRpc(prepared.server, "tools/call", { name: "whoami", arguments: {} });
      expect(text).toMatch(/"isError":true|"error"/);
      expect(text).not.toContain("alice");
    });
  });
});
