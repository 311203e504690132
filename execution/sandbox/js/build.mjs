// Builds dist/runtime.js: the sandbox runtime (src/) with zod and zod-to-json-schema bundled in,
// as one classic script for QuickJS. Run by `npm run build:runtime` (the Makefile's setup target).
import { build } from "esbuild";
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import path from "node:path";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "..", "..", "..");

// fetch-blob's entry opens with a top-level await that imports node:process and node:stream/web
// when there is no ReadableStream global: a classic script cannot hold it, and the sandbox always
// has that global (a lazy one, web/modules.js). The preamble is cut out; the build fails if the
// pinned file no longer has it where expected.
const fetchBlobWithoutPreamble = {
  name: "fetch-blob-without-node-preamble",
  setup(b) {
    // formdata-polyfill pins an older fetch-blob of its own (3.x, which requires node:stream/web):
    // its FormData must hold the same Blob and File as the globals, so both resolve to ours.
    b.onResolve({ filter: /^fetch-blob(\/file\.js)?$/ }, (args) =>
      args.importer.includes("formdata-polyfill") ? { path: args.path, namespace: "fetch-blob-default" } : undefined,
    );
    b.onLoad({ filter: /.*/, namespace: "fetch-blob-default" }, (args) => {
      const file = path.join(root, "node_modules", "fetch-blob", args.path === "fetch-blob" ? "index.js" : "file.js");
      const name = args.path === "fetch-blob" ? "Blob" : "File";
      return { contents: `export { ${name} as default } from ${JSON.stringify(file)};`, loader: "js", resolveDir: root };
    });
    b.onLoad({ filter: /[\\/]fetch-blob[\\/]index\.js$/ }, async (args) => {
      const source = await readFile(args.path, "utf8");
      const start = source.indexOf("if (!globalThis.ReadableStream) {");
      const end = source.indexOf("// 64 KiB");
      if (start < 0 || end < start || !source.slice(start, end).includes("await import('node:stream/web')")) {
        throw new Error("fetch-blob/index.js: the node preamble to cut is not where it was");
      }
      return { contents: source.slice(0, start) + source.slice(end), loader: "js" };
    });
  },
};

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
  plugins: [fetchBlobWithoutPreamble],
});
