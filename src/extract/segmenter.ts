import { KbError } from "../errors";
import { HtmlText } from "./html-text";
import { type AtomFlag, flagText } from "./injection-flags";

/**
 * Splits a document into atoms by its structure, incrementally (push text as it streams, get finished segments
 * back), so memory stays bounded by one segment plus one paragraph. Markdown: headings start segments and become
 * titles; paragraphs are packed up to `maxChars`; long paragraphs are split at sentence or word boundaries, with
 * `overlapChars` of the previous segment repeated at the start of a continuation. HTML: text blocks from HtmlText.
 * Plain text: paragraphs. JSON: one line per leaf (`path: value`), grouped by top-level entry (JSON needs the whole
 * document, so it is capped at MAX_JSON_CHARS).
 */
export type DocumentKind = "markdown" | "html" | "text" | "json";

export interface Segment {
  readonly position: number;
  readonly title: string | null;
  readonly text: string;
  readonly flags: AtomFlag[];
}

export interface SegmenterOptions {
  readonly maxChars: number;
  readonly overlapChars: number;
}

export const DEFAULT_SEGMENTER: SegmenterOptions = { maxChars: 1500, overlapChars: 150 };
export const MAX_JSON_CHARS = 8 * 1024 * 1024;

export function kindFor(contentType: string): DocumentKind {
  const type = contentType.split(";")[0]?.trim().toLowerCase() ?? "";
  if (type === "text/markdown" || type === "text/x-markdown") return "markdown";
  if (type === "text/html" || type === "application/xhtml+xml") return "html";
  if (type === "application/json" || type.endsWith("+json")) return "json";
  if (type === "text/plain" || type === "text/csv") return "text";
  throw new KbError(
    "ERR_UNSUPPORTED_TYPE",
    `cannot extract atoms from ${type || "this type"} (markdown, html, text, json)`,
  );
}

export class Segmenter {
  readonly #kind: DocumentKind;
  readonly #options: SegmenterOptions;
  readonly #html = new HtmlText();
  #pending = "";
  #json = "";
  #title: string | null = null;
  #current = "";
  #currentHidden = false;
  #position = 0;
  readonly #out: Segment[] = [];

  constructor(kind: DocumentKind, options: SegmenterOptions = DEFAULT_SEGMENTER) {
    this.#kind = kind;
    this.#options = options;
  }

  push(text: string): Segment[] {
    if (this.#kind === "json") {
      this.#json += text;
      if (this.#json.length > MAX_JSON_CHARS) throw new KbError("ERR_LIMIT", "JSON documents are limited to 8 MiB");
      return [];
    }
    if (this.#kind === "html") {
      for (const block of this.#html.push(text)) this.#paragraph(block.text, block.hidden);
      return this.#drain();
    }
    this.#pending += text;
    // Complete lines only; the last partial line waits for more text.
    const cut = this.#pending.lastIndexOf("\n");
    if (cut >= 0) {
      this.#lines(this.#pending.slice(0, cut));
      this.#pending = this.#pending.slice(cut + 1);
    }
    if (this.#pending.length > this.#options.maxChars * 4) {
      this.#lines(this.#pending);
      this.#pending = "";
    }
    return this.#drain();
  }

  finish(): Segment[] {
    if (this.#kind === "json") this.#jsonSegments();
    else if (this.#kind === "html") for (const block of this.#html.finish()) this.#paragraph(block.text, block.hidden);
    else this.#lines(this.#pending);
    this.#pending = "";
    this.#flush();
    return this.#drain();
  }

  #lines(text: string): void {
    let paragraph = "";
    for (const line of text.split("\n")) {
      const heading = this.#kind === "markdown" ? /^\s{0,3}#{1,6}\s+(.*)$/.exec(line) : null;
      if (heading) {
        this.#paragraph(paragraph, false);
        paragraph = "";
        this.#flush();
        this.#title =
          (heading[1] ?? "")
            .replace(/\s+#*\s*$/, "")
            .trim()
            .slice(0, 256) || null;
      } else if (line.trim() === "") {
        this.#paragraph(paragraph, false);
        paragraph = "";
      } else {
        paragraph += paragraph ? `\n${line}` : line;
      }
    }
    this.#paragraph(paragraph, false);
  }

  #paragraph(text: string, hidden: boolean): void {
    const paragraph = text.trim();
    if (!paragraph) return;
    const max = this.#options.maxChars;
    if (this.#current && this.#current.length + paragraph.length + 2 > max) this.#flush(true);
    if (paragraph.length <= max - this.#current.length) {
      this.#current += this.#current ? `\n\n${paragraph}` : paragraph;
      this.#currentHidden ||= hidden;
      return;
    }
    // A paragraph longer than a segment: split at sentence, then word, boundaries.
    let rest = paragraph;
    while (rest.length > 0) {
      const room = Math.max(max - this.#current.length - (this.#current ? 2 : 0), Math.floor(max / 4));
      const piece = rest.length <= room ? rest : cutAt(rest, room);
      this.#current += this.#current ? `\n\n${piece}` : piece;
      this.#currentHidden ||= hidden;
      rest = rest.slice(piece.length).trimStart();
      if (rest) this.#flush(true);
    }
  }

  #flush(continued = false): void {
    const text = this.#current.trim();
    if (text) {
      this.#out.push({
        position: this.#position++,
        title: this.#title,
        text,
        flags: flagText(text, { hidden: this.#currentHidden }),
      });
    }
    const overlap = this.#options.overlapChars;
    this.#current = continued && text && overlap > 0 ? tail(text, overlap) : "";
    this.#currentHidden = false;
  }

  #jsonSegments(): void {
    let value: unknown;
    try {
      value = JSON.parse(this.#json);
    } catch {
      throw new KbError("ERR_INVALID_PARAMS", "the document is not valid JSON");
    }
    this.#json = "";
    const entries: [string, unknown][] =
      value !== null && typeof value === "object"
        ? Array.isArray(value)
          ? value.map((item, i) => [`[${i}]`, item])
          : Object.entries(value as Record<string, unknown>)
        : [["", value]];
    for (const [key, item] of entries) {
      const lines: string[] = [];
      flatten(key, item, lines, 0);
      this.#title = key.slice(0, 256) || null;
      this.#paragraph(lines.join("\n"), false);
      this.#flush();
    }
  }

  #drain(): Segment[] {
    return this.#out.splice(0);
  }
}

function flatten(path: string, value: unknown, lines: string[], depth: number): void {
  if (depth > 32 || lines.length > 10_000) return;
  if (value !== null && typeof value === "object") {
    const entries = Array.isArray(value) ? value.map((item, i) => [`[${i}]`, item] as const) : Object.entries(value);
    for (const [key, item] of entries)
      flatten(key.startsWith("[") ? `${path}${key}` : path ? `${path}.${key}` : key, item, lines, depth + 1);
  } else {
    lines.push(`${path}: ${String(value)}`);
  }
}

function cutAt(text: string, room: number): string {
  const window = text.slice(0, room);
  const sentence = Math.max(
    window.lastIndexOf(". "),
    window.lastIndexOf("! "),
    window.lastIndexOf("? "),
    window.lastIndexOf("\n"),
  );
  if (sentence > room / 2) return window.slice(0, sentence + 1);
  const space = window.lastIndexOf(" ");
  return space > room / 2 ? window.slice(0, space) : window;
}

function tail(text: string, chars: number): string {
  const slice = text.slice(-chars);
  const space = slice.indexOf(" ");
  return space >= 0 && space < slice.length - 1 ? slice.slice(space + 1) : slice;
}
