// The `crypto` global (Web Cryptography API): getRandomValues and randomUUID on the sandbox's own
// random source (random.js, seeded by the host per call), and `subtle`, whose implementation
// (web/subtle.js with @noble/hashes and @noble/ciphers) is evaluated on its first use.
import { DOMException } from "./dom-exception.js";
import { Uint8ArrayCtor, isTypedArray } from "../intrinsics.js";
import { randomBytesInto } from "../random.js";

let subtleModule = null;
// esbuild bundles a require() of an ES module as a wrapper evaluated at the first call.
export function loadSubtle() {
  if (subtleModule === null) subtleModule = require("./subtle.js");
  return subtleModule;
}

const INTEGER_ARRAYS = ["Int8Array", "Uint8Array", "Uint8ClampedArray", "Int16Array", "Uint16Array", "Int32Array", "Uint32Array", "BigInt64Array", "BigUint64Array"];
const typedArrayTag = Function.prototype.call.bind(
  Object.getOwnPropertyDescriptor(Object.getPrototypeOf(Uint8Array.prototype), Symbol.toStringTag).get,
);

let constructing = false;

export class Crypto {
  constructor() {
    if (!constructing) throw new TypeError("Illegal constructor");
  }
  getRandomValues(array) {
    if (!isTypedArray(array) || INTEGER_ARRAYS.indexOf(typedArrayTag(array)) < 0) {
      throw new DOMException(
        "The data provided is not an integer-type TypedArray",
        "TypeMismatchError",
      );
    }
    if (array.byteLength > 65536) {
      throw new DOMException(
        `The ArrayBufferView's byte length (${array.byteLength}) exceeds the number of bytes of entropy available via this API (65536)`,
        "QuotaExceededError",
      );
    }
    randomBytesInto(new Uint8ArrayCtor(array.buffer, array.byteOffset, array.byteLength));
    return array;
  }
  randomUUID() {
    const b = randomBytesInto(new Uint8ArrayCtor(16));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex = "";
    for (let i = 0; i < 16; i++) hex += (b[i] < 16 ? "0" : "") + b[i].toString(16);
    return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
  }
  get subtle() {
    return loadSubtle().subtle;
  }
  get [Symbol.toStringTag]() {
    return "Crypto";
  }
}

constructing = true;
export const crypto = new Crypto();
constructing = false;
