"""A seeded synthetic multilingual world, small enough to train and evaluate on two CPU cores.

Every language gets a consistent lexicon of generated words (in its own script: Bengali script for `bn`,
CJK characters for `zh`, Latin for `de`/`sw`, ...) and a word order (SVO or SOV), so that the same
underlying sentence can be rendered in every language. That gives us, from one generator:

- general text per language (fewer documents for the low-resource-style languages),
- an English-only ability corpus: arithmetic word problems with worked solutions ending in the answer,
- X→English translation pairs and translated math queries (MindMerger's two training stages),
- test sets in the official benchmark file formats (MGSM, MSVAMP, X-CSQA, XNLI, Okapi m-MMLU), gold answers included.

The same seed gives byte-identical files. Nothing here is meant to be linguistically realistic; it is
meant to exercise every code path real data takes, with answers we can check.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.languages import check_language, language_name

# -- concepts -----------------------------------------------------------------------------------
NAMES = ["Tom", "Anna", "Ravi", "Mei", "Juma", "Lena", "Omar", "Sara", "Kofi", "Ines"]
OBJECTS = ["apples", "books", "coins", "pencils", "eggs", "cards", "stones", "flowers", "cakes", "balls"]
ANIMALS = ["cat", "dog", "bird", "goat", "cow", "fish", "horse", "duck"]
COLORS = ["red", "blue", "green", "white", "black", "yellow"]
PLACES = ["market", "school", "garden", "river", "house", "farm"]
ADJECTIVES = ["big", "small", "happy", "old", "young", "fast"]
VERBS = ["sees", "likes", "finds", "wants", "feeds", "follows"]
FUNCTION_WORDS = ["the", "is", "not", "in", "and", "has", "gives", "more", "loses", "buys", "bags", "each", "bag",
                  "sells", "then", "how", "many", "have", "now", "left", "in-total", "there-are", "to",
                  "carries", "which", "one", "a", "does", "an-animal", "a-color", "a-place", "a-thing", "a-person"]
CATEGORIES = {"an-animal": ANIMALS, "a-color": COLORS, "a-place": PLACES, "a-thing": OBJECTS, "a-person": NAMES}
CONCEPTS = NAMES + OBJECTS + ANIMALS + COLORS + PLACES + ADJECTIVES + VERBS + FUNCTION_WORDS

# -- scripts and language features ----------------------------------------------------------------
_LATIN = (list("bdfgklmnprstvwz") + ["sh", "ch", "tr", "st"], list("aeiou") + ["ai", "ou"])
_SCRIPTS = {
    "latin": _LATIN,
    "bengali": (list("কখগচজটডতদনপবমরলসহ"), ["", "া", "ি", "ী", "ু", "ে", "ো"]),
    "telugu": (list("కగచజటడతదనపబమరలవసహ"), ["", "ా", "ి", "ీ", "ు", "ె", "ో"]),
    "devanagari": (list("कखगचजटडतदनपबमरलवसह"), ["", "ा", "ि", "ी", "ु", "े", "ो"]),
    "cyrillic": (list("бвгдзклмнпрстфхш"), list("аеиоуыя")),
    "greek": (list("βγδζκλμνπρστφχ"), list("αεηιουω")),
    "arabic": (list("بتجدرزسشطعفقكلمنه"), ["", "ا", "و", "ي"]),
    "thai": (list("กขคงจชดตทนบปพมยรลวสห"), ["", "า", "ี", "ู", "ะ", "ิ"]),
    "cjk": ([chr(c) for c in range(0x4E00, 0x4E00 + 2000)], [""]),
    "kana": (list("かきくけこさしすせそたちつてとなにぬねのはひふへほまみむめも"), [""]),
}
_SCRIPT_OF = {"zh": "cjk", "ja": "kana", "bn": "bengali", "as": "bengali", "te": "telugu", "hi": "devanagari",
              "mr": "devanagari", "ne": "devanagari", "ru": "cyrillic", "uk": "cyrillic", "bg": "cyrillic",
              "el": "greek", "ar": "arabic", "fa": "arabic", "ur": "arabic", "th": "thai"}
_SOV = {"bn", "te", "hi", "ja", "ko", "tr", "mr", "ta", "ur", "fa"}
_NO_SPACES = {"zh", "ja", "th"}
_FULL_STOP = {"zh": "。", "ja": "。", "bn": "।", "hi": "।"}
_QUESTION = {"zh": "？", "ja": "？"}


def _rng(*parts: object) -> random.Random:
    """An independent, reproducible random stream for each (seed, purpose, ...) tuple."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


