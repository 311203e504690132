// node:util: the npm `util` package (Node's util as a library: format, inspect, promisify,
// callbackify, inherits, deprecate, types), with what it lacks added: isDeepStrictEqual (Node 9),
// TextEncoder/TextDecoder (the runtime's), types.isUint8Array & co., stripVTControlCharacters.
import util from "util";
import { host } from "./host.js";

const { TextDecoder, TextEncoder } = host;

const TYPED = [
  "Int8Array", "Uint8Array", "Uint8ClampedArray", "Int16Array", "Uint16Array", "Int32Array", "Uint32Array",
  "Float32Array", "Float64Array", "BigInt64Array", "BigUint64Array",
];
const typedArrayTag = Object.getOwnPropertyDescriptor(Object.getPrototypeOf(Uint8Array.prototype), Symbol.toStringTag).get;

function tagOf(value) {
  return Object.prototype.toString.call(value).slice(8, -1);
}

// Node's isDeepStrictEqual: same prototypes, same own enumerable keys (symbols included), values
// compared with Object.is at the leaves; Maps, Sets, Dates, RegExps, boxed primitives, errors,
// ArrayBuffers and typed arrays by content; cycles are handled.
export function isDeepStrictEqual(a, b, seen = new Map()) {
  if (Object.is(a, b)) return true;
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false;
  if (Object.getPrototypeOf(a) !== Object.getPrototypeOf(b)) return false;
  const tag = tagOf(a);
  if (tag !== tagOf(b)) return false;
  if (seen.get(a) === b) return true;
  seen.set(a, b);
  if (Array.isArray(a) && a.length !== b.length) return false;
  if (tag === "Date" && !Object.is(a.getTime(), b.getTime())) return false;
  if (tag === "RegExp" && (a.source !== b.source || a.flags !== b.flags || a.lastIndex !== b.lastIndex)) return false;
  if (a instanceof Error && (a.message !== b.message || a.name !== b.name)) return false;
  if (["Number", "String", "Boolean", "BigInt", "Symbol"].includes(tag) && !Object.is(a.valueOf(), b.valueOf())) return false;
  if (ArrayBuffer.isView(a)) {
    if (a.byteLength !== b.byteLength || typedArrayTag.call(a) !== typedArrayTag.call(b)) return false;
    const x = new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
    const y = new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
    for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false;
  } else if (tag === "ArrayBuffer") {
    if (a.byteLength !== b.byteLength) return false;
    if (!isDeepStrictEqual(new Uint8Array(a), new Uint8Array(b), seen)) return false;
  }
  if (tag === "Map") {
    if (a.size !== b.size) return false;
    for (const [key, value] of a) {
      if (!b.has(key) || !isDeepStrictEqual(value, b.get(key), seen)) return false;
    }
  } else if (tag === "Set") {
    if (a.size !== b.size) return false;
    outer: for (const value of a) {
      if (b.has(value)) continue;
      if (typeof value !== "object" || value === null) return false;
      for (const other of b) if (isDeepStrictEqual(value, other, seen)) continue outer;
      return false;
    }
  }
  const ownKeys = (o) =>
    Reflect.ownKeys(o).filter((k) => Object.prototype.propertyIsEnumerable.call(o, k) && !(ArrayBuffer.isView(o) && /^\d+$/.test(String(k))));
  const keysA = ownKeys(a);
  const keysB = ownKeys(b);
  if (keysA.length !== keysB.length) return false;
  for (const key of keysA) {
    if (!Object.prototype.propertyIsEnumerable.call(b, key)) return false;
    if (!isDeepStrictEqual(a[key], b[key], seen)) return false;
  }
  return true;
}

// Node's util.format (the package's knows %s %d %j only): %s %d %i %f %j %o %O %c %%, then the
// remaining arguments, strings as they are and other values inspected.
function formatValue(value, spec) {
  switch (spec) {
    case "s":
      if (typeof value === "bigint") return `${value}n`;
      if (typeof value === "number" && Object.is(value, -0)) return "-0";
      if (typeof value === "symbol") return String(value);
      if (typeof value === "object" && value !== null) {
        const own = value.toString;
        if (value instanceof Error) return value.stack || String(value);
        if (typeof own === "function" && own !== Object.prototype.toString && own !== Array.prototype.toString) return String(value);
        return util.inspect(value, { depth: 0 });
      }
      return String(value);
    case "d":
      if (typeof value === "bigint") return `${value}n`;
      if (typeof value === "symbol" || (typeof value === "object" && value !== null)) return "NaN";
      return formatNumber(Number(value));
    case "i":
      if (typeof value === "bigint") return `${value}n`;
      if (typeof value === "symbol") return "NaN";
      return formatNumber(parseInt(value));
    case "f":
      return typeof value === "symbol" ? "NaN" : formatNumber(parseFloat(value));
    case "j":
      try {
        return JSON.stringify(value);
      } catch (error) {
        if (error instanceof TypeError && /circular/i.test(error.message)) return "[Circular]";
        throw error;
      }
    case "o":
      return util.inspect(value, { showHidden: true, depth: 4 });
    case "O":
      return util.inspect(value);
    case "c":
      return "";
  }
  return undefined;
}
const formatNumber = (n) => (Object.is(n, -0) ? "-0" : String(n));

export function format(...args) {
  const first = args[0];
  let rest = 1;
  let out = "";
  if (typeof first === "string") {
    if (args.length === 1) return first;
    let last = 0;
    for (let i = 0; i < first.length - 1; i++) {
      if (first.charCodeAt(i) !== 37) continue; // "%"
      const spec = first[i + 1];
      if (spec === "%") {
        out += first.slice(last, i) + "%";
        last = i + 2;
        i++;
        continue;
      }
      if (rest >= args.length || !"sdifjoOc".includes(spec)) continue;
      out += first.slice(last, i) + formatValue(args[rest++], spec);
      last = i + 2;
      i++;
    }
    out += first.slice(last);
  } else {
    rest = 0;
  }
  for (let i = rest; i < args.length; i++) {
    const value = args[i];
    out += (i > 0 ? " " : "") + (typeof value === "string" ? value : util.inspect(value));
  }
  return out;
}

const types = { ...util.types };
for (const name of TYPED) {
  const key = `is${name}`;
  if (typeof types[key] !== "function") types[key] = (value) => ArrayBuffer.isView(value) && typedArrayTag.call(value) === name;
}

const nodeUtil = {
  ...util,
  format,
  formatWithOptions: (_options, ...args) => format(...args),
  types,
  isDeepStrictEqual: (a, b) => isDeepStrictEqual(a, b),
  TextEncoder,
  TextDecoder,
  stripVTControlCharacters: (text) => String(text).replace(/\u001b\[[0-9;]*[A-Za-z]/g, ""),
  toUSVString: (text) => String(text).toWellFormed(),
};
export default nodeUtil;
