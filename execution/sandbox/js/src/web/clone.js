// structuredClone (HTML's StructuredSerialize/Deserialize, in one pass). Hand-written: core-js-pure's
// structured-clone runs under QuickJS but, finding QuickJS's Map/Set short of the newest proposals,
// builds clones of Map and Set from its own polyfilled classes, so a cloned Map is not
// `instanceof Map`; the algorithm itself is small.
import { DOMException } from "./dom-exception.js";
import { ArrayIsArray, MapCtor, isArrayBuffer, isDate, isTypedArray, uncurry } from "../intrinsics.js";

const ERROR_NAMES = ["Error", "EvalError", "RangeError", "ReferenceError", "SyntaxError", "TypeError", "URIError"];
const ERROR_CTORS = { Error, EvalError, RangeError, ReferenceError, SyntaxError, TypeError, URIError };
const hasSlot = (method) => (value) => {
  try {
    method(value);
    return true;
  } catch {
    return false;
  }
};
const isMap = hasSlot(uncurry(Object.getOwnPropertyDescriptor(Map.prototype, "size").get));
const isSet = hasSlot(uncurry(Object.getOwnPropertyDescriptor(Set.prototype, "size").get));
const isRegExp = hasSlot(uncurry(Object.getOwnPropertyDescriptor(RegExp.prototype, "source").get));
const isDataView = hasSlot(uncurry(Object.getOwnPropertyDescriptor(DataView.prototype, "byteLength").get));
const isNumberObject = hasSlot(uncurry(Number.prototype.valueOf));
const isStringObject = hasSlot(uncurry(String.prototype.valueOf));
const isBooleanObject = hasSlot(uncurry(Boolean.prototype.valueOf));
const isBigIntObject = hasSlot(uncurry(BigInt.prototype.valueOf));
const isPromise = (v) => v instanceof Promise; // a slot check would need then(), which has effects
const isWeakMap = hasSlot(uncurry(WeakMap.prototype.has));
const isWeakSet = hasSlot(uncurry(WeakSet.prototype.has));
const isWeakRef = typeof WeakRef === "function" ? hasSlot(uncurry(WeakRef.prototype.deref)) : () => false;
const isError = typeof Error.isError === "function" ? Error.isError : (v) => v instanceof Error;
const bufferDetached = (ab) => ab.detached === true;

function uncloneable(value) {
  let text;
  if (typeof value === "object" && value !== null) {
    const ctor = Object.getPrototypeOf(value)?.constructor;
    text = `#<${(ctor && ctor.name) || "Object"}>`;
  } else text = typeof value === "symbol" ? value.toString() : String(value);
  return new DOMException(`${text} could not be cloned.`, "DataCloneError");
}

export function structuredClone(value, options = undefined) {
  if (arguments.length === 0) throw new TypeError("The value argument must be specified");
  const transfer = options !== undefined && options !== null ? options.transfer : undefined;
  const moved = [];
  if (transfer !== undefined) {
    for (const item of transfer) {
      if (!isArrayBuffer(item)) throw new DOMException("Value not transferable", "DataCloneError");
      if (moved.indexOf(item) >= 0) throw new DOMException("ArrayBuffer listed twice in the transfer list", "DataCloneError");
      if (bufferDetached(item)) throw new DOMException("An ArrayBuffer is detached and could not be cloned.", "DataCloneError");
      moved.push(item);
    }
  }
  const seen = new MapCtor();
  const clone = (v) => {
    if (typeof v === "symbol" || typeof v === "function") throw uncloneable(v);
    if (v === null || typeof v !== "object") return v;
    if (seen.has(v)) return seen.get(v);
    let out;
    if (isBooleanObject(v)) out = Object(Boolean.prototype.valueOf.call(v));
    else if (isNumberObject(v)) out = Object(Number.prototype.valueOf.call(v));
    else if (isBigIntObject(v)) out = Object(BigInt.prototype.valueOf.call(v));
    else if (isStringObject(v)) out = Object(String.prototype.valueOf.call(v));
    else if (isDate(v)) out = new Date(Date.prototype.getTime.call(v));
    else if (isRegExp(v)) out = new RegExp(v.source, v.flags);
    else if (isArrayBuffer(v)) {
      if (bufferDetached(v)) throw new DOMException("An ArrayBuffer is detached and could not be cloned.", "DataCloneError");
      out = v.slice(0);
      if (v.resizable) {
        out = new ArrayBuffer(v.byteLength, { maxByteLength: v.maxByteLength });
        new Uint8Array(out).set(new Uint8Array(v));
      }
    } else if (isTypedArray(v) || isDataView(v)) {
      const buffer = clone(v.buffer);
      const Ctor = isDataView(v) ? DataView : Object.getPrototypeOf(Object.getPrototypeOf(v)) === Object.getPrototypeOf(Uint8Array.prototype) ? Object.getPrototypeOf(v).constructor : null;
      if (Ctor === null) throw uncloneable(v);
      out = isDataView(v)
        ? new DataView(buffer, v.byteOffset, v.byteLength)
        : new Ctor(buffer, v.byteOffset, v.length);
    } else if (isMap(v)) {
      out = new Map();
      seen.set(v, out);
      const entries = [...Map.prototype.entries.call(v)];
      for (const [k, val] of entries) out.set(clone(k), clone(val));
      return out;
    } else if (isSet(v)) {
      out = new Set();
      seen.set(v, out);
      const values = [...Set.prototype.values.call(v)];
      for (const val of values) out.add(clone(val));
      return out;
    } else if (isError(v)) {
      const name = ERROR_NAMES.indexOf(v.name) >= 0 ? v.name : "Error";
      const desc = Object.getOwnPropertyDescriptor(v, "message");
      out = desc && "value" in desc ? new ERROR_CTORS[name](String(desc.value)) : new ERROR_CTORS[name]();
      seen.set(v, out);
      if (Object.prototype.hasOwnProperty.call(v, "cause")) out.cause = clone(v.cause);
      const stack = v.stack;
      if (typeof stack === "string") Object.defineProperty(out, "stack", { value: stack, writable: true, configurable: true, enumerable: false });
      return out;
    } else if (isPromise(v) || isWeakMap(v) || isWeakSet(v) || isWeakRef(v)) {
      throw uncloneable(v);
    } else if (ArrayIsArray(v)) {
      out = new Array(v.length);
      seen.set(v, out);
      for (const k of Object.keys(v)) out[k] = clone(v[k]);
      return out;
    } else {
      out = {};
      seen.set(v, out);
      for (const k of Object.keys(v)) out[k] = clone(v[k]);
      return out;
    }
    seen.set(v, out);
    return out;
  };
  const result = clone(value);
  // Transferred buffers were copied above; detaching the originals completes the transfer.
  for (const item of moved) {
    if (!seen.has(item)) seen.set(item, item.slice(0));
    item.transfer();
  }
  return result;
}
