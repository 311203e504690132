// Builds dist/runtime.js: the sandbox runtime (src/) with zod and zod-to-json-schema bundled in,
// as one classic script for QuickJS. Run by `npm run build:runtime` (the Makefile's setup target).
import { build } from "esbuild";
import { fileURLToPath } from "node:url";
import path from "node:path";

const here = path.dirname(fileURLToPath(import.meta.url));

await build({
  entryPoints: [path.join(here, "src", "runtime.js")],
  outfile: path.join(here, "dist", "runtime.js"),
  bundle: true,
  format: "iife",
  platform: "neutral",
  target: "es2022",
  mainFields: ["module", "main"],
  conditions: ["import", "default"],
  // `global`: npm code written for Node (util's dependencies) names the global object so.
  define: { "process.env.NODE_ENV": '"production"', global: "globalThis" },
  legalComments: "none",
  minify: true,
  keepNames: false,
  logLevel: "warning",
});
