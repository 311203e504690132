// UTF-8 text encoding (TextEncoder/TextDecoder, WHATWG Encoding) and base64 for the sandbox's web
// globals. Hand-written: QuickJS has no TextEncoder/TextDecoder, and the npm polyfills either lack
// `fatal`/`ignoreBOM`/streaming decode (fastestsmallesttextencoderdecoder) or carry every legacy
// encoding's tables (text-encoding); UTF-8 is the only encoding the Encoding standard requires of
// TextEncoder and the only one the sandbox's TextDecoder offers.
import {
  StringFromCharCode,
  Uint8ArrayCtor,
  fromBase64,
  isArrayBuffer,
  isTypedArray,
  toBase64,
} from "../intrinsics.js";

const fromCharCodes = (codes) => StringFromCharCode.apply(null, codes);

// ---------------------------------------------------------------- encoding

// The UTF-8 bytes of a string; a lone surrogate becomes U+FFFD, as the standard's encoder does.
export function utf8Encode(input) {
  const str = String(input);
  const n = str.length;
  const out = new Uint8ArrayCtor(n * 3);
  let w = 0;
  for (let i = 0; i < n; i++) {
    let c = str.charCodeAt(i);
    if (c < 0x80) {
      out[w++] = c;
      continue;
    }
    if (c >= 0xd800 && c <= 0xdfff) {
      const d = c <= 0xdbff && i + 1 < n ? str.charCodeAt(i + 1) : 0;
      if (d >= 0xdc00 && d <= 0xdfff) {
        c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
        i++;
      } else c = 0xfffd;
    }
    if (c < 0x800) {
      out[w++] = 0xc0 | (c >> 6);
      out[w++] = 0x80 | (c & 63);
    } else if (c < 0x10000) {
      out[w++] = 0xe0 | (c >> 12);
      out[w++] = 0x80 | ((c >> 6) & 63);
      out[w++] = 0x80 | (c & 63);
    } else {
      out[w++] = 0xf0 | (c >> 18);
      out[w++] = 0x80 | ((c >> 12) & 63);
      out[w++] = 0x80 | ((c >> 6) & 63);
      out[w++] = 0x80 | (c & 63);
    }
  }
  return w === out.length ? out : out.slice(0, w);
}

// Decodes bytes[0..] as UTF-8 with the standard's decoder (a maximal invalid subpart becomes one
// U+FFFD, or a TypeError when fatal). When `flush` is false, an incomplete sequence at the end is
// left undecoded: `rest` is where it starts (bytes.length when there is none).
function decodeChunk(bytes, fatal, flush) {
  const n = bytes.length;
  const parts = [];
  let codes = [];
  let i = 0;
  let rest = n;
  const push = (cp) => {
    if (cp >= 0x10000) {
      cp -= 0x10000;
      codes.push(0xd800 + (cp >> 10), 0xdc00 + (cp & 1023));
    } else codes.push(cp);
    if (codes.length >= 8192) {
      parts.push(fromCharCodes(codes));
      codes = [];
    }
  };
  const bad = () => {
    if (fatal) throw new TypeError("The encoded data was not valid for encoding utf-8");
    push(0xfffd);
  };
  while (i < n) {
    const b = bytes[i];
    if (b < 0x80) {
      push(b);
      i++;
      continue;
    }
    let need;
    let cp;
    let lo = 0x80;
    let hi = 0xbf;
    if (b >= 0xc2 && b <= 0xdf) {
      need = 1;
      cp = b & 0x1f;
    } else if (b >= 0xe0 && b <= 0xef) {
      if (b === 0xe0) lo = 0xa0;
      if (b === 0xed) hi = 0x9f;
      need = 2;
      cp = b & 0xf;
    } else if (b >= 0xf0 && b <= 0xf4) {
      if (b === 0xf0) lo = 0x90;
      if (b === 0xf4) hi = 0x8f;
      need = 3;
      cp = b & 7;
    } else {
      bad();
      i++;
      continue;
    }
    let j = i + 1;
    let k = 0;
    for (; k < need && j < n; k++, j++) {
      const c = bytes[j];
      if (c < lo || c > hi) break;
      lo = 0x80;
      hi = 0xbf;
      cp = (cp << 6) | (c & 0x3f);
    }
    if (k === need) {
      push(cp);
      i = j;
    } else if (j >= n && !flush) {
      rest = i;
      break;
    } else {
      bad(); // the bytes i..j-1 are one maximal subpart; decoding goes on at j
      i = j;
    }
  }
  parts.push(fromCharCodes(codes));
  return { text: parts.join(""), rest };
}

