// Blob and File (fetch-blob), FormData and its multipart encoding (formdata-polyfill), and the
// parsing of form bodies for Response/Request.formData(). Evaluated lazily (web/modules.js).
//
// fetch-blob's entry starts with a top-level await that imports node:process and node:stream/web
// when no ReadableStream global exists; the runtime build drops that preamble (build.mjs), since
// ReadableStream is always a (lazy) global here. Its Blob.text() decodes part by part with
// TextDecoder's `stream` option; it is replaced below by one decode of the whole blob, so it is
// right whatever TextDecoder does with that option. The body parsers are written here: no
// installed library parses multipart/form-data without Node.
import { Blob as FetchBlob } from "fetch-blob";
import { File as FetchFile } from "fetch-blob/file.js";
import { FormData, formDataToBlob } from "formdata-polyfill/esm.min.js";
import {
  ObjectDefineProperty,
  ObjectGetOwnPropertyDescriptor,
  PromiseThen,
  ReflectApply,
  StringIndexOf,
  StringSlice,
  TypeErrorCtor,
  TypedArraySubarray,
  Uint8ArrayCtor,
  isArrayBuffer,
  typedArrayLength,
} from "../intrinsics.js";
import { utf8Decode } from "./encoding.js";
import { loaded } from "./lazy.js";

// The File API lowercases a type (fetch-blob keeps it as given); the rest is the library's.
const lowerType = (options) =>
  options !== null && typeof options === "object" && typeof options.type === "string"
    ? { ...options, type: options.type.toLowerCase() }
    : options;

class Blob extends FetchBlob {
  constructor(blobParts = [], options = {}) {
    super(blobParts, lowerType(options));
  }
}

class File extends FetchFile {
  constructor(fileBits, fileName, options = {}) {
    if (arguments.length < 2) {
      throw new TypeErrorCtor(`Failed to construct 'File': 2 arguments required, but only ${arguments.length} present.`);
    }
    super(fileBits, fileName, lowerType(options));
  }
}

const blobArrayBuffer = FetchBlob.prototype.arrayBuffer;
const blobSize = ObjectGetOwnPropertyDescriptor(FetchBlob.prototype, "size").get;
const blobType = ObjectGetOwnPropertyDescriptor(FetchBlob.prototype, "type").get;
const formDataHas = FormData.prototype.has;
const formDataAppend = FormData.prototype.append;

ObjectDefineProperty(FetchBlob.prototype, "text", {
  value: function text() {
    return PromiseThen(ReflectApply(blobArrayBuffer, this, []), (buffer) => utf8Decode(new Uint8ArrayCtor(buffer)));
  },
  writable: true,
  enumerable: true,
  configurable: true,
});

// Whether `value` is one of our Blobs (the size getter reads a private field).
function isBlob(value) {
  try {
    ReflectApply(blobSize, value, []);
    return true;
  } catch {
    return false;
  }
}

function isFormData(value) {
  try {
    ReflectApply(formDataHas, value, [""]);
    return true;
  } catch {
    return false;
  }
}

// A Blob's bytes (a promise of a Uint8Array) and its type.
function blobBytes(blob) {
  return PromiseThen(ReflectApply(blobArrayBuffer, blob, []), (buffer) => {
    if (!isArrayBuffer(buffer)) throw new TypeErrorCtor("a Blob body did not read as an ArrayBuffer");
    return new Uint8ArrayCtor(buffer);
  });
}

function blobTypeOf(blob) {
  return ReflectApply(blobType, blob, []);
}

// FormData as a multipart/form-data Blob (its type carries the boundary).
function formDataBlob(formData) {
  return formDataToBlob(formData, Blob);
}

// ---------------------------------------------------------------- parsing form bodies

function parseUrlEncoded(text, URLSearchParams) {
  const form = new FormData();
  for (const [name, value] of new URLSearchParams(text)) ReflectApply(formDataAppend, form, [name, value]);
  return form;
}

