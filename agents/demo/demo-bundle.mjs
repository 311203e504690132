// lightfast.config.ts compiled with esbuild (format esm, target es2022, packages external)
// The demo bundle of Lightfast Cloud: one "assistant" agent with deterministic tools,
// so the first chat on a fresh install works without any network access.
import { createLightfast } from "lightfast/client";
import { createAgent } from "lightfast/agent";
import { createTool } from "lightfast/tool";
import { gateway } from "@ai-sdk/gateway";
import { stepCountIs } from "ai";
import { z } from "zod";

// src/lib/expression.ts
function tokenize(source) {
  const tokens = [];
  let i = 0;
  while (i < source.length) {
    const ch = source[i];
    if (ch === " " || ch === "\t") {
      i++;
      continue;
    }
    if (/[0-9.]/.test(ch)) {
      let j = i;
      while (j < source.length && /[0-9._eE]/.test(source[j])) {
        if ((source[j] === "e" || source[j] === "E") && /[+-]/.test(source[j + 1] ?? "")) j++;
        j++;
      }
      const value = Number(source.slice(i, j).replaceAll("_", ""));
      if (!Number.isFinite(value)) throw new Error(`Invalid number "${source.slice(i, j)}" at ${i + 1}`);
      tokens.push({ kind: "num", value, at: i });
      i = j;
      continue;
    }
    if (/[a-z]/i.test(ch)) {
      let j = i;
      while (j < source.length && /[a-z0-9]/i.test(source[j])) j++;
      tokens.push({ kind: "name", value: source.slice(i, j).toLowerCase(), at: i });
      i = j;
      continue;
    }
    if ("+-*/%^(),".includes(ch)) {
      tokens.push({ kind: "op", value: ch, at: i });
      i++;
      continue;
    }
    throw new Error(`Unexpected character "${ch}" at ${i + 1}`);
  }
  return tokens;
}
var CONSTANTS = { pi: Math.PI, e: Math.E, tau: 2 * Math.PI };
var FUNCTIONS = {
  sqrt: Math.sqrt, abs: Math.abs, round: Math.round, floor: Math.floor, ceil: Math.ceil,
  sin: Math.sin, cos: Math.cos, tan: Math.tan, ln: Math.log, log: Math.log10, exp: Math.exp,
  min: Math.min, max: Math.max
};
function evaluate(source) {
  if (source.length > 500) throw new Error("Expression longer than 500 characters");
  const tokens = tokenize(source);
  let pos = 0;
  const peek = () => tokens[pos];
  const expect = (value) => {
    const token = tokens[pos++];
    if (!token || token.value !== value) throw new Error(`Expected "${value}"${token ? ` at ${token.at + 1}` : " at end"}`);
  };
  const primary = () => {
    const token = tokens[pos++];
    if (!token) throw new Error("Unexpected end of expression");
    if (token.kind === "num") return token.value;
    if (token.kind === "op" && token.value === "(") {
      const value = sum();
      expect(")");
      return value;
    }
    if (token.kind === "op" && (token.value === "-" || token.value === "+")) {
      const value = power();
      return token.value === "-" ? -value : value;
    }
    if (token.kind === "name") {
      if (token.value in CONSTANTS) return CONSTANTS[token.value];
      const fn = FUNCTIONS[token.value];
      if (!fn) throw new Error(`Unknown name "${token.value}"`);
      expect("(");
      const args = [sum()];
      while (peek()?.value === ",") {
        pos++;
        args.push(sum());
      }
      expect(")");
      return fn(...args);
    }
    throw new Error(`Unexpected "${token.value}" at ${token.at + 1}`);
  };
  const power = () => {
    const base = primary();
    if (peek()?.value === "^") {
      pos++;
      return base ** power();
    }
    return base;
  };
  const product = () => {
    let value = power();
    while (peek() && "*/%".includes(peek().value) && peek().kind === "op") {
      const op = tokens[pos++].value;
      const right = power();
      if ((op === "/" || op === "%") && right === 0) throw new Error("Division by zero");
      value = op === "*" ? value * right : op === "/" ? value / right : value % right;
    }
    return value;
  };
  const sum = () => {
    let value = product();
    while (peek() && (peek().value === "+" || peek().value === "-")) {
      const op = tokens[pos++].value;
      value = op === "+" ? value + product() : value - product();
    }
    return value;
  };
  const result = sum();
  if (pos !== tokens.length) throw new Error(`Unexpected "${tokens[pos].value}" at ${tokens[pos].at + 1}`);
  return result;
}