@dataclass
class Language:
    """One language of the world: its words for every concept, word order and punctuation."""

    code: str
    words: dict[str, str]
    sov: bool
    spaces: bool
    full_stop: str
    question_mark: str

    def render(self, roles: list[tuple[str, list[str | int]]], question: bool = False) -> str:
        """Roles: S subject, V verb, O object, T tail (place, time), Q question phrase, A auxiliary."""
        if question:
            order = "SQOTAV" if self.sov else "QASVOT"
        else:
            order = "SOTV" if self.sov else "SVOT"
        chunks = sorted(roles, key=lambda r: order.index(r[0]))
        tokens = [str(t) if isinstance(t, int) else self.words[t] for _, toks in chunks for t in toks]
        tokens = [t for t in tokens if t]  # words a language does not have (English "does") are empty
        text = (" " if self.spaces else "").join(tokens)
        if self.spaces and text:
            text = text[0].upper() + text[1:]
        return text + (self.question_mark if question else self.full_stop)


def make_language(code: str, seed: int) -> Language:
    check_language(code, "demo world language")
    if code == "en":
        words = {c: c.replace("-", " ") for c in CONCEPTS}
        return Language("en", words, sov=False, spaces=True, full_stop=".", question_mark="?")
    onsets, vowels = _SCRIPTS[_SCRIPT_OF.get(code, "latin")]
    rng = _rng(seed, "lexicon", code)
    words: dict[str, str] = {}
    used: set[str] = set()
    for concept in CONCEPTS:
        if concept == "does":  # only English needs do-support in questions
            words[concept] = ""
            continue
        while True:
            syllables = rng.randint(1, 2) if _SCRIPT_OF.get(code) == "cjk" else rng.randint(2, 3)
            word = "".join(rng.choice(onsets) + rng.choice(vowels) for _ in range(syllables))
            if word not in used:
                break
        used.add(word)
        words[concept] = word
    return Language(code, words, sov=code in _SOV, spaces=code not in _NO_SPACES,
                    full_stop=_FULL_STOP.get(code, "."), question_mark=_QUESTION.get(code, "?"))


# -- sentences -----------------------------------------------------------------------------------
def general_sentence(rng: random.Random) -> list[tuple[str, list]]:
    """One sentence of general text, as roles (S, V, O, T) of concept tokens."""
    kind = rng.randrange(6)
    a, b = rng.sample(ANIMALS, 2)
    if kind == 0:
        return [("S", ["the", a]), ("V", [rng.choice(VERBS)]), ("O", ["the", rng.choice(COLORS), b]),
                ("T", ["in", "the", rng.choice(PLACES)])]
    if kind == 1:
        return [("S", [rng.choice(NAMES)]), ("V", [rng.choice(VERBS)]), ("O", ["the", rng.choice(ADJECTIVES), a])]
    if kind == 2:
        return [("S", ["the", a]), ("V", ["is"]), ("O", [rng.choice(ADJECTIVES)])]
    if kind == 3:
        return [("S", [rng.choice(NAMES)]), ("V", ["carries"]), ("O", [rng.randint(2, 12), rng.choice(OBJECTS)]),
                ("T", ["to", "the", rng.choice(PLACES)])]
    if kind == 4:
        n1, n2 = rng.sample(NAMES, 2)
        return [("S", [n1, "and", n2]), ("V", [rng.choice(VERBS)]), ("O", ["the", rng.choice(COLORS), a])]
    return [("S", ["there-are"]), ("O", [rng.randint(2, 12), rng.choice(OBJECTS)]), ("T", ["in", "the", rng.choice(PLACES)])]


def english(roles: list[tuple[str, list]], question: bool = False) -> str:
    return make_language("en", 0).render(roles, question)


@dataclass
class WordProblem:
    """An arithmetic word problem: sentences as roles (renderable in any language) plus the worked solution."""

    sentences: list[tuple[list[tuple[str, list]], bool]]  # (roles, is_question)
    solution: str  # English chain of thought ending in "The answer is N."
    equation: str
    answer: int

    def render(self, lang: Language) -> str:
        return " ".join(lang.render(roles, q) for roles, q in self.sentences)


