import { beforeAll, describe, expect, it } from "vitest";
import { LIMITS } from "../../src/kb/limits";
import { type KbCaller, kbCaller, uniqueTenant } from "../helpers/kb-client";

interface ListedResource {
  readonly uri: string;
  readonly name: string;
  readonly title?: string;
  readonly mimeType?: string;
}
interface ListPage {
  readonly resources: ListedResource[];
  readonly nextCursor?: string;
}

const ATOMS = LIMITS.listPageDefault + 7; // two pages

async function listAll(caller: KbCaller): Promise<{ uris: string[]; pages: number }> {
  const uris: string[] = [];
  let cursor: string | undefined;
  for (let pages = 1; pages <= 10; pages++) {
    const answer = await caller.rpc("resources/list", cursor ? { cursor } : {});
    expect(answer.status, answer.text).toBe(200);
    const page = answer.body.result as ListPage;
    uris.push(...page.resources.map((r) => r.uri));
    if (!page.nextCursor) return { uris, pages };
    cursor = page.nextCursor;
  }
  throw new Error("resources/list did not end within 10 pages");
}

describe("resources/list pages through the tenant's atoms", () => {
  let alice: KbCaller;
  let bob: KbCaller;
  let mallory: KbCaller;

  beforeAll(async () => {
    const tenant = uniqueTenant("res-list");
    alice = await kbCaller(tenant, { sub: "alice" });
    bob = await kbCaller(tenant, { sub: "bob" });
    mallory = await kbCaller(uniqueTenant("res-other"));
    const atoms = Array.from({ length: ATOMS }, (_, i) => ({
      id: `r-${String(i).padStart(3, "0")}`,
      text: `resource atom ${i}`,
      ...(i === 0 ? { title: "The first" } : {}),
    }));
    for (let i = 0; i < atoms.length; i += LIMITS.batchSize) {
      await alice.ok("add_atoms", { atoms: atoms.slice(i, i + LIMITS.batchSize) });
    }
    await mallory.ok("add_atoms", { atoms: [{ id: "m-1", text: "mallory's own atom" }] });
  });

  it("every atom once, in insertion order, as atom://{id} resources, in pages of the default size", async () => {
    const first = (await alice.rpc("resources/list")).body.result as ListPage;
    expect(first.resources).toHaveLength(LIMITS.listPageDefault);
    expect(first.resources[0]).toEqual({
      uri: "atom://r-000",
      name: "r-000",
      title: "The first",
      mimeType: "text/plain",
    });
    expect(first.nextCursor).toEqual(expect.any(String));
    const { uris, pages } = await listAll(alice);
    expect(pages).toBe(2);
    expect(uris).toEqual(Array.from({ length: ATOMS }, (_, i) => `atom://r-${String(i).padStart(3, "0")}`));
    // A listed URI reads back.
    const read = await alice.rpc("resources/read", { uri: uris[ATOMS - 1] });
    expect(read.body).toMatchObject({ result: { contents: [{ text: `resource atom ${ATOMS - 1}` }] } });
  });

  it("another tenant lists only its own atoms, and nothing of theirs is in the answer", async () => {
    const { uris } = await listAll(mallory);
    expect(uris).toEqual(["atom://m-1"]);
    const answer = await mallory.rpc("resources/list");
    expect(answer.text).not.toContain("r-000");
  });

  it("a cursor is bound to tenant and subject: another subject or tenant presenting it gets -32602", async () => {
    const cursor = ((await alice.rpc("resources/list")).body.result as ListPage).nextCursor;
    for (const other of [bob, mallory]) {
      const answer = await other.rpc("resources/list", { cursor });
      expect(answer.status).toBe(200);
      expect(answer.body.error).toMatchObject({ code: -32602 });
      expect(answer.text).not.toContain("r-05");
    }
    // A list_atoms cursor is another purpose: refused here too.
    const listCursor = (await alice.ok<{ next_cursor: string }>("list_atoms", { limit: 1 })).next_cursor;
    expect((await alice.rpc("resources/list", { cursor: listCursor })).body.error).toMatchObject({ code: -32602 });
    // Control: the owner's cursor works.
    const page = (await alice.rpc("resources/list", { cursor })).body.result as ListPage;
    expect(page.resources[0]?.uri).toBe(`atom://r-0${LIMITS.listPageDefault}`);
  });

  it("a token without kb.read is refused before dispatch (403 naming kb.read)", async () => {
    const writer = await kbCaller(alice.tenant, { sub: "writer", scope: "mcp kb.write" });
    const answer = await writer.rpc("resources/list");
    expect(answer.status).toBe(403);
    expect(answer.text).not.toContain("r-000");
  });
});
