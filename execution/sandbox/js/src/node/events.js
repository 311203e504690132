// node:events: the npm `events` package (Node's EventEmitter as a library), plus `on` (an async
// iterator over an emitter's events, added in Node 12: the package predates it).
import EventEmitter from "events";

function on(emitter, event, options = undefined) {
  const signal = options && options.signal;
  const queued = [];
  const waiting = [];
  let failure = null;
  let finished = false;
  const settle = () => {
    while (waiting.length > 0 && (queued.length > 0 || failure || finished)) {
      const { resolve, reject } = waiting.shift();
      if (queued.length > 0) resolve({ value: queued.shift(), done: false });
      else if (failure) {
        reject(failure);
        failure = null;
        finished = true;
      } else resolve({ value: undefined, done: true });
    }
  };
  const onEvent = (...args) => {
    queued.push(args);
    settle();
  };
  const onError = (error) => {
    failure = error;
    cleanup();
    settle();
  };
  const onAbort = () => {
    const error = new Error("The operation was aborted");
    error.name = "AbortError";
    error.code = "ABORT_ERR";
    error.cause = signal.reason;
    onError(error);
  };
  function cleanup() {
    emitter.removeListener(event, onEvent);
    if (event !== "error") emitter.removeListener("error", onError);
    if (signal) signal.removeEventListener("abort", onAbort);
  }
  emitter.on(event, onEvent);
  if (event !== "error") emitter.on("error", onError);
  if (signal) {
    if (signal.aborted) onAbort();
    else signal.addEventListener("abort", onAbort, { once: true });
  }
  return {
    next() {
      if (queued.length > 0) return Promise.resolve({ value: queued.shift(), done: false });
      if (failure) {
        const error = failure;
        failure = null;
        finished = true;
        return Promise.reject(error);
      }
      if (finished) return Promise.resolve({ value: undefined, done: true });
      return new Promise((resolve, reject) => waiting.push({ resolve, reject }));
    },
    return() {
      finished = true;
      cleanup();
      settle();
      return Promise.resolve({ value: undefined, done: true });
    },
    throw(error) {
      onError(error);
      return this.next();
    },
    [Symbol.asyncIterator]() {
      return this;
    },
  };
}

if (typeof EventEmitter.on !== "function") EventEmitter.on = on;
EventEmitter.EventEmitter = EventEmitter;
export default EventEmitter;
