// Intl.Collator (and so String.prototype.localeCompare) for the sandbox. Hand-written: FormatJS has
// no Collator polyfill and ICU's collation tables are megabytes. This follows the shape of the
// Unicode Collation Algorithm with ICU's root order for the common cases: whitespace < punctuation
// < symbols < currency < digits < letters at the primary level; accents at the secondary level;
// lower case before upper case at the tertiary level; `numeric`, `sensitivity`, `caseFirst` and
// `ignorePunctuation` honoured. en and de sort alike in ICU's default collation, and the order of
// letters outside Latin is by code point, which matches ICU for each script on its own but not
// across every script.
const SPACE = /\p{White_Space}/u;
const PUNCT = /\p{P}/u;
const CURRENCY = /\p{Sc}/u;
const SYMBOL = /\p{S}/u;
const DIGIT = /\p{Nd}/u;
const MARK = /\p{M}/u;
const EXPANSIONS = { __proto__: null, "ß": "ss", "æ": "ae", "Æ": "AE", "œ": "oe", "Œ": "OE", "ø": "o\u0338", "Ø": "O\u0338", "đ": "d\u0335", "Đ": "D\u0335", "ł": "l\u0337", "Ł": "L\u0337", "ı": "i" };

const GROUP_SPACE = 1;
const GROUP_PUNCT = 2;
const GROUP_SYMBOL = 3;
const GROUP_CURRENCY = 4;
const GROUP_DIGIT = 5;
const GROUP_LETTER = 6;

// Decimal digits come in blocks of ten starting at a code point ending in 0 (hex).
const digitValue = (ch) => {
  const c = ch.codePointAt(0);
  return c <= 0x39 ? c - 0x30 : c & 0xf;
};

// [primary group, primary value, secondary (accents), tertiary (0 lower, 1 upper)] per character.
function elements(text, numeric, ignorePunctuation) {
  const out = [];
  const chars = Array.from(String(text).normalize("NFD"));
  for (let i = 0; i < chars.length; i++) {
    let ch = chars[i];
    if (MARK.test(ch)) {
      if (out.length > 0) out[out.length - 1][2] += ch;
      continue;
    }
    if (EXPANSIONS[ch] !== undefined) {
      const expanded = Array.from(EXPANSIONS[ch].normalize("NFD"));
      chars.splice(i, 1, ...expanded);
      ch = chars[i];
    }
    let group;
    let value;
    if (SPACE.test(ch)) group = GROUP_SPACE;
    else if (PUNCT.test(ch)) group = GROUP_PUNCT;
    else if (CURRENCY.test(ch)) group = GROUP_CURRENCY;
    else if (SYMBOL.test(ch)) group = GROUP_SYMBOL;
    else if (DIGIT.test(ch)) group = GROUP_DIGIT;
    else group = GROUP_LETTER;
    if (ignorePunctuation && (group === GROUP_SPACE || group === GROUP_PUNCT)) continue;
    if (group === GROUP_DIGIT && numeric) {
      let digits = "";
      while (i < chars.length && DIGIT.test(chars[i])) digits += digitValue(chars[i++]);
      i--;
      digits = digits.replace(/^0+(?=\d)/, "");
      out.push([group, String(digits.length).padStart(6, "0") + digits, "", 0]);
      continue;
    }
    const lower = ch.toLowerCase();
    value = group === GROUP_DIGIT ? String(digitValue(ch)) : lower;
    out.push([group, value, "", lower === ch ? 0 : 1]);
  }
  return out;
}

function comparePrimary(a, b) {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    if (a[i][0] !== b[i][0]) return a[i][0] < b[i][0] ? -1 : 1;
    if (a[i][1] !== b[i][1]) return a[i][1] < b[i][1] ? -1 : 1;
  }
  return a.length === b.length ? 0 : a.length < b.length ? -1 : 1;
}

function compareLevel(a, b, index, upperFirst) {
  for (let i = 0; i < a.length; i++) {
    let x = a[i][index];
    let y = b[i][index];
    if (x === y) continue;
    if (index === 3 && upperFirst) [x, y] = [y, x];
    return x < y ? -1 : 1;
  }
  return 0;
}

const LOCALES = ["en", "de"];
const CANONICAL = /^(en|de)(-[A-Z]{2})?$/;

function resolveLocale(locales) {
  const requested = locales === undefined ? [] : typeof locales === "string" ? [locales] : Array.from(locales, String);
  for (const tag of requested) {
    const lang = String(tag).toLowerCase().split(/[-_]/)[0];
    if (LOCALES.indexOf(lang) >= 0) return tag.indexOf("-u-") >= 0 ? tag.slice(0, tag.indexOf("-u-")) : tag;
  }
  return "en-US";
}

export class Collator {
  #options;
  #bound = null;
  constructor(locales = undefined, options = undefined) {
    const o = options === undefined ? {} : Object(options);
    const usage = o.usage === undefined ? "sort" : String(o.usage);
    if (usage !== "sort" && usage !== "search") throw new RangeError(`Value ${usage} out of range for Intl.Collator options property usage`);
    const sensitivity = o.sensitivity === undefined ? "variant" : String(o.sensitivity);
    if (["base", "accent", "case", "variant"].indexOf(sensitivity) < 0) {
      throw new RangeError(`Value ${sensitivity} out of range for Intl.Collator options property sensitivity`);
    }
    const caseFirst = o.caseFirst === undefined ? "false" : String(o.caseFirst);
    if (["upper", "lower", "false"].indexOf(caseFirst) < 0) {
      throw new RangeError(`Value ${caseFirst} out of range for Intl.Collator options property caseFirst`);
    }
    let locale = resolveLocale(locales);
    // Tags already in canonical form need no Intl.Locale (which would load the FormatJS polyfills:
    // String#localeCompare uses this class without them).
    if (!CANONICAL.test(locale)) {
      try {
        locale = new globalThis.Intl.Locale(locale).baseName;
      } catch {
        locale = "en-US";
      }
    }
    this.#options = {
      locale,
      usage,
      sensitivity,
      ignorePunctuation: Boolean(o.ignorePunctuation),
      collation: "default",
      numeric: Boolean(o.numeric),
      caseFirst,
    };
  }
  get compare() {
    if (this.#bound === null) {
      const opts = this.#options;
      this.#bound = (x, y) => {
        const a = elements(x, opts.numeric, opts.ignorePunctuation);
        const b = elements(y, opts.numeric, opts.ignorePunctuation);
        const primary = comparePrimary(a, b);
        if (primary !== 0 || opts.sensitivity === "base") return primary;
        if (opts.sensitivity !== "case") {
          const secondary = compareLevel(a, b, 2, false);
          if (secondary !== 0) return secondary;
        }
        if (opts.sensitivity === "accent") return 0;
        return compareLevel(a, b, 3, opts.caseFirst === "upper");
      };
    }
    return this.#bound;
  }
  resolvedOptions() {
    return { ...this.#options };
  }
  static supportedLocalesOf(locales) {
    const requested = locales === undefined ? [] : typeof locales === "string" ? [locales] : Array.from(locales, String);
    return requested.filter((tag) => LOCALES.indexOf(tag.toLowerCase().split(/[-_]/)[0]) >= 0);
  }
  get [Symbol.toStringTag]() {
    return "Intl.Collator";
  }
}
