"""A generated bundle shaped like real Lightfast CLI output: ESM, 1–2 MB, a large inline source map,
imports of lightfast/*, zod and zod/v4, and an AI SDK provider inlined (model is an object)."""

from __future__ import annotations

import base64
import json

HEADER = """\
import { createLightfast } from "lightfast/client";
import { createAgent } from "lightfast/agent";
import { createTool } from "lightfast/tool";
import { z } from "zod";
import { z as z4 } from "zod/v4";
import { stepCountIs } from "ai";
"""

PROVIDER = """\
// node_modules/@ai-sdk/openai/dist/index.mjs
var OpenAIChatLanguageModel = class {
  constructor(modelId, config) {
    this.specificationVersion = "v2";
    this.modelId = modelId;
    this.config = config;
    this.supportedUrls = { "image/*": [/^https?:\\/\\/.*$/] };
  }
  get provider() {
    return this.config.provider;
  }
  async doGenerate(options) {
    const body = { model: this.modelId, messages: options.prompt };
    const response = await fetch(`${this.config.baseURL}/chat/completions`, {
      method: "POST", headers: this.config.headers(), body: JSON.stringify(body)
    });
    return { content: [{ type: "text", text: (await response.json()).choices[0].message.content }] };
  }
  async doStream(options) {
    throw new Error("streaming is done by the platform");
  }
};
function createOpenAI(options = {}) {
  const baseURL = options.baseURL ?? "https://api.openai.com/v1";
  const headers = () => ({ Authorization: `Bearer ${options.apiKey ?? process.env.OPENAI_API_KEY ?? ""}` });
  const provider = (modelId) =>
    new OpenAIChatLanguageModel(modelId, { provider: "openai.chat", baseURL, headers });
  provider.chat = provider;
  return provider;
}
var openai = createOpenAI();
"""

VENDOR_MODULE = """\
// node_modules/@lightfast-vendor/pkg{n}/dist/index.mjs
var pkg{n}_table = [{table}];
function pkg{n}_normalize(value, options = {{}}) {{
  if (value == null) return options.fallback ?? null;
  if (typeof value === "string") return value.trim().toLowerCase().replace(/\\s+/g, "-");
  if (Array.isArray(value)) return value.map((item) => pkg{n}_normalize(item, options));
  if (typeof value === "object") {{
    const out = {{}};
    for (const [key, item] of Object.entries(value)) out[key] = pkg{n}_normalize(item, options);
    return out;
  }}
  return value;
}}
function pkg{n}_checksum(text) {{
  let h = {n} >>> 0;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 16777619) >>> 0;
  return (h ^ pkg{n}_table[h % pkg{n}_table.length]) >>> 0;
}}
var pkg{n}_Client = class {{
  constructor(options = {{}}) {{
    this.options = {{ retries: 2, timeoutMs: 5000, ...options }};
    this.cache = new Map();
  }}
  key(parts) {{
    return parts.map((part) => pkg{n}_normalize(String(part))).join(":");
  }}
  remember(parts, value) {{
    const key = this.key(parts);
    this.cache.set(key, {{ value, checksum: pkg{n}_checksum(JSON.stringify(value ?? null)) }});
    return key;
  }}
}};
"""

TOOL_V3 = """\
// src/tools/tool-{n}.ts
var tool{n} = createTool({{
  description: "Look up record {n} in the catalogue and summarise it",
  inputSchema: z.object({{
    id: z.string().min(1).describe("Record id"),
    fields: z.array(z.enum(["title", "owner", "updatedAt", "tags"])).default(["title"]),
    limit: z.number().int().min(1).max(50).optional()
  }}),
  execute: async ({{ id, fields, limit = 5 }}, context) => {{
    const client = new pkg{m}_Client({{ session: context.sessionId }});
    const key = client.remember([id, ...fields], {{ id, fields, limit }});
    return {{ id, key, checksum: pkg{m}_checksum(key), fields, limit }};
  }}
}});
"""

