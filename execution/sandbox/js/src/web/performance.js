// The `performance` global: now() and timeOrigin from QuickJS-NG's own clock (runner.c gives the
// jail its time), and the User Timing basics (mark, measure, getEntries*) some libraries call.
// Hand-written: it is a few lines over the engine's clock, and no npm polyfill is smaller.
const native = globalThis.performance;
const now = native.now.bind(native);
const timeOrigin = native.timeOrigin;

let entries = [];

class PerformanceEntry {
  constructor(name, entryType, startTime, duration, detail) {
    this.name = name;
    this.entryType = entryType;
    this.startTime = startTime;
    this.duration = duration;
    this.detail = detail === undefined ? null : detail;
  }
  toJSON() {
    return { name: this.name, entryType: this.entryType, startTime: this.startTime, duration: this.duration, detail: this.detail };
  }
}

function markTime(value) {
  if (typeof value === "number") return value;
  for (let i = entries.length - 1; i >= 0; i--) if (entries[i].entryType === "mark" && entries[i].name === value) return entries[i].startTime;
  throw new DOMException(`The mark '${value}' does not exist.`, "SyntaxError");
}

export const performanceObject = {
  now,
  timeOrigin,
  mark(name, options = undefined) {
    const startTime = options && options.startTime !== undefined ? Number(options.startTime) : now();
    const entry = new PerformanceEntry(String(name), "mark", startTime, 0, options ? options.detail : undefined);
    entries.push(entry);
    return entry;
  },
  measure(name, startOrOptions = undefined, endMark = undefined) {
    let start = 0;
    let end;
    let detail;
    if (startOrOptions !== null && typeof startOrOptions === "object") {
      detail = startOrOptions.detail;
      if (startOrOptions.start !== undefined) start = markTime(startOrOptions.start);
      if (startOrOptions.end !== undefined) end = markTime(startOrOptions.end);
      else if (startOrOptions.duration !== undefined) end = start + Number(startOrOptions.duration);
    } else if (startOrOptions !== undefined) start = markTime(String(startOrOptions));
    if (endMark !== undefined) end = markTime(String(endMark));
    if (end === undefined) end = now();
    const entry = new PerformanceEntry(String(name), "measure", start, end - start, detail);
    entries.push(entry);
    return entry;
  },
  getEntries() {
    return entries.slice();
  },
  getEntriesByName(name, type = undefined) {
    return entries.filter((e) => e.name === String(name) && (type === undefined || e.entryType === type));
  },
  getEntriesByType(type) {
    return entries.filter((e) => e.entryType === String(type));
  },
  clearMarks(name = undefined) {
    entries = entries.filter((e) => e.entryType !== "mark" || (name !== undefined && e.name !== String(name)));
  },
  clearMeasures(name = undefined) {
    entries = entries.filter((e) => e.entryType !== "measure" || (name !== undefined && e.name !== String(name)));
  },
  toJSON() {
    return { timeOrigin };
  },
};