// src/tools/calculator.ts
var calculator = createTool({
  description: "Evaluate an arithmetic expression: + - * / % ^, parentheses, pi, e, sqrt, abs, round, floor, ceil, sin, cos, tan, ln, log, exp, min, max",
  inputSchema: z.object({
    expression: z.string().min(1).max(500).describe("For example: (2 + 3) * sqrt(16) / 4")
  }),
  outputSchema: z.object({ expression: z.string(), result: z.number() }),
  execute: async ({ expression }) => {
    const result = evaluate(expression);
    if (!Number.isFinite(result)) throw new Error("The result is not a finite number");
    return { expression, result: Math.round(result * 1e12) / 1e12 };
  }
});

// src/lib/zones.ts
var ZONES = {
  "UTC": { offset: 0, dst: null },
  "Europe/London": { offset: 0, dst: "eu" },
  "Europe/Lisbon": { offset: 0, dst: "eu" },
  "Europe/Paris": { offset: 60, dst: "eu" },
  "Europe/Berlin": { offset: 60, dst: "eu" },
  "Europe/Madrid": { offset: 60, dst: "eu" },
  "Europe/Rome": { offset: 60, dst: "eu" },
  "Europe/Amsterdam": { offset: 60, dst: "eu" },
  "Europe/Stockholm": { offset: 60, dst: "eu" },
  "Europe/Warsaw": { offset: 60, dst: "eu" },
  "Europe/Athens": { offset: 120, dst: "eu" },
  "Europe/Helsinki": { offset: 120, dst: "eu" },
  "Europe/Istanbul": { offset: 180, dst: null },
  "Africa/Lagos": { offset: 60, dst: null },
  "Africa/Nairobi": { offset: 180, dst: null },
  "Asia/Dubai": { offset: 240, dst: null },
  "Asia/Kolkata": { offset: 330, dst: null },
  "Asia/Singapore": { offset: 480, dst: null },
  "Asia/Shanghai": { offset: 480, dst: null },
  "Asia/Tokyo": { offset: 540, dst: null },
  "Australia/Brisbane": { offset: 600, dst: null },
  "America/New_York": { offset: -300, dst: "us" },
  "America/Chicago": { offset: -360, dst: "us" },
  "America/Denver": { offset: -420, dst: "us" },
  "America/Phoenix": { offset: -420, dst: null },
  "America/Los_Angeles": { offset: -480, dst: "us" },
  "America/Sao_Paulo": { offset: -180, dst: null }
};
function nthSunday(year, month, n) {
  const first = new Date(Date.UTC(year, month, 1)).getUTCDay();
  return 1 + (7 - first) % 7 + (n - 1) * 7;
}
function lastSunday(year, month) {
  const lastDay = new Date(Date.UTC(year, month + 1, 0));
  return lastDay.getUTCDate() - lastDay.getUTCDay();
}
function isDst(rule, utcMs, standardOffset) {
  const year = new Date(utcMs).getUTCFullYear();
  if (rule === "eu") {
    const start = Date.UTC(year, 2, lastSunday(year, 2), 1);
    const end = Date.UTC(year, 9, lastSunday(year, 9), 1);
    return utcMs >= start && utcMs < end;
  }
  if (rule === "us") {
    const start = Date.UTC(year, 2, nthSunday(year, 2, 2), 2) - standardOffset * 6e4;
    const end = Date.UTC(year, 10, nthSunday(year, 10, 1), 2) - (standardOffset + 60) * 6e4;
    return utcMs >= start && utcMs < end;
  }
  return false;
}
var pad = (n) => String(n).padStart(2, "0");

// src/tools/time.ts
var timeInZone = createTool({
  description: "The local date and time in a time zone, now or at a given instant",
  inputSchema: z.object({
    timeZone: z.enum(Object.keys(ZONES)).describe("IANA time zone name"),
    at: z.string().datetime({ offset: true }).optional().describe("ISO 8601 instant; default now")
  }),
  execute: async ({ timeZone, at }) => {
    const utcMs = at ? Date.parse(at) : Date.now();
    const zone = ZONES[timeZone];
    const offset = zone.offset + (zone.dst && isDst(zone.dst, utcMs, zone.offset) ? 60 : 0);
    const local = new Date(utcMs + offset * 6e4);
    const sign = offset < 0 ? "-" : "+";
    const abs = Math.abs(offset);
    const utcOffset = `${sign}${pad(Math.floor(abs / 60))}:${pad(abs % 60)}`;
    const days = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];
    return {
      timeZone,
      localTime: `${local.getUTCFullYear()}-${pad(local.getUTCMonth() + 1)}-${pad(local.getUTCDate())}T${pad(local.getUTCHours())}:${pad(local.getUTCMinutes())}:${pad(local.getUTCSeconds())}${utcOffset}`,
      weekday: days[local.getUTCDay()],
      utcOffset,
      daylightSaving: offset !== zone.offset
    };
  }
});

