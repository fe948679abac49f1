import { KbError } from "../errors";
import { HtmlText } from "./html-text";
import { type AtomFlag, flagText } from "./injection-flags";

/**
 * Splits a document into atoms by its structure, incrementally (push text as it streams, get finished segments
 * back), so memory stays bounded by one segment plus 4 x maxChars of the current paragraph. Markdown: headings start
 * segments and become titles; paragraphs are packed up to `maxChars`; long paragraphs are split at sentence or word
 * boundaries, with `overlapChars` of the previous segment repeated at the start of a continuation. HTML: text blocks
 * from HtmlText. Plain text: paragraphs. JSON: one line per leaf (`path: value`), grouped by top-level entry (JSON
 * needs the whole document, so it is capped at MAX_JSON_CHARS).
 *
 * The segments depend only on the text, never on how it was cut into pushes (stored documents stream in 16 KiB
 * pieces): lines and paragraphs are carried across pushes, and a paragraph or line too long to hold is cut at a
 * point chosen from its own first 4 x maxChars characters.
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
  /** The current line, while it is short enough to wait for its end (to tell headings and blank lines). */
  #pending = "";
  /** The current line was too long to wait for: it streams into the paragraph. */
  #lineOpen = false;
  /** ... and so far it is whitespace only (a blank line still ends the paragraph). */
  #lineBlank = true;
  /** The rest of an over-long heading line is ignored. */
  #skipLine = false;
  /** The current paragraph: its lines joined with "\n" (at most 4 x maxChars between pushes). */
  #para = "";
  #paraOpen = false;
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
    let start = 0;
    for (;;) {
      const newline = text.indexOf("\n", start);
      this.#linePart(newline < 0 ? text.slice(start) : text.slice(start, newline));
      if (newline < 0) break;
      this.#lineEnd();
      start = newline + 1;
    }
    return this.#drain();
  }

  finish(): Segment[] {
    if (this.#kind === "json") this.#jsonSegments();
    else if (this.#kind === "html") for (const block of this.#html.finish()) this.#paragraph(block.text, block.hidden);
    else {
      this.#lineEnd(); // the last line, whether or not the text ends with a newline
      this.#endParagraph();
    }
    this.#flush();
    return this.#drain();
  }

  /** Part of the current line (no newline in it). */
  #linePart(part: string): void {
    if (!part || this.#skipLine) return;
    if (this.#lineOpen) {
      if (part.trim()) this.#lineBlank = false;
      this.#para += part;
      this.#cutLongParagraph();
      return;
    }
    this.#pending += part;
    const limit = this.#options.maxChars * 4;
    if (this.#pending.length <= limit) return;
    // Too long to wait for the end of the line; decide from a fixed-length prefix, whatever the pushes were.
    const heading = this.#heading(this.#pending.slice(0, limit + 1));
    if (heading !== undefined) {
      this.#startSection(heading);
      this.#skipLine = true;
    } else {
      this.#lineOpen = true;
      this.#lineBlank = this.#pending.trim() === "";
      this.#addLine(this.#pending);
    }
    this.#pending = "";
  }

  #lineEnd(): void {
    const line = this.#pending.endsWith("\r") ? this.#pending.slice(0, -1) : this.#pending;
    this.#pending = "";
    if (this.#skipLine) {
      this.#skipLine = false;
    } else if (this.#lineOpen) {
      this.#lineOpen = false;
      if (this.#lineBlank) this.#endParagraph();
    } else {
      const heading = this.#heading(line);
      if (heading !== undefined) this.#startSection(heading);
      else if (line.trim() === "") this.#endParagraph();
      else this.#addLine(line);
    }
  }

  /** The title if `line` is a markdown heading (null for an empty one), undefined if it is not a heading. */
  #heading(line: string): string | null | undefined {
    if (this.#kind !== "markdown") return undefined;
    const heading = /^\s{0,3}#{1,6}\s+(.*)$/.exec(line);
    if (!heading) return undefined;
    return (
      (heading[1] ?? "")
        .replace(/\s+#*\s*$/, "")
        .trim()
        .slice(0, 256) || null
    );
  }

  #startSection(title: string | null): void {
    this.#endParagraph();
    this.#flush();
    this.#title = title;
  }

  #addLine(line: string): void {
    this.#para += this.#paraOpen ? `\n${line}` : line;
    this.#paraOpen = true;
    this.#cutLongParagraph();
  }

  /** Keeps the paragraph buffer bounded: cuts are chosen from its first 4 x maxChars characters only. */
  #cutLongParagraph(): void {
    const cap = this.#options.maxChars * 4;
    while (this.#para.length > cap) {
      const piece = cutAt(this.#para, cap);
      this.#paragraph(piece, false);
      this.#para = this.#para.slice(piece.length);
    }
  }

  #endParagraph(): void {
    this.#paragraph(this.#para, false);
    this.#para = "";
    this.#paraOpen = false;
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
