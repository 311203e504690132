// Intl for the sandbox: QuickJS-NG is built without ECMA-402 (it has no ICU; its maintainers do not
// plan one), so `Intl` is FormatJS's polyfills (intl/polyfills.js) plus intl/collator.js, evaluated
// on the first read of `Intl` or the first locale-aware call. installIntl() also points
// Number/BigInt/Date toLocale*String and String#localeCompare at it, so their locale and options
// arguments are honoured as in engines with ICU.
// The polyfills are kept as source text and compiled on first use: QuickJS compiles every function
// of a script when it is evaluated (and keeps each function's source text), so bundled in
// runtime.js they would cost every zygote ~5 MB; as a string they cost 0.9 MB.
import INTL_SOURCE from "lightfast-intl-source";
import { Collator } from "./collator.js";

const indirectEval = globalThis.eval;
const defineProperty = Object.defineProperty;
const getOwnPropertyDescriptor = Object.getOwnPropertyDescriptor;
const dateGetTime = Function.prototype.call.bind(Date.prototype.getTime);
const numberValueOf = Function.prototype.call.bind(Number.prototype.valueOf);
const bigintValueOf = Function.prototype.call.bind(BigInt.prototype.valueOf);
const StringCtor = String;
const JSONStringify = JSON.stringify;

let intl = null;

function loadIntl() {
  if (intl !== null) return intl;
  intl = {};
  defineProperty(intl, Symbol.toStringTag, { value: "Intl", configurable: true });
  // The polyfills install themselves into the global `Intl`: the new object is that global while
  // they are evaluated; a value the bundle assigned to `Intl` before is put back afterwards.
  const before = getOwnPropertyDescriptor(globalThis, "Intl");
  defineProperty(globalThis, "Intl", { value: intl, writable: true, enumerable: false, configurable: true });
  try {
    indirectEval(INTL_SOURCE);
  } finally {
    if (before !== undefined && !before.get) defineProperty(globalThis, "Intl", before);
  }
  return intl;
}

// Formatters built for locale-aware calls, by kind and arguments (a few dozen at most). Collators
// are the hand-written Collator (also Intl.Collator) compiled into the runtime, so sorting with
// localeCompare never loads the FormatJS polyfills.
const cache = new Map();
function formatter(kind, locales, options) {
  let key = null;
  try {
    key = kind + JSONStringify([locales, options]);
  } catch {
    key = null; // arguments JSON cannot express: not cached
  }
  if (key !== null && cache.has(key)) return cache.get(key);
  const made = kind === "Collator" ? new Collator(locales, options) : new (loadIntl()[kind])(locales, options);
  if (key !== null) {
    if (cache.size >= 64) cache.clear();
    cache.set(key, made);
  }
  return made;
}

const DATE_FIELDS = ["weekday", "year", "month", "day"];
const TIME_FIELDS = ["dayPeriod", "hour", "minute", "second", "fractionalSecondDigits"];

// ECMA-402's ToDateTimeOptions for toLocaleString ("any"/"all"), toLocaleDateString ("date"),
// toLocaleTimeString ("time").
function dateOptions(options, required, defaults) {
  const o = options === undefined ? {} : { __proto__: Object(options) };
  const has = (fields) => fields.some((f) => o[f] !== undefined);
  let needDefaults = true;
  if ((required === "date" || required === "any") && has(DATE_FIELDS)) needDefaults = false;
  if ((required === "time" || required === "any") && has(TIME_FIELDS)) needDefaults = false;
  if (o.dateStyle !== undefined || o.timeStyle !== undefined) needDefaults = false;
  if (required === "date" && o.timeStyle !== undefined) throw new TypeError("Invalid option : timeStyle");
  if (required === "time" && o.dateStyle !== undefined) throw new TypeError("Invalid option : dateStyle");
  if (!needDefaults) return options;
  const out = { ...Object(options === undefined ? {} : options) };
  for (const k of ["localeMatcher", "calendar", "numberingSystem", "hour12", "hourCycle", "timeZone", "timeZoneName", "era", "formatMatcher"]) {
    if (o[k] !== undefined) out[k] = o[k];
  }
  if (defaults === "date" || defaults === "all") {
    out.year = "numeric";
    out.month = "numeric";
    out.day = "numeric";
  }
  if (defaults === "time" || defaults === "all") {
    out.hour = "numeric";
    out.minute = "numeric";
    out.second = "numeric";
  }
  return out;
}

function dateMethod(required, defaults) {
  return {
    [`toLocale${required === "any" ? "" : required === "date" ? "Date" : "Time"}String`](locales = undefined, options = undefined) {
      const t = dateGetTime(this);
      if (t !== t) return "Invalid Date";
      return formatter("DateTimeFormat", locales, dateOptions(options, required, defaults)).format(t);
    },
  };
}

const wired = {
  Number: {
    toLocaleString(locales = undefined, options = undefined) {
      return formatter("NumberFormat", locales, options).format(numberValueOf(this));
    },
  },
  BigInt: {
    toLocaleString(locales = undefined, options = undefined) {
      return formatter("NumberFormat", locales, options).format(bigintValueOf(this));
    },
  },
  Date: {
    ...dateMethod("any", "all"),
    ...dateMethod("date", "date"),
    ...dateMethod("time", "time"),
  },
  String: {
    localeCompare(that, locales = undefined, options = undefined) {
      if (this === null || this === undefined) throw new TypeError("String.prototype.localeCompare called on null or undefined");
      return formatter("Collator", locales, options).compare(StringCtor(this), StringCtor(that));
    },
  },
};

// Run at load for a bundle whose code mentions Intl or a locale-aware method: the zygote then holds
// the evaluated polyfills and the default formatters, which every call of the bundle starts from
// (a call's own changes are undone after it, so loading on first use would cost each call ~0.2 s).
export function warmIntl() {
  const Intl = loadIntl();
  formatter("NumberFormat", undefined, undefined).format(0);
  formatter("DateTimeFormat", undefined, dateOptions(undefined, "any", "all")).format(0);
  formatter("Collator", undefined, undefined).compare("a", "b");
  // FormatJS prepares each locale's data on its first formatter: done here for every carried one.
  for (const locale of ["en-GB", "de"]) {
    new Intl.NumberFormat(locale).format(0);
    new Intl.DateTimeFormat(locale).format(0);
  }
}

export function installIntl(target) {
  defineProperty(target, "Intl", {
    configurable: true,
    enumerable: false,
    get() {
      return loadIntl();
    },
    set(value) {
      defineProperty(target, "Intl", { value, writable: true, enumerable: false, configurable: true });
    },
  });
  const ctors = { Number, BigInt, Date, String };
  for (const name of Object.keys(wired)) {
    const proto = ctors[name].prototype;
    for (const method of Object.keys(wired[name])) {
      defineProperty(proto, method, { value: wired[name][method], writable: true, enumerable: false, configurable: true });
    }
  }
}
