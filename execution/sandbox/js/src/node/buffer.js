// node:buffer: the npm `buffer` package (Node's Buffer as a library). Its last release predates the
// "base64url" encoding (Node 15); that one encoding is added here on top of its base64 code.
import bufferModule from "buffer";

const { Buffer } = bufferModule;
const isUrl = (encoding) => typeof encoding === "string" && encoding.toLowerCase() === "base64url";
const toUrl = (b64) => b64.replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
// The package's base64 decoder already reads "-" and "_"; it needs the padding back.
const fromUrl = (text) => {
  const clean = String(text).replace(/[^A-Za-z0-9\-_+/]/g, "");
  return clean + "=".repeat((4 - (clean.length % 4)) % 4);
};

const from = Buffer.from;
Buffer.from = function (value, encodingOrOffset, length) {
  if (typeof value === "string" && isUrl(encodingOrOffset)) return from.call(this, fromUrl(value), "base64");
  return from.call(this, value, encodingOrOffset, length);
};
const toString = Buffer.prototype.toString;
Buffer.prototype.toString = function (encoding, start, end) {
  if (isUrl(encoding)) return toUrl(toString.call(this, "base64", start, end));
  return toString.apply(this, arguments);
};
const byteLength = Buffer.byteLength;
Buffer.byteLength = function (value, encoding) {
  if (typeof value === "string" && isUrl(encoding)) return byteLength.call(this, fromUrl(value), "base64");
  return byteLength.call(this, value, encoding);
};
const isEncoding = Buffer.isEncoding;
Buffer.isEncoding = (encoding) => isUrl(encoding) || isEncoding(encoding);
const write = Buffer.prototype.write;
Buffer.prototype.write = function (string, offset, length, encoding) {
  const args = [...arguments];
  const at = args.findIndex((a) => isUrl(a));
  if (at > 0) {
    args[0] = fromUrl(string);
    args[at] = "base64";
  }
  return write.apply(this, args);
};

export default bufferModule;