def word_problem(rng: random.Random) -> WordProblem:
    name, other = rng.sample(NAMES, 2)
    obj = rng.choice(OBJECTS)
    kind = rng.randrange(4)
    ask_now = [("Q", ["how", "many", obj]), ("A", ["does"]), ("S", [name]), ("V", ["have"]), ("T", ["now"])]
    if kind == 0:
        a, b = rng.randint(1, 20), rng.randint(1, 20)
        c = a + b
        s = [([("S", [name]), ("V", ["has"]), ("O", [a, obj])], False),
             ([("S", [other]), ("V", ["gives"]), ("O", [b, "more", obj]), ("T", ["to", name])], False),
             (ask_now, True)]
        eq, sol = f"{a} + {b}", f"{name} has {a} + {b} = {c} {obj} now. The answer is {c}."
    elif kind == 1:
        a = rng.randint(2, 20)
        b = rng.randint(1, a - 1)
        c = a - b
        s = [([("S", [name]), ("V", ["has"]), ("O", [a, obj])], False),
             ([("S", [name]), ("V", ["loses"]), ("O", [b, obj])], False),
             ([("Q", ["how", "many", obj]), ("A", ["does"]), ("S", [name]), ("V", ["have"]), ("T", ["left"])], True)]
        eq, sol = f"{a} - {b}", f"{name} has {a} - {b} = {c} {obj} left. The answer is {c}."
    elif kind == 2:
        a, b = rng.randint(2, 9), rng.randint(2, 9)
        c = a * b
        s = [([("S", [name]), ("V", ["buys"]), ("O", [a, "bags"])], False),
             ([("S", ["each", "bag"]), ("V", ["has"]), ("O", [b, obj])], False),
             ([("Q", ["how", "many", obj]), ("A", ["does"]), ("S", [name]), ("V", ["have"]), ("T", ["in-total"])],
              True)]
        eq, sol = f"{a} * {b}", f"{name} buys {a} * {b} = {c} {obj}. The answer is {c}."
    else:
        a, b = rng.randint(5, 20), rng.randint(1, 10)
        c = rng.randint(1, a + b - 1)
        d, e = a + b, a + b - c
        s = [([("S", [name]), ("V", ["has"]), ("O", [a, obj])], False),
             ([("S", [name]), ("V", ["buys"]), ("O", [b, "more"]), ("T", ["and", "then", "sells", c])], False),
             (ask_now, True)]
        eq, sol = f"{a} + {b} - {c}", f"{name} has {a} + {b} = {d} {obj}. Then {d} - {c} = {e}. The answer is {e}."
        c = e
    return WordProblem(s, sol, eq, c)


# -- the world ------------------------------------------------------------------------------------
@dataclass
class WorldSpec:
    languages: list[str]  # pivot first
    seed: int = 0
    general_docs: int = 600
    low_resource_languages: list[str] = field(default_factory=lambda: ["sw", "bn"])
    low_resource_fraction: float = 0.25
    ability_problems: int = 2000
    translation_pairs: int = 600
    query_items: int = 400
    test_items: int = 40


