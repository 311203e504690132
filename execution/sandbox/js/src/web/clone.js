// structuredClone and crypto (getRandomValues, randomUUID).
import { DOMException } from "./dom-exception.js";
import {
  ArrayBufferCtor,
  ArrayIsArray,
  JSONParse,
  MapCtor,
  SetCtor,
  ArraySort,
  StringIndexOf,
  StringSlice,
  Uint8ArrayCtor,
  fromBase64,
  mapEntries,
  isArrayBuffer,
  isDate,
  isTypedArray,
  toBase64,
} from "../intrinsics.js";
import { randomBytesInto } from "../random.js";

// ---------------------------------------------------------------- structuredClone, crypto

export function structuredClone(value, options = undefined) {
  void options;
  const seen = new MapCtor();
  const clone = (v) => {
    if (v === null || (typeof v !== "object" && typeof v !== "function")) {
      if (typeof v === "symbol") throw new DOMException("Symbol could not be cloned", "DataCloneError");
      return v;
    }
    if (typeof v === "function") throw new DOMException("function could not be cloned", "DataCloneError");
    if (seen.has(v)) return seen.get(v);
    let out;
    if (isDate(v)) out = new Date(v.getTime());
    else if (v instanceof RegExp) out = new RegExp(v.source, v.flags);
    else if (isArrayBuffer(v)) out = v.slice(0);
    else if (isTypedArray(v)) out = new v.constructor(v);
    else if (v instanceof MapCtor) {
      out = new MapCtor();
      seen.set(v, out);
      for (const [k, val] of v) out.set(clone(k), clone(val));
      return out;
    } else if (v instanceof SetCtor) {
      out = new SetCtor();
      seen.set(v, out);
      for (const val of v) out.add(clone(val));
      return out;
    } else if (v instanceof Error) {
      out = new Error(v.message);
      out.name = v.name;
    } else if (ArrayIsArray(v)) {
      out = [];
      seen.set(v, out);
      for (let i = 0; i < v.length; i++) out[i] = clone(v[i]);
      return out;
    } else {
      if (v instanceof Promise || v instanceof WeakMap || v instanceof WeakSet) {
        throw new DOMException("value could not be cloned", "DataCloneError");
      }
      out = {};
      seen.set(v, out);
      for (const k of Object.keys(v)) out[k] = clone(v[k]);
      return out;
    }
    seen.set(v, out);
    return out;
  };
  return clone(value);
}

export const crypto = {
  getRandomValues(array) {
    if (!isTypedArray(array) || array instanceof Float32Array || array instanceof Float64Array) {
      throw new TypeError("getRandomValues: argument must be an integer typed array");
    }
    if (array.byteLength > 65536) {
      throw new DOMException("getRandomValues: at most 65536 bytes per call", "QuotaExceededError");
    }
    randomBytesInto(new Uint8ArrayCtor(array.buffer, array.byteOffset, array.byteLength));
    return array;
  },
  randomUUID() {
    const b = randomBytesInto(new Uint8ArrayCtor(16));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex = "";
    for (let i = 0; i < 16; i++) hex += (b[i] < 16 ? "0" : "") + b[i].toString(16);
    return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
  },
};

export { ArrayBufferCtor };
