// Step 3: B and A's second subject present A's session id, A's list cursor, A's run handle and a requestState
// bound to A; tenant hints in headers, arguments and paths. Each is refused the way docs/architecture.md says
// (another tenant's or subject's resource is 404 / not found), and the owner's own use works (the control).
import { createRequestStateCodec } from "@modelcontextprotocol/server";
import { ERAS, noteOf } from "../context.mjs";

const SCHEMA = "SCHEMA";

export async function mcpServer(ctx) {
  const { story, tenants } = ctx;
  const A = tenants.a;
  const channel = "MCP server";
  const whoamiRpc = { method: "tools/call", params: { name: "whoami", arguments: {} } };

  const sessionOfA = await ctx.a.sessionId();
  const postSession = (who, label, expected) => async () => {
    const answer = await who.raw({ rpc: { method: "tools/list" }, sessionId: sessionOfA });
    return {
      text: answer.text,
      ok: answer.status === expected,
      note: `${label} with A's Mcp-Session-Id: HTTP ${answer.status} (expected ${expected})`,
    };
  };
  await ctx.attacks(channel, "B presents A's session id", "404", [
    postSession(ctx.b, "B", 404),
    postSession(ctx.a, "A (control)", 200),
  ]);
  await ctx.attacks(channel, "A's second subject presents A's session id", "404", [postSession(ctx.a2, "A2", 404)]);

  const page = await ctx.a.ok("modern", "list_atoms", { limit: 1 });
  const cursor = page.next_cursor;
  const useCursor = (who, label, era, expectOk) => async () => {
    const answer = await who.call(era, "list_atoms", { cursor, limit: 10 });
    const ok = expectOk ? !answer.refused : answer.refused && answer.code === "ERR_INVALID_PARAMS";
    return { text: expectOk ? "" : answer.text, ok, note: noteOf(label, era, "list_atoms with A's cursor", answer) };
  };
  await ctx.attacks(channel, "A's list cursor", "refused (invalid cursor)", [
    ...ERAS.map((era) => useCursor(ctx.b, "B", era, false)),
    ...ERAS.map((era) => useCursor(ctx.a2, "A2", era, false)),
    useCursor(ctx.a, "A (control)", "modern", true),
  ]);

  await ctx.a.ok("modern", "put_document", story.handleDocument);
  const ingest = await ctx.a.ok("modern", "ingest_document", { document_id: story.handleDocument.id });
  await ctx.rebaseline();
  const handle = ingest.run;
  const useHandle = (who, label, era, expectOk) => async () => {
    const answer = await who.call(era, "ingest_status", { run: handle });
    const ok = expectOk
      ? !answer.refused && answer.result.structuredContent?.status === "done"
      : answer.refused && answer.code === "ERR_NOT_FOUND";
    return {
      text: expectOk ? "" : answer.text,
      ok,
      note: noteOf(label, era, "ingest_status with A's run handle", answer),
    };
  };
  await ctx.attacks(channel, "A's run handle", "not found", [
    ...ERAS.map((era) => useHandle(ctx.b, "B", era, false)),
    ...ERAS.map((era) => useHandle(ctx.a2, "A2", era, false)),
    useHandle(ctx.a, "A (control)", "legacy", true),
  ]);

  // No tool of this server mints requestState, so no genuine state of A exists to steal: the attack is a state
  // bound to A (tenant, subject, method) under a key the attacker chose, as a stolen-and-replayed or forged one.
  const forged = await createRequestStateCodec({
    key: crypto.getRandomValues(new Uint8Array(32)),
    ttlSeconds: 600,
    bind: () => `${A}\0${ctx.a.subject}\0tools/call`,
  }).mint({ step: 1 }, { mcpReq: { method: "tools/call" } });
  const withState = (who, label) => async () => {
    const answer = await who.raw({
      rpc: { method: "tools/call", params: { name: "whoami", arguments: {}, requestState: forged } },
    });
    const code = answer.json?.error?.code;
    return {
      text: answer.text,
      ok: answer.status === 200 && code === -32602,
      note: `${label} with a requestState bound to A: HTTP ${answer.status}, JSON-RPC error ${code}`,
    };
  };
  await ctx.attacks(channel, "requestState bound to A", "refused (-32602 invalid requestState)", [
    withState(ctx.b, "B"),
    withState(ctx.a2, "A2"),
    withState(ctx.a, "A"),
  ]);

  const hints = {
    "x-tenant-id": A,
    "x-tenant": A,
    tenant: A,
    "mcp-tenant": A,
    "x-org-id": A,
    "x-forwarded-tenant": A,
    forwarded: `for=${A}`,
    "cf-access-authenticated-user-email": `alice@${A}.example`,
  };
  await ctx.attacks(channel, "tenant hints in headers", "ignored: served as B", [
    ...Object.entries(hints).map(([name, value]) => async () => {
      const answer = await ctx.b.raw({ rpc: whoamiRpc, headers: { [name]: value } });
      const tenant = answer.json?.result?.structuredContent?.tenant;
      return {
        text: answer.text,
        ok: answer.status === 200 && tenant === tenants.b,
        note: `B whoami with ${name}: HTTP ${answer.status}, tenant ${tenant}`,
      };
    }),
    async () => {
      const answer = await ctx.b.raw({
        rpc: { method: "tools/call", params: { name: "search", arguments: { query: story.canary } } },
        headers: hints,
      });
      const hits = answer.json?.result?.structuredContent?.results ?? [];
      return {
        text: answer.text,
        ok: answer.status === 200 && Array.isArray(hits),
        note: `B search for A's canary with all hints: HTTP ${answer.status}, ${hits.length} hit(s)`,
      };
    },
  ]);

  const argument = (tool, args, label) =>
    ERAS.map((era) => async () => {
      const answer = await ctx.b.call(era, tool, args);
      return { text: answer.text, ok: answer.refused && answer.code === SCHEMA, note: noteOf("B", era, label, answer) };
    });
  await ctx.attacks(channel, "tenant hints in arguments", "refused (input validation)", [
    ...argument("whoami", { tenant: A }, "whoami {tenant: A}"),
    ...argument("list_atoms", { tenant_id: A }, "list_atoms {tenant_id: A}"),
    ...argument("get_atom", { id: "a-secret", namespace: A }, "get_atom {id, namespace: A}"),
    ...argument(
      "add_atoms",
      { atoms: [{ id: "x", text: "planted", tenant: A }] },
      "add_atoms with a tenant in the atom",
    ),
  ]);

  const paths = [
    `/mcp/${A}`,
    `/${A}/mcp`,
    `/t/${A}/mcp`,
    `/tenants/${A}/mcp`,
    `/mcp?tenant=${A}`,
    `/mcp?tenant_id=${A}`,
    `/mcp/../${A}/mcp`,
  ];
  await ctx.attacks(channel, "tenant hints in paths", "404, or served as B", [
    ...paths.map((path) => async () => {
      const answer = await ctx.b.raw({ rpc: whoamiRpc, path });
      const tenant = answer.json?.result?.structuredContent?.tenant;
      const ok = answer.status === 404 || (answer.status === 200 && tenant === tenants.b);
      return {
        text: answer.text,
        ok,
        note: `B POST ${path}: HTTP ${answer.status}${tenant ? `, tenant ${tenant}` : ""}`,
      };
    }),
    async () => {
      const answer = await ctx.b.raw({ path: `/v1/documents/${story.injectedDocument.id}`, method: "GET" });
      return {
        text: answer.text,
        ok: answer.status === 404,
        note: `B GET A's document /v1/documents/${story.injectedDocument.id}: HTTP ${answer.status}`,
      };
    },
    async () => {
      const answer = await ctx.b.raw({ path: `/admin/tenants/${A}`, method: "GET" });
      return {
        text: answer.text,
        ok: answer.status === 401 || answer.status === 403,
        note: `B's tenant token on GET /admin/tenants/A: HTTP ${answer.status}`,
      };
    },
  ]);

  await ctx.attacks(channel, "no token, or a token in the query string", "401", [
    async () => {
      const answer = await ctx.b.raw({ rpc: whoamiRpc, token: null });
      return {
        text: answer.text,
        ok: answer.status === 401,
        note: `no token: HTTP ${answer.status}, ${answer.headers.get("www-authenticate")}`,
      };
    },
    async () => {
      const answer = await ctx.b.raw({ rpc: whoamiRpc, token: null, path: `/mcp?access_token=${ctx.a.token}` });
      return {
        text: answer.text,
        ok: answer.status === 401 || answer.status === 400,
        note: `A's token in the query string: HTTP ${answer.status}`,
      };
    },
  ]);
}
