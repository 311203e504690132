// node:url: the runtime's WHATWG URL and URLSearchParams with Node's file URL helpers (POSIX paths)
// and url.format for URL objects. The legacy url.parse is not offered: its quirks are Node's own
// parser's, and new URL() is what edge runtimes point to.
import { host } from "./host.js";

const { URL, URLSearchParams } = host;

function invalidFileUrl(message) {
  const error = new TypeError(message);
  error.code = "ERR_INVALID_FILE_URL_PATH";
  return error;
}

function fileURLToPath(input) {
  const url = typeof input === "string" ? new URL(input) : input;
  if (!(url instanceof URL) && typeof (url && url.href) !== "string") {
    const error = new TypeError('The "path" argument must be of type string or an instance of URL.');
    error.code = "ERR_INVALID_ARG_TYPE";
    throw error;
  }
  if (url.protocol !== "file:") {
    const error = new TypeError("The URL must be of scheme file");
    error.code = "ERR_INVALID_URL_SCHEME";
    throw error;
  }
  if (url.hostname !== "") throw invalidFileUrl('File URL host must be "localhost" or empty on linux');
  const pathname = url.pathname;
  if (/%2f/i.test(pathname)) throw invalidFileUrl("File URL path must not include encoded / characters");
  return decodeURIComponent(pathname);
}

// Node's pathToFileURL percent-encodes these besides what the URL parser encodes itself.
const EXTRA = { "%": "%25", "\\": "%5C", "\n": "%0A", "\r": "%0D", "\t": "%09", "#": "%23", "?": "%3F" };

function pathToFileURL(path) {
  let resolved = String(path);
  if (!resolved.startsWith("/")) resolved = "/" + resolved; // no working directory: relative to /
  const trailing = resolved.endsWith("/") && resolved.length > 1;
  const parts = resolved.split("/");
  const out = [];
  for (const part of parts) {
    if (part === "" || part === ".") continue;
    if (part === "..") out.pop();
    else out.push(part);
  }
  const clean = "/" + out.join("/") + (trailing && out.length > 0 ? "/" : "");
  const url = new URL("file://");
  url.pathname = clean.replace(/[%\\\n\r\t#?]/g, (c) => EXTRA[c]);
  return url;
}

function format(input, options = undefined) {
  if (input instanceof URL || (input && typeof input.href === "string" && typeof input.protocol === "string")) {
    const o = { auth: true, fragment: true, search: true, unicode: false, ...options };
    const url = new URL(input.href);
    if (!o.auth) {
      url.username = "";
      url.password = "";
    }
    if (!o.search) url.search = "";
    if (!o.fragment) url.hash = "";
    return url.href;
  }
  if (typeof input === "string") return input;
  const error = new TypeError("url.format in the sandbox takes a URL object (the legacy object form is not offered)");
  error.code = "ERR_INVALID_ARG_TYPE";
  throw error;
}

const urlModule = {
  URL,
  URLSearchParams,
  fileURLToPath,
  pathToFileURL,
  format,
  domainToASCII: (domain) => {
    try {
      return new URL(`http://${domain}`).hostname;
    } catch {
      return "";
    }
  },
};
export default urlModule;
