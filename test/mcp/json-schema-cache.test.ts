import { describe, expect, it } from "vitest";
import { z } from "zod";
import { withCachedJsonSchema } from "../../src/mcp/tools/json-schema-cache";

describe("cached JSON Schemas of tool declarations (json-schema-cache.ts)", () => {
  const declared = z.object({ query: z.string().max(8), top_k: z.number().int().min(1).max(50).optional() }).strict();
  const convert = (schema: z.ZodType, io: "input" | "output") =>
    (schema["~standard"] as unknown as { jsonSchema: Record<string, (o: object) => unknown> }).jsonSchema[io]?.({
      target: "draft-2020-12",
    });

  it("validates exactly like the declaration", () => {
    const view = withCachedJsonSchema(declared);
    for (const input of [{ query: "a" }, { query: "a", top_k: 3 }, { query: "toolongquery" }, { query: "a", x: 1 }]) {
      expect(view.safeParse(input).success).toBe(declared.safeParse(input).success);
      expect(view["~standard"].validate(input)).toEqual(declared["~standard"].validate(input));
    }
    expect(view.safeParse({ query: "a", extra: true }).success).toBe(false);
  });

  it("converts once per direction and hands out the same frozen schema", () => {
    const view = withCachedJsonSchema(declared);
    expect(withCachedJsonSchema(declared)).toBe(view);
    const first = convert(view, "input") as Record<string, unknown>;
    expect(convert(view, "input")).toBe(first);
    expect(first).toEqual(convert(declared, "input"));
    expect(first.additionalProperties).toBe(false);
    expect(Object.isFrozen(first)).toBe(true);
    expect(Object.isFrozen(first.properties)).toBe(true);
    expect(convert(view, "output")).not.toBe(first);
  });
});
