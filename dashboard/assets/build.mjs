// The dashboard's browser assets: each entry bundled (with what it imports from npm) and minified into
// dashboard/static/dashboard/dist/, where collectstatic finds them. Run by `npm run build:dashboard`
// (`make setup` does; the browser tests do when a source is newer than the last build).
import { mkdirSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const outdir = join(here, "..", "static", "dashboard", "dist");

// One entry per page family; a JS entry that imports CSS gets a .css file of the same name.
const entryPoints = {
  app: join(here, "app.js"), // every page: htmx, copy buttons, the organization switcher, styles
  charts: join(here, "charts.js"), // pages with charts: uPlot
  pages: join(here, "pages.js"), // bundles, chat index, runs, usage: the upload's drop zone and progress, styles
  chat: join(here, "chat.js"), // the chat page: the AI SDK's Chat and DefaultChatTransport
};

// The outputs are written over the old ones, then what the build no longer makes is removed: the
// directory never lacks a current file (a test process's static finder may list it meanwhile).
mkdirSync(outdir, { recursive: true });
const result = await esbuild.build({
  entryPoints,
  outdir,
  bundle: true,
  minify: true,
  format: "iife",
  target: ["es2020", "chrome100", "firefox100", "safari15"],
  legalComments: "eof",
  logLevel: "warning",
  metafile: true,
});
const made = new Set(Object.keys(result.metafile.outputs).map((path) => join(process.cwd(), path)));
for (const name of readdirSync(outdir)) {
  const path = join(outdir, name);
  if (name !== ".built" && !made.has(path)) rmSync(path, { recursive: true, force: true });
}
// The Makefile's stamp: newer than every source means the assets are current.
writeFileSync(join(outdir, ".built"), "");
