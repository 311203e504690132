// WHATWG streams (web-streams-polyfill, the reference implementation's port), TextEncoderStream and
// TextDecoderStream, and the runtime's private stream plumbing for fetch bodies. Evaluated lazily
// (web/modules.js): the first use of a stream global, or a fetch body used as a stream, loads it.
//
// The stream methods the runtime itself calls are captured here, when this module is evaluated and
// before any bundle code can see these classes, so a bundle that replaces
// ReadableStream.prototype.getReader or reader.read only changes what its own code sees. Bytes that
// leave for the host are checked again by the caller (runtime.js) with intrinsics captured at startup.
import {
  ByteLengthQueuingStrategy,
  CountQueuingStrategy,
  ReadableByteStreamController,
  ReadableStream,
  ReadableStreamBYOBReader,
  ReadableStreamBYOBRequest,
  ReadableStreamDefaultController,
  ReadableStreamDefaultReader,
  TransformStream,
  TransformStreamDefaultController,
  WritableStream,
  WritableStreamDefaultController,
  WritableStreamDefaultWriter,
} from "web-streams-polyfill";
import {
  ArrayPush,
  MathMin,
  ObjectGetOwnPropertyDescriptor,
  PromiseCtor,
  PromiseThen,
  ReflectApply,
  StringCharCodeAt,
  StringCtor,
  StringSlice,
  TypeErrorCtor,
  TypedArraySet,
  TypedArraySlice,
  TypedArraySubarray,
  Uint8ArrayCtor,
  WeakMapCtor,
  WeakMapGet,
  WeakMapSet,
  isUint8Array,
  list,
  typedArrayLength,
} from "../intrinsics.js";
import { TextDecoder, toBytes, utf8Decode, utf8Encode } from "./encoding.js";
import { loaded } from "./lazy.js";

const RS = ReadableStream;
const getReader = RS.prototype.getReader;
const streamCancel = RS.prototype.cancel;
const streamTee = RS.prototype.tee;
const lockedGetter = ObjectGetOwnPropertyDescriptor(RS.prototype, "locked").get;
const streamFrom = RS.from;
const readerRead = ReadableStreamDefaultReader.prototype.read;
const readerCancel = ReadableStreamDefaultReader.prototype.cancel;
const readerRelease = ReadableStreamDefaultReader.prototype.releaseLock;
const byteEnqueue = ReadableByteStreamController.prototype.enqueue;
const byteClose = ReadableByteStreamController.prototype.close;
const byteError = ReadableByteStreamController.prototype.error;
const byobRequestGetter = ObjectGetOwnPropertyDescriptor(ReadableByteStreamController.prototype, "byobRequest").get;
const byobRespond = ReadableStreamBYOBRequest.prototype.respond;
const transformEnqueue = TransformStreamDefaultController.prototype.enqueue;
const transformReadable = ObjectGetOwnPropertyDescriptor(TransformStream.prototype, "readable").get;
const transformWritable = ObjectGetOwnPropertyDescriptor(TransformStream.prototype, "writable").get;

// Chunk size of body streams made from bytes (what Blob.stream() and browsers use too).
const CHUNK_BYTES = 65536;

// ---------------------------------------------------------------- private plumbing for fetch bodies

// Whether `value` is one of this module's ReadableStreams (the `locked` getter checks the slot).
function isReadableStream(value) {
  try {
    ReflectApply(lockedGetter, value, []);
    return true;
  } catch {
    return false;
  }
}

function streamLocked(stream) {
  return ReflectApply(lockedGetter, stream, []);
}

// Disturbed: read from or cancelled (the polyfill's own field, which the standard calls [[disturbed]]).
function streamDisturbed(stream) {
  return stream._disturbed === true;
}

function teeStream(stream) {
  const pair = ReflectApply(streamTee, stream, []);
  return [pair[0], pair[1]];
}

