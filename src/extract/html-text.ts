/**
 * Incremental HTML to text blocks (bounded memory: it keeps only the current tag and the current block). Script,
 * style, template, noscript, iframe, svg and head content is dropped; block elements end a block; entities are
 * decoded; text inside elements marked `hidden`, `aria-hidden="true"` or styled `display:none` /
 * `visibility:hidden` is kept as data but its block is marked hidden. Malformed markup degrades to plain text, as
 * an HTML tokenizer would read it: a `<` that cannot start a tag (`a < b`, `<=`, `<|`) is text, a comment runs to
 * `-->` (not to the first `>`), and a tag or comment still open at the end of the input is dropped, never emitted.
 */
export interface TextBlock {
  readonly text: string;
  readonly hidden: boolean;
}

// Constant lookup tables (never mutated, tenant-neutral).
const DROPPED = new Set(["script", "style", "template", "noscript", "iframe", "svg", "head", "object", "canvas"]);
const BLOCK = new Set([
  "p",
  "div",
  "section",
  "article",
  "header",
  "footer",
  "main",
  "aside",
  "nav",
  "li",
  "ul",
  "ol",
  "table",
  "tr",
  "td",
  "th",
  "h1",
  "h2",
  "h3",
  "h4",
  "h5",
  "h6",
  "br",
  "hr",
  "pre",
  "blockquote",
  "dd",
  "dt",
  "dl",
  "figure",
  "figcaption",
  "title",
  "body",
  "html",
  "form",
  "details",
  "summary",
]);
const VOID = new Set([
  "br",
  "hr",
  "img",
  "input",
  "meta",
  "link",
  "area",
  "base",
  "col",
  "embed",
  "source",
  "track",
  "wbr",
]);
const ENTITIES: Record<string, string> = { amp: "&", lt: "<", gt: ">", quot: '"', apos: "'", nbsp: " " };
const MAX_TAG = 4096;
/** What may follow `<` for it to open a tag, an end tag, a comment/doctype or a processing instruction. */
const TAG_START = /[A-Za-z/!?]/;

export class HtmlText {
  #inTag = false;
  #tag = "";
  /** The open tag is a comment (`<!--`): it ends at `-->`. */
  #comment = false;
  /** The last two characters of the open tag (the tag text itself is capped at MAX_TAG). */
  #tail = "";
  #text = "";
  #dropping: string | null = null;
  #hiddenDepth = 0;
  #stack: { name: string; hidden: boolean }[] = [];
  #blockHidden = false;
  readonly #out: TextBlock[] = [];

  push(chunk: string): TextBlock[] {
    for (const char of chunk) {
      if (this.#inTag) {
        if (this.#tag !== "" || TAG_START.test(char)) {
          this.#tagChar(char);
          continue;
        }
        // "<" followed by something that cannot start a tag: the "<" was text; this character is data too.
        this.#inTag = false;
        this.#data("<");
      }
      if (char === "<") this.#inTag = true;
      else this.#data(char);
    }
    return this.#drain();
  }

  finish(): TextBlock[] {
    // A lone "<" at the very end is text; an unfinished tag or comment is dropped.
    if (this.#inTag && this.#tag === "") this.#data("<");
    this.#inTag = false;
    this.#tag = "";
    this.#comment = false;
    this.#tail = "";
    this.#endBlock();
    return this.#drain();
  }

  #tagChar(char: string): void {
    if (char === ">" && (!this.#comment || this.#tail === "--")) {
      if (!this.#comment) this.#onTag(this.#tag);
      this.#inTag = false;
      this.#tag = "";
      this.#comment = false;
      this.#tail = "";
      return;
    }
    if (this.#tag.length < MAX_TAG) this.#tag += char;
    this.#tail = (this.#tail + char).slice(-2);
    if (this.#tag === "!--") this.#comment = true;
  }

  #data(char: string): void {
    if (this.#dropping !== null) return;
    this.#text += char;
    if (this.#hiddenDepth > 0 && char.trim()) this.#blockHidden = true;
    if (this.#text.length > 8192) this.#endBlock();
  }

  #onTag(raw: string): void {
    if (raw.startsWith("!") || raw.startsWith("?")) return; // comments, doctype, processing instructions
    const closing = raw.startsWith("/");
    const name = (/^\/?\s*([a-zA-Z][a-zA-Z0-9-]*)/.exec(raw)?.[1] ?? "").toLowerCase();
    if (!name) return;
    if (this.#dropping !== null) {
      if (closing && name === this.#dropping) this.#dropping = null;
      return;
    }
    if (!closing && DROPPED.has(name) && !raw.endsWith("/")) {
      this.#dropping = name;
      return;
    }
    if (BLOCK.has(name)) this.#endBlock();
    if (closing) {
      const index = this.#stack.map((entry) => entry.name).lastIndexOf(name);
      if (index >= 0) {
        for (const entry of this.#stack.splice(index)) if (entry.hidden) this.#hiddenDepth--;
      }
    } else if (!VOID.has(name) && !raw.endsWith("/")) {
      const hidden = /\bhidden\b|aria-hidden\s*=\s*["']?true|display\s*:\s*none|visibility\s*:\s*hidden/i.test(raw);
      this.#stack.push({ name, hidden });
      if (hidden) this.#hiddenDepth++;
      if (this.#stack.length > 512) this.#stack.splice(0, 256); // malformed: never grow without bound
    }
  }

  #endBlock(): void {
    const text = decodeEntities(this.#text)
      .replace(/[ \t\r\f\v]+/g, " ")
      .replace(/\s*\n\s*/g, "\n")
      .trim();
    if (text) this.#out.push({ text, hidden: this.#blockHidden });
    this.#text = "";
    this.#blockHidden = this.#hiddenDepth > 0;
  }

  #drain(): TextBlock[] {
    return this.#out.splice(0);
  }
}

function decodeEntities(text: string): string {
  return text.replace(/&(#x[0-9a-f]{1,6}|#\d{1,7}|[a-z]{2,8});/gi, (match, entity: string) => {
    if (entity[0] === "#") {
      const code =
        entity[1] === "x" || entity[1] === "X" ? Number.parseInt(entity.slice(2), 16) : Number(entity.slice(1));
      return code > 0 && code <= 0x10ffff && (code < 0xd800 || code > 0xdfff) ? String.fromCodePoint(code) : "";
    }
    return ENTITIES[entity.toLowerCase()] ?? match;
  });
}
