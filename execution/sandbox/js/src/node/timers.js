// node:timers and node:timers/promises on the runtime's timers (the globals the runtime installs;
// setImmediate falls back to a zero-delay timeout where the runtime has none).
function abortError(signal) {
  const error = new Error("The operation was aborted");
  error.name = "AbortError";
  error.code = "ABORT_ERR";
  error.cause = signal.reason;
  return error;
}

const g = globalThis;
const setTimeoutFn = g.setTimeout;
const clearTimeoutFn = g.clearTimeout;
const setImmediateFn = typeof g.setImmediate === "function" ? g.setImmediate : (fn, ...args) => setTimeoutFn(fn, 0, ...args);
const clearImmediateFn = typeof g.clearImmediate === "function" ? g.clearImmediate : clearTimeoutFn;

export const timers = {
  setTimeout: setTimeoutFn,
  clearTimeout: clearTimeoutFn,
  setInterval: g.setInterval,
  clearInterval: g.clearInterval,
  setImmediate: setImmediateFn,
  clearImmediate: clearImmediateFn,
};

function delayed(schedule, cancel, value, options) {
  const signal = options && options.signal;
  return new Promise((resolve, reject) => {
    if (signal && signal.aborted) return reject(abortError(signal));
    const onAbort = () => {
      cancel(id);
      reject(abortError(signal));
    };
    const id = schedule(() => {
      if (signal) signal.removeEventListener("abort", onAbort);
      resolve(value);
    });
    if (signal) signal.addEventListener("abort", onAbort, { once: true });
  });
}

export const promises = {
  setTimeout: (delay = 1, value = undefined, options = undefined) =>
    delayed((fn) => setTimeoutFn(fn, delay), clearTimeoutFn, value, options),
  setImmediate: (value = undefined, options = undefined) =>
    delayed((fn) => setImmediateFn(fn), clearImmediateFn, value, options),
  scheduler: {
    wait: (delay, options = undefined) => delayed((fn) => setTimeoutFn(fn, delay), clearTimeoutFn, undefined, options),
    yield: () => delayed((fn) => setImmediateFn(fn), clearImmediateFn, undefined, undefined),
  },
};