function cancelStream(stream, reason) {
  try {
    PromiseThen(ReflectApply(streamCancel, stream, [reason]), undefined, () => {});
  } catch {
    // locked: the reader's owner cancels it
  }
}

// A stream over anything else a body may be: another implementation's stream (getReader) or an
// async iterable (undici accepts both).
function streamFromIterable(value) {
  return ReflectApply(streamFrom, RS, [value]);
}

const errorers = new WeakMapCtor(); // stream made by bytesStream -> (reason) => errors it if still open

// A byte stream over private bytes, handed out in copies of CHUNK_BYTES (a byte stream transfers
// the buffers it is given, and the bytes stay the body's own).
function bytesStream(bytes) {
  let offset = 0;
  let open = true;
  let controller = null;
  const total = typedArrayLength(bytes);
  const stream = new RS(
    {
      type: "bytes",
      start(c) {
        controller = c;
        if (total === 0) {
          open = false;
          ReflectApply(byteClose, c, []);
        }
      },
      pull(c) {
        const end = MathMin(offset + CHUNK_BYTES, total);
        const request = ReflectApply(byobRequestGetter, c, []);
        if (request !== null && request !== undefined) {
          // A BYOB reader: fill its view (the polyfill checks the view is its own).
          const view = request.view;
          const n = MathMin(end - offset, view.byteLength);
          TypedArraySet(new Uint8ArrayCtor(view.buffer, view.byteOffset, n), TypedArraySubarray(bytes, offset, offset + n));
          offset += n;
          ReflectApply(byobRespond, request, [n]);
        } else {
          ReflectApply(byteEnqueue, c, [TypedArraySlice(bytes, offset, end)]);
          offset = end;
        }
        if (offset >= total) {
          open = false;
          ReflectApply(byteClose, c, []);
        }
      },
      cancel() {
        open = false;
      },
    },
    { highWaterMark: 0 },
  );
  WeakMapSet(errorers, stream, (reason) => {
    if (!open) return;
    open = false;
    try {
      ReflectApply(byteError, controller, [reason]);
    } catch {
      // already closed or errored
    }
  });
  return stream;
}

// What is left of a body read without a stream: an empty stream, disturbed and locked.
function consumedStream() {
  const stream = bytesStream(new Uint8ArrayCtor(0));
  const reader = ReflectApply(getReader, stream, []);
  PromiseThen(ReflectApply(readerRead, reader, []), undefined, () => {});
  return stream;
}

// Errors a body stream made by bytesStream that has not delivered all its bytes (an aborted fetch).
function errorBytesStream(stream, reason) {
  const error = WeakMapGet(errorers, stream);
  if (error !== undefined) error(reason);
}

// Reads a stream to its end into one private Uint8Array. Every chunk must be a genuine Uint8Array
// (checked by its internal slot) and is copied as it arrives; past `limit` bytes (when >= 0) the
// stream is cancelled and the promise rejects with `tooLarge()`. `stop` gets a function that
// cancels the read with a reason (an aborted signal).
function readAllBytes(stream, limit, tooLarge, stop) {
  return new PromiseCtor((resolve, reject) => {
    const reader = ReflectApply(getReader, stream, []);
    const chunks = list();
    let total = 0;
    let finished = false;
    const fail = (error, cancel) => {
      if (finished) return;
      finished = true;
      if (cancel) {
        try {
          PromiseThen(ReflectApply(readerCancel, reader, [error]), undefined, () => {});
        } catch {
          // the reader was released by bundle code
        }
      }
      reject(error);
    };
    if (stop) stop((reason) => fail(reason, true));
    const step = () => {
      let pending;
      try {
        pending = ReflectApply(readerRead, reader, []);
      } catch (error) {
        fail(error, false);
        return;
      }
      PromiseThen(
        pending,
        (result) => {
          if (finished) return;
          if (result.done === true) {
            finished = true;
            try {
              ReflectApply(readerRelease, reader, []);
            } catch {
              // released already
            }
            resolve(concatBytes(chunks, total));
            return;
          }
          const chunk = result.value;
          if (!isUint8Array(chunk)) {
            fail(new TypeErrorCtor("a body stream chunk is not a Uint8Array"), true);
            return;
          }
          total += typedArrayLength(chunk);
          if (limit >= 0 && total > limit) {
            fail(tooLarge(), true);
            return;
          }
          ArrayPush(chunks, new Uint8ArrayCtor(chunk));
          step();
        },
        (error) => fail(error, false),
      );
    };
    step();
  });
}

