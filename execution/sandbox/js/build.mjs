// Builds dist/runtime.js: the sandbox runtime (src/) with zod and zod-to-json-schema bundled in,
// as one classic script for QuickJS. Run by `npm run build:runtime` (the Makefile's setup target).
import { build } from "esbuild";
import { readFile } from "node:fs/promises";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import vm from "node:vm";
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
const require = createRequire(import.meta.url);

// The time zones Intl.DateTimeFormat knows besides UTC (the sandbox clock's zone): a few common
// ones taken from FormatJS's data (its whole "golden" set is 800 kB), from 1970 on.
const ZONES = [
  "Europe/London", "Europe/Berlin", "Europe/Paris", "America/New_York", "America/Chicago",
  "America/Denver", "America/Los_Angeles", "America/Sao_Paulo", "Asia/Tokyo", "Asia/Shanghai",
  "Asia/Kolkata", "Australia/Sydney",
];

// "Name|,a,o,d|t1,a,o,d|...": each transition (base-36 seconds, abbreviation, offset, dst) holds
// until the next; the one in force on 1970-01-01 becomes the first.
function fromEpoch(zone) {
  const [name, ...transitions] = zone.split("|");
  let first = 0;
  for (let i = 0; i < transitions.length; i++) {
    const at = transitions[i].split(",")[0];
    if (at === "" || (at !== "NaN" && parseInt(at, 36) <= 0)) first = i;
  }
  const kept = transitions.slice(first);
  kept[0] = "," + kept[0].split(",").slice(1).join(",");
  return [name, ...kept].join("|");
}

function zonesModule() {
  const file = require.resolve("@formatjs/intl-datetimeformat/add-golden-tz.js");
  const text = readFileSync(file, "utf8");
  const start = text.indexOf("__addTZData(") + "__addTZData(".length;
  const data = JSON.parse(text.slice(start, text.lastIndexOf("})") + 1));
  const zones = data.zones.filter((z) => ZONES.includes(z.slice(0, z.indexOf("|")))).map(fromEpoch);
  if (zones.length !== ZONES.length) throw new Error("a time zone is missing from FormatJS's data");
  return `Intl.DateTimeFormat.__addTZData(${JSON.stringify({ ...data, zones })});`;
}

// FormatJS's DateTimeFormat and NumberFormat locale data, trimmed at build time (evaluated here with a stand-in Intl that captures
// what each file adds): DateTimeFormat keeps the Gregorian calendar only, the names of the zones
// above, and the interval formats' fallback pattern (formatRange writes "start – end" with the
// two dates in full rather than CLDR's shortened forms).
const KEEP_ZONE_NAMES = new Set(["UTC", ...ZONES]);

// ICU (Node, browsers) joins a full or long date to its time with CLDR's "atTime" pattern, which
// FormatJS's data leaves out.
const AT_TIME = { en: "{1} 'at' {0}", de: "{1} 'um' {0}" };

// NumberFormat keeps the names and symbols of these currencies; any other is written with its ISO
// code (as ICU does for a code it has no data for).
const CURRENCIES = new Set(("USD EUR GBP JPY CNY CHF CAD AUD NZD SEK NOK DKK PLN CZK HUF RON BGN TRY RUB UAH " +
  "INR PKR BDT IDR MYR SGD THB VND PHP KRW TWD HKD ILS AED SAR QAR EGP NGN KES ZAR MAD BRL MXN ARS CLP " +
  "COP PEN ISK BTC").split(" "));

function trimLocaleData(kind, data) {
  if (kind === "NumberFormat" && data.data.currencies) {
    data.data.currencies = Object.fromEntries(Object.entries(data.data.currencies).filter(([code]) => CURRENCIES.has(code)));
    return data;
  }
  if (kind !== "DateTimeFormat") return data;
  const d = data.data;
  const at = AT_TIME[String(data.locale).split("-")[0]];
  if (at && d.dateTimeFormat) {
    d.dateTimeFormat.full = at;
    d.dateTimeFormat.long = at;
  }
  if (d.formats) d.formats = { gregory: d.formats.gregory };
  if (d.calendars) d.calendars = d.calendars.filter((c) => c === "gregory");
  if (d.timeZoneName) {
    d.timeZoneName = Object.fromEntries(Object.entries(d.timeZoneName).filter(([zone]) => KEEP_ZONE_NAMES.has(zone)));
  }
  if (d.intervalFormats) d.intervalFormats = { intervalFormatFallback: d.intervalFormats.intervalFormatFallback };
  return data;
}