// One-shot decode as fetch bodies use it (UTF-8 decode: a leading BOM is dropped).
export function utf8Decode(bytes, fatal = false) {
  const start = bytes.length >= 3 && bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf ? 3 : 0;
  return decodeChunk(start ? bytes.subarray(start) : bytes, fatal, true).text;
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
  // Writes whole characters only: `read` counts the UTF-16 code units consumed, `written` the bytes.
  encodeInto(input, dest) {
    if (!(dest instanceof Uint8ArrayCtor)) throw new TypeError("encodeInto: destination must be a Uint8Array");
    const str = String(input);
    const n = str.length;
    const room = dest.length;
    let read = 0;
    let w = 0;
    while (read < n) {
      let c = str.charCodeAt(read);
      let units = 1;
      if (c >= 0xd800 && c <= 0xdfff) {
        const d = c <= 0xdbff && read + 1 < n ? str.charCodeAt(read + 1) : 0;
        if (d >= 0xdc00 && d <= 0xdfff) {
          c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
          units = 2;
        } else c = 0xfffd;
      }
      const size = c < 0x80 ? 1 : c < 0x800 ? 2 : c < 0x10000 ? 3 : 4;
      if (w + size > room) break;
      if (size === 1) dest[w] = c;
      else if (size === 2) {
        dest[w] = 0xc0 | (c >> 6);
        dest[w + 1] = 0x80 | (c & 63);
      } else if (size === 3) {
        dest[w] = 0xe0 | (c >> 12);
        dest[w + 1] = 0x80 | ((c >> 6) & 63);
        dest[w + 2] = 0x80 | (c & 63);
      } else {
        dest[w] = 0xf0 | (c >> 18);
        dest[w + 1] = 0x80 | ((c >> 12) & 63);
        dest[w + 2] = 0x80 | ((c >> 6) & 63);
        dest[w + 3] = 0x80 | (c & 63);
      }
      w += size;
      read += units;
    }
    return { read, written: w };
  }
  get [Symbol.toStringTag]() {
    return "TextEncoder";
  }
}

const UTF8_LABELS = ["unicode-1-1-utf-8", "unicode11utf8", "unicode20utf8", "utf-8", "utf8", "x-unicode20utf8"];

export class TextDecoder {
  #fatal;
  #ignoreBOM;
  #pending = null; // the incomplete sequence a streaming decode() left
  #bomDone = false; // the BOM check happened for the current stream
  constructor(label = "utf-8", options = undefined) {
    const l = String(label).replace(/^[\t\n\f\r ]+|[\t\n\f\r ]+$/g, "").toLowerCase();
    if (UTF8_LABELS.indexOf(l) < 0) {
      throw new RangeError(`The encoding label provided ('${label}') is not supported`);
    }
    this.#fatal = Boolean(options && options.fatal);
    this.#ignoreBOM = Boolean(options && options.ignoreBOM);
  }
  get encoding() {
    return "utf-8";
  }
  get fatal() {
    return this.#fatal;
  }
  get ignoreBOM() {
    return this.#ignoreBOM;
  }
  decode(input = undefined, options = undefined) {
    const stream = Boolean(options && options.stream);
    let bytes;
    if (input === undefined || input === null) bytes = new Uint8ArrayCtor(0);
    else {
      bytes = toBytes(input);
      if (!bytes) throw new TypeError("TextDecoder.decode: input must be an ArrayBuffer or a view");
    }
    if (this.#pending !== null) {
      const joined = new Uint8ArrayCtor(this.#pending.length + bytes.length);
      joined.set(this.#pending);
      joined.set(bytes, this.#pending.length);
      bytes = joined;
      this.#pending = null;
    }
    let result;
    try {
      result = decodeChunk(bytes, this.#fatal, !stream);
    } catch (error) {
      this.#bomDone = false;
      throw error;
    }
    if (stream && result.rest < bytes.length) this.#pending = bytes.slice(result.rest);
    let text = result.text;
    if (!this.#bomDone && text.length > 0) {
      this.#bomDone = true;
      if (!this.#ignoreBOM && text.charCodeAt(0) === 0xfeff) text = text.slice(1);
    }
    if (!stream) {
      this.#bomDone = false;
      this.#pending = null;
    }
    return text;
  }
  get [Symbol.toStringTag]() {
    return "TextDecoder";
  }
}

// ---------------------------------------------------------------- base64

export function bytesToBase64(bytes) {
  return toBase64(bytes);
}

export function base64ToBytes(text) {
  return fromBase64(text);
}