function concatBytes(chunks, total) {
  if (chunks.length === 1) return chunks[0];
  const out = new Uint8ArrayCtor(total);
  let at = 0;
  for (let i = 0; i < chunks.length; i++) {
    TypedArraySet(out, chunks[i], at);
    at += typedArrayLength(chunks[i]);
  }
  return out;
}

// ---------------------------------------------------------------- TextEncoderStream, TextDecoderStream

// Thin wrappers on TransformStream and the runtime's UTF-8 coder, as the Encoding standard defines
// them. The streaming decode (a multi-byte sequence split across chunks) is done here rather than
// through TextDecoder's `stream` option, so these stay independent of web/encoding.js.

const ENCODER_STREAM = new WeakMapCtor();
const DECODER_STREAM = new WeakMapCtor();

function own(map, self, name) {
  const state = WeakMapGet(map, self);
  if (state === undefined) throw new TypeErrorCtor(`Illegal invocation: not a ${name}`);
  return state;
}

class TextEncoderStream {
  constructor() {
    let pendingHigh = "";
    const transform = new TransformStream({
      transform(chunk, controller) {
        let text = pendingHigh + StringCtor(chunk);
        pendingHigh = "";
        const last = text.length > 0 ? StringCharCodeAt(text, text.length - 1) : 0;
        if (last >= 0xd800 && last <= 0xdbff) {
          pendingHigh = StringSlice(text, text.length - 1);
          text = StringSlice(text, 0, text.length - 1);
        }
        if (text.length > 0) ReflectApply(transformEnqueue, controller, [utf8Encode(text)]);
      },
      flush(controller) {
        if (pendingHigh !== "") ReflectApply(transformEnqueue, controller, [new Uint8ArrayCtor([0xef, 0xbf, 0xbd])]);
      },
    });
    WeakMapSet(ENCODER_STREAM, this, transform);
  }
  get encoding() {
    own(ENCODER_STREAM, this, "TextEncoderStream");
    return "utf-8";
  }
  get readable() {
    return ReflectApply(transformReadable, own(ENCODER_STREAM, this, "TextEncoderStream"), []);
  }
  get writable() {
    return ReflectApply(transformWritable, own(ENCODER_STREAM, this, "TextEncoderStream"), []);
  }
  get [Symbol.toStringTag]() {
    return "TextEncoderStream";
  }
}

// How many bytes at the end of `bytes` start a UTF-8 sequence that the next chunk may complete.
function incompleteTail(bytes) {
  const n = typedArrayLength(bytes);
  for (let k = 1; k <= 3 && k <= n; k++) {
    const b = bytes[n - k];
    if ((b & 0xc0) === 0x80) continue;
    const need = b >= 0xf0 && b < 0xf5 ? 4 : b >= 0xe0 && b < 0xf0 ? 3 : b >= 0xc2 && b < 0xe0 ? 2 : 1;
    return need > k ? k : 0;
  }
  return 0;
}

const isBOM = (bytes) =>
  typedArrayLength(bytes) >= 3 && bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf;