function boundaryOf(contentType) {
  const match = /;\s*boundary=(?:"([^"]+)"|([^;\s]+))/i.exec(contentType);
  return match ? match[1] || match[2] : null;
}

function indexOfBytes(haystack, needle, from) {
  const n = typedArrayLength(haystack);
  const m = typedArrayLength(needle);
  outer: for (let i = from; i + m <= n; i++) {
    for (let j = 0; j < m; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

function asciiBytes(text) {
  const out = new Uint8ArrayCtor(text.length);
  for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i) & 0xff;
  return out;
}

// The disposition parameters of one part's headers (quoted values; %22 and friends as browsers
// and formdata-polyfill escape them).
function dispositionParam(headers, name) {
  const match = new RegExp(`;\\s*${name}="([^"]*)"`, "i").exec(headers);
  if (!match) return null;
  return match[1].replace(/%22/g, '"').replace(/%0D/g, "\r").replace(/%0A/g, "\n");
}

function parseMultipart(bytes, contentType) {
  const boundary = boundaryOf(contentType);
  if (boundary === null) throw new TypeErrorCtor("Failed to parse body as FormData: no multipart boundary");
  const delimiter = asciiBytes("--" + boundary);
  const form = new FormData();
  let at = indexOfBytes(bytes, delimiter, 0);
  if (at < 0) throw new TypeErrorCtor("Failed to parse body as FormData");
  const total = typedArrayLength(bytes);
  for (;;) {
    at += typedArrayLength(delimiter);
    if (bytes[at] === 0x2d && bytes[at + 1] === 0x2d) return form; // the closing delimiter
    if (bytes[at] === 0x0d && bytes[at + 1] === 0x0a) at += 2;
    else throw new TypeErrorCtor("Failed to parse body as FormData");
    const headerEnd = indexOfBytes(bytes, asciiBytes("\r\n\r\n"), at);
    if (headerEnd < 0) throw new TypeErrorCtor("Failed to parse body as FormData");
    const headers = utf8Decode(TypedArraySubarray(bytes, at, headerEnd));
    const bodyStart = headerEnd + 4;
    const next = indexOfBytes(bytes, asciiBytes("\r\n--" + boundary), bodyStart);
    if (next < 0 || next > total) throw new TypeErrorCtor("Failed to parse body as FormData");
    const body = TypedArraySubarray(bytes, bodyStart, next);
    const name = dispositionParam(headers, "name");
    if (name === null) throw new TypeErrorCtor("Failed to parse body as FormData: a part has no name");
    const filename = dispositionParam(headers, "filename");
    if (filename === null) {
      ReflectApply(formDataAppend, form, [name, utf8Decode(body)]);
    } else {
      const typeAt = /^content-type:\s*([^\r\n]*)/im.exec(headers);
      const type = typeAt ? typeAt[1].trim() : "application/octet-stream";
      ReflectApply(formDataAppend, form, [name, new File([new Uint8ArrayCtor(body)], filename, { type })]);
    }
    at = next + 2;
  }
}

// Response/Request.formData(): the body's bytes parsed by its Content-Type.
function parseFormBody(bytes, contentType, URLSearchParams) {
  const type = contentType === null ? "" : contentType;
  const essence = StringSlice(type, 0, StringIndexOf(type, ";") < 0 ? type.length : StringIndexOf(type, ";"))
    .trim()
    .toLowerCase();
  if (essence === "multipart/form-data") return parseMultipart(bytes, type);
  if (essence === "application/x-www-form-urlencoded") return parseUrlEncoded(utf8Decode(bytes), URLSearchParams);
  throw new TypeErrorCtor('Content-Type was not one of "multipart/form-data" or "application/x-www-form-urlencoded".');
}

loaded.blob = {
  __proto__: null,
  globals: { __proto__: null, Blob, File, FormData },
  isBlob,
  isFormData,
  blobBytes,
  blobTypeOf,
  formDataBlob,
  parseFormBody,
};