TOOL_V4 = """\
// src/tools/tool-{n}.ts
var tool{n} = createTool({{
  description: "Compute statistics {n} for a series of numbers",
  inputSchema: z4.object({{
    values: z4.array(z4.number()).min(1).max(1000),
    round: z4.int().min(0).max(6).default(2)
  }}),
  outputSchema: z4.object({{ mean: z4.number(), min: z4.number(), max: z4.number() }}),
  execute: async ({{ values, round }}) => {{
    const f = 10 ** round;
    const mean = values.reduce((a, b) => a + b, 0) / values.length;
    return {{ mean: Math.round(mean * f) / f, min: Math.min(...values), max: Math.max(...values) }};
  }}
}});
"""

FOOTER = """\
// src/agents/research.ts
var researchAgent = createAgent({{
  name: "research",
  system: "You research records in the catalogue and answer with citations.",
  model: openai("gpt-4o"),
  tools: {{ {research_tools} }},
  stopWhen: stepCountIs(8)
}});

// src/agents/analyst.ts
var analystAgent = createAgent({{
  name: "analyst",
  system: "You compute statistics over the numbers the user gives you.",
  model: openai.chat("gpt-4o-mini"),
  tools: {{ {analyst_tools} }}
}});

// lightfast.config.ts
var lightfast_config_default = createLightfast({{
  agents: {{ research: researchAgent, analyst: analystAgent }},
  metadata: {{ name: "cli-shaped", version: "2.4.0", description: "Generated like Lightfast CLI output" }}
}});
export {{
  lightfast_config_default as default
}};
"""

RESEARCH_TOOLS = 6
ANALYST_TOOLS = 4


def cli_shaped_bundle(target_bytes: int = 1_500_000) -> bytes:
    """The bundle's bytes; about `target_bytes` long, more than half of it the inline source map."""
    code_target = target_bytes * 2 // 5
    parts = [HEADER, PROVIDER]
    n = 0
    while sum(len(part) for part in parts) < code_target:
        table = ", ".join(str((n * 2654435761 + i * 40503) % 4294967291) for i in range(24))
        parts.append(VENDOR_MODULE.format(n=n, table=table))
        n += 1
    modules = max(n, 1)
    for index in range(RESEARCH_TOOLS):
        parts.append(TOOL_V3.format(n=index, m=index % modules))
    for index in range(RESEARCH_TOOLS, RESEARCH_TOOLS + ANALYST_TOOLS):
        parts.append(TOOL_V4.format(n=index))
    parts.append(
        FOOTER.format(
            research_tools=", ".join(f"tool{i}" for i in range(RESEARCH_TOOLS)),
            analyst_tools=", ".join(
                f"tool{i}" for i in range(RESEARCH_TOOLS, RESEARCH_TOOLS + ANALYST_TOOLS)
            ),
        )
    )
    code = "\n".join(parts)
    source_map = {
        "version": 3,
        "sources": ["../lightfast.config.ts"]
        + [f"../node_modules/@lightfast-vendor/pkg{i}/src/index.ts" for i in range(modules)],
        "sourcesContent": [code[i :: modules + 1] for i in range(modules + 1)],
        "mappings": ";".join("AAAA,SAAS,IAAI" for _ in range(code.count("\n"))),
        "names": [],
    }
    encoded = base64.b64encode(json.dumps(source_map).encode()).decode()
    bundle = f"{code}//# sourceMappingURL=data:application/json;base64,{encoded}\n".encode()
    return bundle


def expected_tools() -> dict[str, list[str]]:
    """Agent key → tool names the manifest must list."""
    return {
        "research": [f"tool{i}" for i in range(RESEARCH_TOOLS)],
        "analyst": [f"tool{i}" for i in range(RESEARCH_TOOLS, RESEARCH_TOOLS + ANALYST_TOOLS)],
    }