class TextDecoderStream {
  constructor(label = "utf-8", options = undefined) {
    const l = StringCtor(label).trim().toLowerCase();
    const fatal = Boolean(options && options.fatal);
    const ignoreBOM = Boolean(options && options.ignoreBOM);
    if (l !== "utf-8" && l !== "utf8" && l !== "unicode-1-1-utf-8") {
      // Another encoding: whatever the runtime's TextDecoder decodes (it throws RangeError for
      // what it does not), through its own `stream` option.
      const decoder = new TextDecoder(label, options);
      const transform = new TransformStream({
        transform(chunk, controller) {
          const text = decoder.decode(chunk, { stream: true });
          if (text !== "") ReflectApply(transformEnqueue, controller, [text]);
        },
        flush(controller) {
          const text = decoder.decode();
          if (text !== "") ReflectApply(transformEnqueue, controller, [text]);
        },
      });
      WeakMapSet(DECODER_STREAM, this, { __proto__: null, transform, fatal, ignoreBOM, encoding: decoder.encoding });
      return;
    }
    let pending = new Uint8ArrayCtor(0);
    let started = false;
    // utf8Decode drops a leading BOM; only the stream's first bytes may lose one.
    const decode = (bytes) => {
      const keepBOM = isBOM(bytes) && (started || ignoreBOM);
      started = true;
      return (keepBOM ? "\ufeff" : "") + utf8Decode(bytes, fatal);
    };
    const transform = new TransformStream({
      transform(chunk, controller) {
        const view = toBytes(chunk);
        if (!view) throw new TypeErrorCtor("TextDecoderStream: a chunk must be an ArrayBuffer or a view");
        let bytes = view;
        const held = typedArrayLength(pending);
        if (held > 0) {
          bytes = new Uint8ArrayCtor(held + typedArrayLength(view));
          TypedArraySet(bytes, pending);
          TypedArraySet(bytes, view, held);
        }
        const tail = incompleteTail(bytes);
        const end = typedArrayLength(bytes) - tail;
        pending = TypedArraySlice(bytes, end);
        if (end === 0) return;
        const text = decode(TypedArraySubarray(bytes, 0, end));
        if (text !== "") ReflectApply(transformEnqueue, controller, [text]);
      },
      flush(controller) {
        if (typedArrayLength(pending) === 0) return;
        const text = decode(pending);
        pending = new Uint8ArrayCtor(0);
        if (text !== "") ReflectApply(transformEnqueue, controller, [text]);
      },
    });
    WeakMapSet(DECODER_STREAM, this, { __proto__: null, transform, fatal, ignoreBOM, encoding: "utf-8" });
  }
  get encoding() {
    return own(DECODER_STREAM, this, "TextDecoderStream").encoding;
  }
  get fatal() {
    return own(DECODER_STREAM, this, "TextDecoderStream").fatal;
  }
  get ignoreBOM() {
    return own(DECODER_STREAM, this, "TextDecoderStream").ignoreBOM;
  }
  get readable() {
    return ReflectApply(transformReadable, own(DECODER_STREAM, this, "TextDecoderStream").transform, []);
  }
  get writable() {
    return ReflectApply(transformWritable, own(DECODER_STREAM, this, "TextDecoderStream").transform, []);
  }
  get [Symbol.toStringTag]() {
    return "TextDecoderStream";
  }
}

// The globals this module provides (web/modules.js installs them lazily).
const STREAM_GLOBALS = {
  __proto__: null,
  ReadableStream,
  ReadableStreamDefaultReader,
  ReadableStreamBYOBReader,
  ReadableStreamBYOBRequest,
  ReadableByteStreamController,
  ReadableStreamDefaultController,
  WritableStream,
  WritableStreamDefaultWriter,
  WritableStreamDefaultController,
  TransformStream,
  TransformStreamDefaultController,
  ByteLengthQueuingStrategy,
  CountQueuingStrategy,
  TextEncoderStream,
  TextDecoderStream,
};

loaded.streams = {
  __proto__: null,
  globals: STREAM_GLOBALS,
  ReadableStream,
  isReadableStream,
  streamLocked,
  streamDisturbed,
  teeStream,
  cancelStream,
  streamFromIterable,
  bytesStream,
  consumedStream,
  errorBytesStream,
  readAllBytes,
};
