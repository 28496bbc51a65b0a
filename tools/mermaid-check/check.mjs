#!/usr/bin/env node
// Parses Mermaid source with mermaid's own parser, headless under node (no browser, no render).
// Usage: node check.mjs FILE...   (or Mermaid source on standard input when no FILE is given)
// Exit status: 0 when every input parses, 1 when one does not (the parser's message on stderr),
// 2 when the mermaid package cannot be loaded (run `npm ci --prefix tools/mermaid-check`).
import { readFileSync } from "node:fs";

let mermaid;
try {
  // mermaid sanitizes labels with DOMPurify, which needs a DOM: give it jsdom's window
  // before mermaid (and so DOMPurify) is loaded.
  const { JSDOM } = await import("jsdom");
  const { window } = new JSDOM("");
  globalThis.window = window;
  globalThis.document = window.document;
  ({ default: mermaid } = await import("mermaid"));
} catch (e) {
  console.error(`mermaid-check: cannot load the mermaid or jsdom package (${e.message}); run: npm ci --prefix tools/mermaid-check`);
  process.exit(2);
}
mermaid.initialize({ startOnLoad: false });

const files = process.argv.slice(2);
const inputs = files.length ? files.map((f) => [f, readFileSync(f, "utf8")]) : [["<stdin>", readFileSync(0, "utf8")]];
let failed = 0;
for (const [name, src] of inputs) {
  try {
    const res = await mermaid.parse(src);
    console.log(`${name}: ok (${res.diagramType})`);
  } catch (e) {
    failed += 1;
    console.error(`${name}: ${e.message ?? e}`);
  }
}
process.exit(failed ? 1 : 0);