// src/tools/units.ts
var LINEAR_UNITS = {
  length: { m: 1, km: 1e3, cm: 0.01, mm: 1e-3, mi: 1609.344, yd: 0.9144, ft: 0.3048, in: 0.0254, nmi: 1852 },
  mass: { kg: 1, g: 1e-3, mg: 1e-6, t: 1e3, lb: 0.45359237, oz: 0.028349523125, st: 6.35029318 },
  volume: { l: 1, ml: 1e-3, m3: 1e3, gal: 3.785411784, qt: 0.946352946, pt: 0.473176473, cup: 0.2365882365, floz: 0.0295735295625 },
  speed: { "m/s": 1, "km/h": 1 / 3.6, mph: 0.44704, kn: 1852 / 3600 },
  data: { B: 1, KB: 1e3, MB: 1e6, GB: 1e9, KiB: 1024, MiB: 1048576, GiB: 1073741824 }
};
var TEMPERATURE = {
  C: { toK: (v) => v + 273.15, fromK: (k) => k - 273.15 },
  F: { toK: (v) => (v - 32) * 5 / 9 + 273.15, fromK: (k) => (k - 273.15) * 9 / 5 + 32 },
  K: { toK: (v) => v, fromK: (k) => k }
};
var convertUnits = createTool({
  description: "Convert a value between units of length, mass, volume, speed, data size or temperature (C, F, K)",
  inputSchema: z.object({
    value: z.number().finite(),
    from: z.string().min(1).describe("Unit symbol, e.g. km, lb, gal, mph, MiB, C"),
    to: z.string().min(1)
  }),
  execute: async ({ value, from, to }) => {
    if (from in TEMPERATURE && to in TEMPERATURE) {
      const result = TEMPERATURE[to].fromK(TEMPERATURE[from].toK(value));
      return { value, from, to, result: Math.round(result * 1e6) / 1e6, quantity: "temperature" };
    }
    for (const [quantity, units] of Object.entries(LINEAR_UNITS)) {
      if (from in units && to in units) {
        const result = value * units[from] / units[to];
        return { value, from, to, result: Number(result.toPrecision(12)), quantity };
      }
    }
    const known = [...Object.values(LINEAR_UNITS).flatMap((units) => Object.keys(units)), ...Object.keys(TEMPERATURE)];
    throw new Error(`Cannot convert ${from} to ${to}. Known units: ${known.join(", ")}`);
  }
});

// src/tools/text-stats.ts
var textStats = createTool({
  description: "Count characters, words, sentences and paragraphs of a text and estimate its reading time",
  inputSchema: z.object({ text: z.string().max(1e5) }),
  execute: async ({ text }) => {
    const words = text.match(/[\p{L}\p{N}][\p{L}\p{N}'’-]*/gu) ?? [];
    const sentences = text.split(/[.!?]+(?:\s|$)/).filter((s) => s.trim().length > 0);
    const paragraphs = text.split(/\n\s*\n/).filter((p) => p.trim().length > 0);
    const frequency = new Map();
    for (const word of words) {
      const key = word.toLowerCase();
      if (key.length > 3) frequency.set(key, (frequency.get(key) ?? 0) + 1);
    }
    const topWords = [...frequency.entries()].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0])).slice(0, 5).map(([word, count]) => ({ word, count }));
    return {
      characters: [...text].length,
      charactersWithoutSpaces: [...text.replace(/\s/g, "")].length,
      words: words.length,
      sentences: sentences.length,
      paragraphs: paragraphs.length,
      readingTimeSeconds: Math.ceil(words.length / 230 * 60),
      topWords
    };
  }
});

// src/agents/assistant.ts
var assistant = createAgent({
  name: "assistant",
  system: `You are the Lightfast Cloud demo assistant.
You can calculate, tell the time in a time zone, convert units and analyse text with your tools.
Use a tool whenever a question needs one, and answer in one or two sentences.`,
  model: gateway("openai/gpt-4o-mini"),
  tools: { calculator, timeInZone, convertUnits, textStats },
  stopWhen: stepCountIs(5),
  createRuntimeContext: ({ sessionId }) => ({ demo: true })
});

// lightfast.config.ts
var lightfast_config_default = createLightfast({
  agents: { assistant },
  metadata: { name: "lightfast-demo", version: "1.0.0", description: "Demo assistant: calculator, time zones, unit conversion, text statistics" }
});
export {
  lightfast_config_default as default
};