function localeDataModule(file) {
  const out = [];
  const adder = (kind) => ({ __addLocaleData: (...items) => items.forEach((item) => out.push([kind, item])) });
  const Intl = {};
  for (const kind of ["DateTimeFormat", "NumberFormat", "PluralRules", "RelativeTimeFormat", "ListFormat"]) Intl[kind] = adder(kind);
  const sandbox = { Intl };
  sandbox.globalThis = sandbox;
  vm.runInNewContext(readFileSync(file, "utf8"), sandbox);
  if (out.length === 0) throw new Error(`no locale data captured from ${file}`);
  // V8 and Node print a plain space where CLDR 42+ has U+202F (before AM/PM): so does the sandbox.
  const json = (kind, item) => JSON.stringify(trimLocaleData(kind, item)).replace(/\u202f/g, " ");
  return out.map(([kind, item]) => `Intl.${kind}.__addLocaleData(${json(kind, item)});`).join("\n");
}

const intlLocaleData = {
  name: "lightfast-intl-locale-data",
  setup(b) {
    b.onLoad({ filter: /@formatjs[\\/]intl-(datetimeformat|numberformat)[\\/]locale-data[\\/][A-Za-z-]+\.js$/ }, (args) => ({
      contents: localeDataModule(args.path),
      loader: "js",
    }));
  },
};

const intlZones = {
  name: "lightfast-intl-zones",
  setup(b) {
    b.onResolve({ filter: /^lightfast-intl-zones$/ }, () => ({ path: "zones", namespace: "lightfast-intl-zones" }));
    b.onLoad({ filter: /.*/, namespace: "lightfast-intl-zones" }, () => ({ contents: zonesModule(), loader: "js" }));
  },
};

// Intl (FormatJS polyfills and locale data) as one classic script, embedded in the runtime as a
// string that intl/index.js evaluates on first use.
const intlBuild = await build({
  entryPoints: [path.join(here, "src", "intl", "bundle.js")],
  write: false,
  bundle: true,
  format: "iife",
  platform: "neutral",
  target: "es2022",
  mainFields: ["module", "main"],
  conditions: ["import", "default"],
  legalComments: "none",
  minify: true,
  charset: "ascii",
  logLevel: "warning",
  plugins: [intlZones, intlLocaleData],
});
const intlSource = {
  name: "lightfast-intl-source",
  setup(b) {
    b.onResolve({ filter: /^lightfast-intl-source$/ }, () => ({ path: "intl", namespace: "lightfast-intl-source" }));
    b.onLoad({ filter: /.*/, namespace: "lightfast-intl-source" }, () => ({
      contents: `export default ${JSON.stringify(intlBuild.outputFiles[0].text)};`,
      loader: "js",
    }));
  },
};

const result = await build({
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
  plugins: [fetchBlobWithoutPreamble, intlSource],
  metafile: Boolean(process.env.RUNTIME_SIZES),
});

// RUNTIME_SIZES=1 npm run build:runtime: the largest inputs and their share of dist/runtime.js.
if (process.env.RUNTIME_SIZES) {
  const inputs = Object.values(result.metafile.outputs)[0].inputs;
  const rows = Object.entries(inputs).sort((a, b) => b[1].bytesInOutput - a[1].bytesInOutput);
  for (const [name, info] of rows.slice(0, 30)) console.log(String(info.bytesInOutput).padStart(9), name);
  console.log(`Intl source (a string in runtime.js): ${intlBuild.outputFiles[0].text.length} bytes`);
}