def _jsonl(path: Path, rows: Iterator[dict] | list[dict]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def generate_world(spec: WorldSpec, out: Path) -> dict[str, dict[str, int]]:
    """Write the whole world under `out`; returns counts per part and language (for the manifest)."""
    langs = {code: make_language(code, spec.seed) for code in spec.languages}
    stats: dict[str, dict[str, int]] = {}
    stats["general_docs"] = _write_general(spec, langs, out)
    stats["ability_docs"] = {"en": _jsonl(out / "ability" / "en.jsonl", _ability_docs(spec))}
    stats["translation_pairs"] = _write_translations(spec, langs, out)
    stats["queries"] = _write_queries(spec, langs, out)
    stats["test_items"] = _write_benchmarks(spec, langs, out)
    _write(out / "lexicon.json", json.dumps({c: lang.words for c, lang in langs.items()}, ensure_ascii=False, indent=1))
    return stats


def _write_general(spec: WorldSpec, langs: dict[str, Language], out: Path) -> dict[str, int]:
    counts = {}
    for code, lang in langs.items():
        n = spec.general_docs
        if code in spec.low_resource_languages:
            n = max(1, int(n * spec.low_resource_fraction))
        rng = _rng(spec.seed, "general", code)
        docs = ({"text": " ".join(lang.render(general_sentence(rng)) for _ in range(rng.randint(3, 8)))}
                for _ in range(n))
        counts[code] = _jsonl(out / "general" / f"{code}.jsonl", docs)
    return counts


def _ability_docs(spec: WorldSpec) -> Iterator[dict]:
    rng = _rng(spec.seed, "ability")
    en = make_language("en", spec.seed)
    for _ in range(spec.ability_problems):
        p = word_problem(rng)
        yield {"text": f"Question: {p.render(en)}\nAnswer: {p.solution}"}


def _write_translations(spec: WorldSpec, langs: dict[str, Language], out: Path) -> dict[str, int]:
    """MindMerger mapping-stage data: line-aligned train.<iso> / train.en per language."""
    en = langs.get("en") or make_language("en", spec.seed)
    counts = {}
    for code, lang in langs.items():
        if code == "en":
            continue
        rng = _rng(spec.seed, "translation", code)
        sentences = [general_sentence(rng) for _ in range(spec.translation_pairs)]
        _write(out / "translation" / code / f"train.{code}", "".join(lang.render(s) + "\n" for s in sentences))
        _write(out / "translation" / code / "train.en", "".join(en.render(s) + "\n" for s in sentences))
        counts[code] = len(sentences)
    return counts


def _write_queries(spec: WorldSpec, langs: dict[str, Language], out: Path) -> dict[str, int]:
    """MindMerger augmentation-stage math data: [{lang, query, response}] per language (query translated)."""
    counts = {}
    for code, lang in langs.items():
        rng = _rng(spec.seed, "queries", code)
        rows = []
        for _ in range(spec.query_items):
            p = word_problem(rng)
            rows.append({"lang": code, "query": p.render(lang), "response": p.solution})
        _write(out / "queries" / "math" / f"{code}.json", json.dumps(rows, ensure_ascii=False, indent=1))
        counts[code] = len(rows)
    return counts


def _write_benchmarks(spec: WorldSpec, langs: dict[str, Language], out: Path) -> dict[str, int]:
    bench = out / "bench"
    en = langs.get("en") or make_language("en", spec.seed)
    xnli_rows = []
    for code, lang in langs.items():
        rng = _rng(spec.seed, "test", code)
        problems = [word_problem(rng) for _ in range(spec.test_items)]
        _write(bench / "mgsm" / f"mgsm_{code}.tsv",
               "".join(f"{p.render(lang)}\t{p.answer:,}\n" for p in problems))
        _jsonl(bench / "msvamp" / f"test_{language_name(code)}.json",
               ({"m_query": p.render(lang), "query": p.render(en), "equation": p.equation,
                 "response": str(p.answer)} for p in problems))
        _jsonl(bench / "xcsqa" / code / "dev.jsonl",
               (_csqa_item(rng, lang, i) for i in range(spec.test_items)))
        _write(bench / "mmlu" / f"{code}_test.json",
               json.dumps([_mmlu_item(rng, lang, i) for i in range(spec.test_items)], ensure_ascii=False, indent=1))
        xnli_rows += [_xnli_row(rng, lang, i) for i in range(spec.test_items)]
    header = ["language", "gold_label", "sentence1", "sentence2", "promptID", "pairID", "genre"]
    _write(bench / "xnli" / "xnli.test.tsv",
           "\t".join(header) + "\n" + "".join("\t".join(str(r[h]) for h in header) + "\n" for r in xnli_rows))
    return {code: spec.test_items for code in langs}


def _category_question(rng: random.Random, lang: Language, n_options: int) -> tuple[str, list[str], int]:
    category = rng.choice(list(CATEGORIES))
    right = rng.choice(CATEGORIES[category])
    others = [w for c, ws in CATEGORIES.items() if c != category for w in ws]
    options = rng.sample(others, n_options - 1)
    gold = rng.randrange(n_options)
    options.insert(gold, right)
    stem = lang.render([("Q", ["which", "one"]), ("V", ["is"]), ("O", [category])], question=True)
    return stem, [lang.words[o] for o in options], gold


def _csqa_item(rng: random.Random, lang: Language, i: int) -> dict:
    stem, options, gold = _category_question(rng, lang, 5)
    labels = "ABCDE"
    return {"id": f"demo-{lang.code}-{i:04d}", "lang": lang.code,
            "question": {"stem": stem, "choices": [{"label": labels[j], "text": t} for j, t in enumerate(options)]},
            "answerKey": labels[gold]}


MMLU_SCIENCE_SUBJECTS = ["college_biology", "college_chemistry", "college_physics",
                         "high_school_biology", "high_school_chemistry", "high_school_physics"]


def _mmlu_item(rng: random.Random, lang: Language, i: int) -> dict:
    stem, options, gold = _category_question(rng, lang, 4)
    # one item in eight is from a non-science subject, so that loaders must filter
    subject = "high_school_us_history" if i % 8 == 7 else MMLU_SCIENCE_SUBJECTS[i % 6]
    return {"id": f"{subject}/test/{i}", "instruction": stem, "option_a": options[0], "option_b": options[1],
            "option_c": options[2], "option_d": options[3], "answer": "ABCD"[gold]}


def _xnli_row(rng: random.Random, lang: Language, i: int) -> dict:
    animal, place = rng.choice(ANIMALS), rng.choice(PLACES)
    color = rng.choice(COLORS)
    premise = [("S", ["the", color, animal]), ("V", ["is"]), ("T", ["in", "the", place])]
    label = ["entailment", "neutral", "contradiction"][i % 3]
    if label == "entailment":
        hypothesis = [("S", ["the", animal]), ("V", ["is"]), ("T", ["in", "the", place])]
    elif label == "neutral":
        hypothesis = [("S", ["the", animal]), ("V", ["is"]), ("O", [rng.choice(ADJECTIVES)])]
    else:
        hypothesis = [("S", ["the", animal]), ("V", ["is"]), ("O", ["not"]), ("T", ["in", "the", place])]
    return {"language": lang.code, "gold_label": label, "sentence1": lang.render(premise),
            "sentence2": lang.render(hypothesis), "promptID": i, "pairID": f"{lang.code}-{i}", "genre": "demo"}
