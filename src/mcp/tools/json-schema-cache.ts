import type { z } from "zod";

type JsonSchemaOptions = { readonly target?: string };
type Converter = (options?: JsonSchemaOptions) => Record<string, unknown>;

/**
 * Tenant-neutral cache: the JSON Schemas of the tool declarations' zod schemas (module constants, identical for
 * every tenant and request). The SDK converts every registered schema again on every tools/list; the schema it is
 * given here is the declaration's own (same validation: a view of the zod schema through its prototype), whose
 * Standard JSON Schema conversion is done once per isolate, per direction and target. Converted schemas are
 * deep-frozen, so nothing can alter what the next caller is shown.
 */
const views = new WeakMap<z.ZodType, z.ZodType>();

export function withCachedJsonSchema<T extends z.ZodType>(schema: T): T {
  const known = views.get(schema);
  if (known) return known as T;
  const standard = schema["~standard"] as T["~standard"] & {
    jsonSchema?: { input: Converter; output: Converter };
  };
  const convert = standard.jsonSchema;
  if (!convert) return schema;
  const memo = new Map<string, Record<string, unknown>>();
  const cached =
    (io: "input" | "output"): Converter =>
    (options) => {
      const key = `${io}:${options?.target ?? ""}`;
      let json = memo.get(key);
      if (!json) {
        json = deepFreeze(convert[io](options));
        memo.set(key, json);
      }
      return json;
    };
  const view = Object.create(schema) as T;
  Object.defineProperty(view, "~standard", {
    value: { ...standard, jsonSchema: { input: cached("input"), output: cached("output") } },
    enumerable: false,
  });
  views.set(schema, view);
  return view;
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === "object" && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value)) deepFreeze(child);
  }
  return value;
}
