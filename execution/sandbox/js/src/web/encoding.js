// UTF-8 text encoding (TextEncoder/TextDecoder) and base64 for the sandbox's web globals.
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

// ---------------------------------------------------------------- text encoding

export function utf8Encode(input) {
  const str = String(input);
  const out = [];
  for (let i = 0; i < str.length; i++) {
    let c = str.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < str.length) {
      const d = str.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
        i++;
      } else c = 0xfffd;
    } else if (c >= 0xd800 && c <= 0xdfff) c = 0xfffd;
    if (c < 0x80) out.push(c);
    else if (c < 0x800) out.push(0xc0 | (c >> 6), 0x80 | (c & 63));
    else if (c < 0x10000) out.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
    else out.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 63), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
  }
  return new Uint8ArrayCtor(out);
}

export function utf8Decode(bytes, fatal = false) {
  const parts = [];
  let chunk = [];
  const flush = () => {
    parts.push(String.fromCharCode.apply(null, chunk));
    chunk = [];
  };
  const bad = () => {
    if (fatal) throw new TypeError("The encoded data was not valid for encoding utf-8");
    chunk.push(0xfffd);
  };
  let i = 0;
  if (bytes.length >= 3 && bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf) i = 3;
  for (; i < bytes.length; ) {
    const b = bytes[i];
    let cp = -1;
    let need = 0;
    if (b < 0x80) { cp = b; need = 0; }
    else if (b >= 0xc2 && b < 0xe0) { cp = b & 31; need = 1; }
    else if (b >= 0xe0 && b < 0xf0) { cp = b & 15; need = 2; }
    else if (b >= 0xf0 && b < 0xf5) { cp = b & 7; need = 3; }
    else { bad(); i++; continue; }
    let j = 1;
    for (; j <= need; j++) {
      const n = bytes[i + j];
      if (n === undefined || (n & 0xc0) !== 0x80) break;
      cp = (cp << 6) | (n & 63);
    }
    if (j <= need || (need === 2 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) || (need === 3 && (cp < 0x10000 || cp > 0x10ffff))) {
      bad();
      i += j > 1 ? j : 1;
      continue;
    }
    i += need + 1;
    if (cp >= 0x10000) {
      cp -= 0x10000;
      chunk.push(0xd800 + (cp >> 10), 0xdc00 + (cp & 1023));
    } else chunk.push(cp);
    if (chunk.length >= 8192) flush();
  }
  flush();
  return parts.join("");
}

export function toBytes(data) {
  if (data instanceof Uint8ArrayCtor) return data;
  if (isArrayBuffer(data)) return new Uint8ArrayCtor(data);
  if (isTypedArray(data) || data instanceof DataView) {
    return new Uint8ArrayCtor(data.buffer, data.byteOffset, data.byteLength);
  }
  return null;
}

export class TextEncoder {
  get encoding() {
    return "utf-8";
  }
  encode(input = "") {
    return utf8Encode(input);
  }
  encodeInto(input, dest) {
    const bytes = utf8Encode(input);
    const n = Math.min(bytes.length, dest.length);
    dest.set(bytes.subarray(0, n));
    return { read: String(input).length, written: n };
  }
}

export class TextDecoder {
  #fatal;
  constructor(label = "utf-8", options = {}) {
    const l = String(label).toLowerCase();
    if (l !== "utf-8" && l !== "utf8" && l !== "unicode-1-1-utf-8") {
      throw new RangeError(`The encoding label provided ('${label}') is not supported`);
    }
    this.#fatal = Boolean(options && options.fatal);
  }
  get encoding() {
    return "utf-8";
  }
  get fatal() {
    return this.#fatal;
  }
  decode(input) {
    if (input === undefined) return "";
    const bytes = toBytes(input);
    if (!bytes) throw new TypeError("TextDecoder.decode: input must be an ArrayBuffer or a view");
    return utf8Decode(bytes, this.#fatal);
  }
}

// ---------------------------------------------------------------- base64

export function bytesToBase64(bytes) {
  return toBase64(bytes);
}

export function base64ToBytes(text) {
  return fromBase64(text);
}
