// Loaders of the lazily evaluated web modules, and the lazy globals they back (see lazy.js).
import { lazyGlobals, loaded } from "./lazy.js";

// Each returns the module's private exports, evaluating it on first use; null while it is being
// evaluated (a module that reads its own lazy globals as it loads finds them absent).
const evaluating = { __proto__: null, streams: false, events: false, blob: false };

function evaluate(key, run) {
  if (loaded[key] === null && !evaluating[key]) {
    evaluating[key] = true;
    try {
      run();
    } finally {
      evaluating[key] = false;
    }
  }
  return loaded[key];
}

export function streamsModule() {
  return evaluate("streams", () => require("./streams.js"));
}

export function eventsModule() {
  return evaluate("events", () => require("./events.js"));
}

export function blobModule() {
  return evaluate("blob", () => require("./blob.js"));
}

const globalsOf = (module) => (module === null ? null : module.globals);

// The globals each module provides, by name (kept here so installing them loads nothing).
const STREAM_NAMES = [
  "ReadableStream",
  "ReadableStreamDefaultReader",
  "ReadableStreamBYOBReader",
  "ReadableStreamBYOBRequest",
  "ReadableByteStreamController",
  "ReadableStreamDefaultController",
  "WritableStream",
  "WritableStreamDefaultWriter",
  "WritableStreamDefaultController",
  "TransformStream",
  "TransformStreamDefaultController",
  "ByteLengthQueuingStrategy",
  "CountQueuingStrategy",
  "TextEncoderStream",
  "TextDecoderStream",
];
const EVENT_NAMES = ["Event", "EventTarget", "CustomEvent", "AbortController", "AbortSignal"];
const BLOB_NAMES = ["Blob", "File", "FormData"];

export function installLazyGlobals() {
  lazyGlobals(STREAM_NAMES, () => globalsOf(streamsModule()));
  lazyGlobals(EVENT_NAMES, () => globalsOf(eventsModule()));
  lazyGlobals(BLOB_NAMES, () => globalsOf(blobModule()));
}

