// Builds dist/runtime.js: the sandbox runtime (src/) with zod and zod-to-json-schema bundled in,
// as one classic script for QuickJS. Run by `npm run build:runtime` (the Makefile's setup target).
import { build } from "esbuild";
import { fileURLToPath } from "node:url";
import path from "node:path";

const here = path.dirname(fileURLToPath(import.meta.url));

// The Node-compat modules (src/node/modules.js) are built first, on their own, and go into the
// runtime as source text that it compiles on first use (src/node/index.js says why).
const nodeModules = await build({
  entryPoints: [path.join(here, "src", "node", "modules.js")],
  write: false,
  bundle: true,
  format: "iife",
  globalName: "__lightfastNodeModules",
  platform: "neutral",
  target: "es2022",
  mainFields: ["module", "main"],
  conditions: ["import", "default"],
  // `global`: npm code written for Node (util's dependencies) names the global object so.
  define: { "process.env.NODE_ENV": '"production"', global: "globalThis" },
  legalComments: "none",
  minify: true,
  charset: "ascii",
  logLevel: "warning",
});
const nodeModulesSource = nodeModules.outputFiles[0].text + "\nreturn __lightfastNodeModules.install;";

await build({
  entryPoints: [path.join(here, "src", "runtime.js")],
  outfile: path.join(here, "dist", "runtime.js"),
  bundle: true,
  format: "iife",
  platform: "neutral",
  target: "es2022",
  mainFields: ["module", "main"],
  conditions: ["import", "default"],
  define: { "process.env.NODE_ENV": '"production"', NODE_MODULES_SOURCE: JSON.stringify(nodeModulesSource) },
  legalComments: "none",
  minify: true,
  keepNames: false,
  logLevel: "warning",
});
