import { describe, expect, it } from "vitest";
import { DOCUMENT_TOOLS } from "../../src/mcp/tools/document-tools";
import { callToolInObject, inTenantObject, rpcInObject } from "../helpers/in-object";
import { uniqueTenant } from "../helpers/kb-client";

/** The in-object harness (test/helpers/in-object.ts): env overrides, scopes and tool groups each take effect. */

const toolNames = (message: Record<string, unknown>) =>
  ((message.result as { tools?: { name: string; description?: string }[] }).tools ?? []).map((tool) => tool.name);

describe("in-object harness", () => {
  it("an env override reaches the tools (QUOTA_DOCUMENTS=1: the second document is refused with ERR_QUOTA)", async () => {
    const tenant = uniqueTenant("harness-env");
    const options = { env: { QUOTA_DOCUMENTS: "1" } };
    const first = await callToolInObject(tenant, "put_document", { id: "one", text: "first" }, options);
    expect(first.result.isError, first.text).not.toBe(true);
    const second = await callToolInObject(tenant, "put_document", { id: "two", text: "second" }, options);
    expect((second.result.structuredContent as { error: { code: string } }).error.code).toBe("ERR_QUOTA");
    // Without the override the deployment's quota applies, and the same write succeeds.
    const third = await callToolInObject(tenant, "put_document", { id: "two", text: "second" });
    expect(third.result.isError, third.text).not.toBe(true);
    expect(await inTenantObject(tenant, ({ context, config }) => context.usage(config).documents)).toMatchObject({
      used: 2,
    });
  });

  it("an env override reaches the configuration the descriptions are built from", async () => {
    const tenant = uniqueTenant("harness-config");
    const { message } = await rpcInObject(tenant, "tools/list", {}, { env: { EGRESS_MAX_BYTES: "4096" } });
    const tools = (message.result as { tools: { name: string; description: string }[] }).tools;
    expect(tools.find((tool) => tool.name === "import_url")?.description).toContain("at most 4096 bytes");
  });

  it("serves one tool group only, and only what the scopes allow", async () => {
    const tenant = uniqueTenant("harness-tools");
    const { message } = await rpcInObject(tenant, "tools/list", {}, { tools: DOCUMENT_TOOLS });
    expect(toolNames(message)).toEqual(["put_document", "get_document"]);
    const readOnly = await rpcInObject(tenant, "tools/list", {}, { tools: DOCUMENT_TOOLS, scopes: ["mcp", "kb.read"] });
    expect(toolNames(readOnly.message)).toEqual(["get_document"]);
  });
});
