// The committed src/schema.d.ts must be what the generator makes of the binary's document.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { baseUrl } from "./helpers.js";

interface Generator {
  SCHEMA_PATH: string;
  plinthBin(): string;
  readDocument(bin?: string): unknown;
  generateSchema(document: unknown): Promise<string>;
}

// The package's root, from dist/test/ (compiled) or test/ (as written).
const root = new URL(import.meta.url.includes("/dist/test/") ? "../../" : "../", import.meta.url);
const generator = (await import(new URL("generate.mjs", root).href)) as Generator;

test("src/schema.d.ts is generated from the binary's OpenAPI document", async () => {
  const fresh = await generator.generateSchema(generator.readDocument());
  const committed = readFileSync(generator.SCHEMA_PATH, "utf8");
  if (fresh !== committed) {
    const a = committed.split("\n");
    const b = fresh.split("\n");
    let line = 0;
    while (line < a.length && a[line] === b[line]) line += 1;
    assert.fail(
      `${fileURLToPath(new URL("src/schema.d.ts", root))} is stale (it first differs at line ${line + 1}: ` +
        `${JSON.stringify(a[line])} != ${JSON.stringify(b[line])}). ` +
        `Regenerate it: cd clients/typescript && PLINTH_BIN=${generator.plinthBin()} npm run generate`,
    );
  }
});

test("the running server serves the same document as the binary", async () => {
  const served: unknown = await (await fetch(`${baseUrl}/docs/openapi.json`)).json();
  assert.deepEqual(served, generator.readDocument(), "the server under test is not $PLINTH_BIN");
});
