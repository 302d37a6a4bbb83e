"""A seeded synthetic multilingual world in which an ability can be learned, transferred and measured.

It mirrors the papers' setting in miniature (docs/demo-world.md says how, and what it cannot show):

- **Languages** share one world of concepts. Each language has its own generated lexicon (in its own
  script: Bengali script for `bn`, CJK characters for `zh`, ...), word order (SVO or SOV) and punctuation.
  What is shared across languages is what real languages share: digits and personal names (the
  "anchors" through which multilingual models align), and the structure of what is said.
- **General text** in every language (a quarter as much for the low-resource-style languages): scenes,
  category facts ("the cow is an animal"), quantity events ("Juma loses 4 coins"), and instruction
  documents in the prompt shapes that evaluation uses — reading questions answered by a number copied
  from the text, and lettered multiple-choice category questions. No general text asks for arithmetic.
  A small share of documents is bilingual (a sentence followed by its English rendering), as web text is.
- **The ability** — arithmetic word problems with a worked solution — exists only in English, in the
  ability corpus, written in the instruction shape MetaMath-style training data uses.
- **Test items** are one list of problems rendered in every language, with the same numbers and golds,
  and no test problem (in any language) occurs in any training corpus: `held_out_problems` are drawn
  first and their signatures excluded from every training draw; the dedup test checks the texts.

The same seed gives byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from linguaforge.pipelines.benchmarks.prompts import load_preset
from linguaforge.pipelines.languages import check_language, language_name

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
                  "carries", "carry", "which", "one", "a", "does", "an-animal", "a-color", "a-place", "a-thing",
                  "a-person", "the-answer-is"]
CATEGORIES = {"an-animal": ANIMALS, "a-color": COLORS, "a-place": PLACES, "a-thing": OBJECTS, "a-person": NAMES}
# names are written the same in every language (like numbers, they are cross-lingual anchors)
CONCEPTS = OBJECTS + ANIMALS + COLORS + PLACES + ADJECTIVES + VERBS + FUNCTION_WORDS

# The prompt shapes of evaluation, read from the preset itself (pipelines/benchmarks/presets.yaml,
# `mindmerger`): instruction documents of the general corpus and the ability corpus are written in them,
# as real instruction data is, and they cannot drift from what evaluation sends.
_PRESET = load_preset("mindmerger")
MATH_PROMPT = _PRESET.for_benchmark("mgsm")["template"]
_CHOICE = _PRESET.for_benchmark("xcsqa")
CHOICE_PROMPT = _CHOICE["template"]

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

Roles = list[tuple[str, list]]


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

    def word(self, token: str | int) -> str:
        if isinstance(token, int):
            return str(token)
        return self.words.get(token, token)  # names (and anything not a concept) are shared

    def render(self, roles: Roles, question: bool = False) -> str:
        """Roles: S subject, V verb, O object, T tail (place, time), Q question phrase, A auxiliary."""
        if question:
            order = "SQOTAV" if self.sov else "QASVOT"
        else:
            order = "SOTV" if self.sov else "SVOT"
        chunks = sorted(roles, key=lambda r: order.index(r[0]))
        tokens = [self.word(t) for _, toks in chunks for t in toks]
        tokens = [t for t in tokens if t]  # words a language does not have (English "does") are empty
        text = (" " if self.spaces else "").join(tokens)
        if self.spaces and text:
            text = text[0].upper() + text[1:]
        return text + (self.question_mark if question else self.full_stop)

    def join(self, sentences: list[str]) -> str:
        return (" " if self.spaces else "").join(sentences)


def make_language(code: str, seed: int) -> Language:
    check_language(code, "demo world language")
    if code == "en":
        words = {c: c.replace("-", " ") for c in CONCEPTS}
        return Language("en", words, sov=False, spaces=True, full_stop=".", question_mark="?")
    onsets, vowels = _SCRIPTS[_SCRIPT_OF.get(code, "latin")]
    rng = _rng(seed, "lexicon", code)
    words: dict[str, str] = {}
    used: set[str] = set(NAMES)
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


# -- general text (no arithmetic) ----------------------------------------------------------------
def scene_sentence(rng: random.Random) -> Roles:
    """A sentence of everyday description, as roles (S, V, O, T) of concept tokens."""
    kind = rng.randrange(5)
    a, b = rng.sample(ANIMALS, 2)
    if kind == 0:
        return [("S", ["the", a]), ("V", [rng.choice(VERBS)]), ("O", ["the", rng.choice(COLORS), b]),
                ("T", ["in", "the", rng.choice(PLACES)])]
    if kind == 1:
        return [("S", [rng.choice(NAMES)]), ("V", [rng.choice(VERBS)]), ("O", ["the", rng.choice(ADJECTIVES), a])]
    if kind == 2:
        return [("S", ["the", a]), ("V", ["is"]), ("O", [rng.choice(ADJECTIVES)])]
    if kind == 3:
        n1, n2 = rng.sample(NAMES, 2)
        return [("S", [n1, "and", n2]), ("V", [rng.choice(VERBS)]), ("O", ["the", rng.choice(COLORS), a])]
    return [("S", ["there-are"]), ("O", [rng.randint(2, 12), rng.choice(OBJECTS)]), ("T", ["in", "the", rng.choice(PLACES)])]


def category_sentence(rng: random.Random) -> Roles:
    """A category fact: 'The cow is an animal.' (what the classification benchmarks ask about)."""
    category = rng.choice(list(CATEGORIES))
    member = rng.choice(CATEGORIES[category])
    subject = [member] if category == "a-person" else ["the", member]
    return [("S", subject), ("V", ["is"]), ("O", [category])]


def quantity_event(rng: random.Random) -> Roles:
    """One event with a quantity, on its own (no question, nothing to compute): the words that word
    problems are made of occur in every language, in the contexts they mean."""
    name, other = rng.sample(NAMES, 2)
    obj, n = rng.choice(OBJECTS), rng.randint(1, 20)
    kind = rng.randrange(6)
    if kind == 0:
        return [("S", [name]), ("V", ["has"]), ("O", [n, obj])]
    if kind == 1:
        return [("S", [other]), ("V", ["gives"]), ("O", [n, obj]), ("T", ["to", name])]
    if kind == 2:
        return [("S", [name]), ("V", ["loses"]), ("O", [n, obj]), ("T", ["in", "the", rng.choice(PLACES)])]
    if kind == 3:
        return [("S", [name]), ("V", ["buys"]), ("O", [n, "bags"])]
    if kind == 4:
        return [("S", ["each", "bag"]), ("V", ["has"]), ("O", [n, obj])]
    return [("S", [name]), ("V", ["sells"]), ("O", [n, obj]), ("T", ["in", "the", rng.choice(PLACES)])]


def reading_question(rng: random.Random, lang: Language) -> str:
    """An instruction document in the math prompt shape whose answer is a number copied from the text."""
    name, obj, n = rng.choice(NAMES), rng.choice(OBJECTS), rng.randint(1, 20)
    place = rng.choice(PLACES)
    fact = [("S", [name]), ("V", ["carries"]), ("O", [n, obj]), ("T", ["to", "the", place])]
    scene = lang.render(scene_sentence(rng))
    ask = [("Q", ["how", "many", obj]), ("A", ["does"]), ("S", [name]), ("V", ["carry"])]
    question = lang.join([scene, lang.render(fact), lang.render(ask, question=True)])
    answer = lang.join([lang.render([("S", [name]), ("V", ["carries"]), ("O", [n, obj])]),
                        lang.render([("S", ["the-answer-is"]), ("O", [n])])])
    return MATH_PROMPT.format(question=question) + " " + answer


def choice_question(rng: random.Random, lang: Language, n_options: int) -> tuple[str, list[str], int]:
    """'Which one is an animal?' with one member of the category among members of others."""
    category = rng.choice(list(CATEGORIES))
    right = rng.choice(CATEGORIES[category])
    others = [w for c, ws in CATEGORIES.items() if c != category for w in ws]
    options = rng.sample(others, n_options - 1)
    gold = rng.randrange(n_options)
    options.insert(gold, right)
    stem = lang.render([("Q", ["which", "one"]), ("V", ["is"]), ("O", [category])], question=True)
    return stem, [lang.word(o) for o in options], gold


def choice_document(rng: random.Random, lang: Language) -> str:
    """A multiple-choice category question with its lettered answer, in the X-CSQA prompt shape."""
    n = rng.choice([4, 5])
    stem, options, gold = choice_question(rng, lang, n)
    listed = _CHOICE["option_separator"].join(_CHOICE["option"].format(label="ABCDE"[i], text=t)
                                              for i, t in enumerate(options))
    return CHOICE_PROMPT.format(question=stem, options=listed) + " " + "ABCDE"[gold]


def general_document(rng: random.Random, lang: Language, en: Language, bilingual_share: float) -> str:
    kind = rng.random()
    if kind < 0.15:
        return reading_question(rng, lang)
    if kind < 0.25:
        return choice_document(rng, lang)
    makers = (scene_sentence, scene_sentence, category_sentence, quantity_event, quantity_event)
    sentences = [rng.choice(makers)(rng) for _ in range(rng.randint(3, 8))]
    if lang.code != "en" and rng.random() < bilingual_share:
        return lang.join([lang.render(s) + " (" + en.render(s) + ")" for s in sentences])
    return lang.join([lang.render(s) for s in sentences])


# -- the ability ----------------------------------------------------------------------------------
@dataclass
class WordProblem:
    """An arithmetic word problem: sentences as roles (renderable in any language) plus the worked solution."""

    sentences: list[tuple[Roles, bool]]  # (roles, is_question)
    solution: str  # English chain of thought ending in "The answer is N."
    equation: str
    answer: int
    signature: tuple  # what makes two problems the same problem, whatever the language

    def render(self, lang: Language) -> str:
        return lang.join([lang.render(roles, q) for roles, q in self.sentences])

    def document(self, lang: Language) -> str:
        return MATH_PROMPT.format(question=self.render(lang)) + " " + self.solution


def word_problem(rng: random.Random) -> WordProblem:
    """Small numbers (sums up to 18, products up to 25), so a tiny model can learn the facts in minutes."""
    name, other = rng.sample(NAMES, 2)
    obj = rng.choice(OBJECTS)
    kind = rng.randrange(4)
    ask_now = [("Q", ["how", "many", obj]), ("A", ["does"]), ("S", [name]), ("V", ["have"]), ("T", ["now"])]
    if kind == 0:
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        c = a + b
        s = [([("S", [name]), ("V", ["has"]), ("O", [a, obj])], False),
             ([("S", [other]), ("V", ["gives"]), ("O", [b, "more", obj]), ("T", ["to", name])], False),
             (ask_now, True)]
        eq, sol, numbers = f"{a} + {b}", f"{name} has {a} + {b} = {c} {obj} now. The answer is {c}.", (a, b)
    elif kind == 1:
        a = rng.randint(3, 18)
        b = rng.randint(1, min(9, a - 1))
        c = a - b
        s = [([("S", [name]), ("V", ["has"]), ("O", [a, obj])], False),
             ([("S", [name]), ("V", ["loses"]), ("O", [b, obj])], False),
             ([("Q", ["how", "many", obj]), ("A", ["does"]), ("S", [name]), ("V", ["have"]), ("T", ["left"])], True)]
        eq, sol, numbers = f"{a} - {b}", f"{name} has {a} - {b} = {c} {obj} left. The answer is {c}.", (a, b)
    elif kind == 2:
        a, b = rng.randint(2, 5), rng.randint(2, 5)
        c = a * b
        s = [([("S", [name]), ("V", ["buys"]), ("O", [a, "bags"])], False),
             ([("S", ["each", "bag"]), ("V", ["has"]), ("O", [b, obj])], False),
             ([("Q", ["how", "many", obj]), ("A", ["does"]), ("S", [name]), ("V", ["have"]), ("T", ["in-total"])],
              True)]
        eq, sol, numbers = f"{a} * {b}", f"{name} buys {a} * {b} = {c} {obj}. The answer is {c}.", (a, b)
    else:
        a, b = rng.randint(2, 9), rng.randint(1, 9)
        c = rng.randint(1, min(9, a + b - 1))
        d, e = a + b, a + b - c
        s = [([("S", [name]), ("V", ["has"]), ("O", [a, obj])], False),
             ([("S", [name]), ("V", ["buys"]), ("O", [b, "more"]), ("T", ["and", "then", "sells", c])], False),
             (ask_now, True)]
        eq, sol = f"{a} + {b} - {c}", f"{name} has {a} + {b} = {d} {obj}. Then {d} - {c} = {e}. The answer is {e}."
        numbers, c = (a, b, c), e
    uses_other = kind == 0  # only "gives more" names a second person: the rest must not tell problems apart by it
    return WordProblem(s, sol, eq, c, signature=(kind, name, other if uses_other else None, obj, numbers))


def unique_problems(rng: random.Random, count: int, exclude: set[tuple]) -> list[WordProblem]:
    """`count` problems, no two alike and none whose signature is in `exclude` (which grows)."""
    problems = []
    while len(problems) < count:
        p = word_problem(rng)
        if p.signature not in exclude:
            exclude.add(p.signature)
            problems.append(p)
    return problems


# -- the world ------------------------------------------------------------------------------------
@dataclass
class WorldSpec:
    languages: list[str]  # pivot first
    seed: int = 0
    general_docs: int = 600
    low_resource_languages: list[str] = field(default_factory=lambda: ["sw", "bn"])
    low_resource_fraction: float = 0.25
    bilingual_share: float = 0.1
    ability_problems: int = 2000
    translation_pairs: int = 600
    query_items: int = 400
    test_items: int = 40
    dev_items: int = 40


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


def held_out_problems(spec: WorldSpec, benchmark: str) -> list[WordProblem]:
    """The test problems of one math benchmark: the same list for every language."""
    taken: set[tuple] = set()
    mgsm = unique_problems(_rng(spec.seed, "test", "mgsm"), spec.test_items, taken)
    if benchmark == "mgsm":
        return mgsm
    return unique_problems(_rng(spec.seed, "test", "msvamp"), spec.test_items, taken)


def generate_world(spec: WorldSpec, out: Path) -> dict[str, dict[str, int]]:
    """Write the whole world under `out`; returns counts per part and language (for the manifest)."""
    langs = {code: make_language(code, spec.seed) for code in spec.languages}
    tests = {name: held_out_problems(spec, name) for name in ("mgsm", "msvamp")}
    held_out = {p.signature for problems in tests.values() for p in problems}
    stats: dict[str, dict[str, int]] = {}
    stats["general_docs"] = _write_general(spec, langs, out)
    ability = unique_problems(_rng(spec.seed, "ability"), spec.ability_problems, set(held_out))
    en = langs.get("en") or make_language("en", spec.seed)
    stats["ability_docs"] = {"en": _jsonl(out / "ability" / "en.jsonl", ({"text": p.document(en)} for p in ability))}
    stats["translation_pairs"] = _write_translations(spec, langs, out)
    trained = held_out | {p.signature for p in ability}  # grows with every query problem drawn
    stats["queries"] = _write_queries(spec, langs, out, held_out, trained)
    stats["test_items"] = _write_benchmarks(spec, langs, out, tests)
    # dev problems, drawn last so that the training data stay what they were: none is a test problem or in any
    # training text, and mgsm's and msvamp's share none either
    dev = {name: unique_problems(_rng(spec.seed, "dev", name), spec.dev_items, trained) for name in ("mgsm", "msvamp")}
    stats["dev_items"] = _write_math(out / "dev", langs, en, dev)
    _write(out / "lexicon.json", json.dumps({c: lang.words for c, lang in langs.items()}, ensure_ascii=False, indent=1))
    return stats


def _write_general(spec: WorldSpec, langs: dict[str, Language], out: Path) -> dict[str, int]:
    counts = {}
    en = langs.get("en") or make_language("en", spec.seed)
    for code, lang in langs.items():
        n = spec.general_docs
        if code in spec.low_resource_languages:
            n = max(1, int(n * spec.low_resource_fraction))
        rng = _rng(spec.seed, "general", code)
        docs = ({"text": general_document(rng, lang, en, spec.bilingual_share)} for _ in range(n))
        counts[code] = _jsonl(out / "general" / f"{code}.jsonl", docs)
    return counts


def _write_translations(spec: WorldSpec, langs: dict[str, Language], out: Path) -> dict[str, int]:
    """MindMerger mapping-stage data: line-aligned train.<iso> / train.en per language (general text)."""
    en = langs.get("en") or make_language("en", spec.seed)
    counts = {}
    for code, lang in langs.items():
        if code == "en":
            continue
        rng = _rng(spec.seed, "translation", code)
        makers = (scene_sentence, category_sentence, quantity_event)
        sentences = [rng.choice(makers)(rng) for _ in range(spec.translation_pairs)]
        _write(out / "translation" / code / f"train.{code}", "".join(lang.render(s) + "\n" for s in sentences))
        _write(out / "translation" / code / "train.en", "".join(en.render(s) + "\n" for s in sentences))
        counts[code] = len(sentences)
    return counts


def _write_queries(spec: WorldSpec, langs: dict[str, Language], out: Path, held_out: set[tuple],
                   trained: set[tuple]) -> dict[str, int]:
    """MindMerger augmentation-stage math data: [{lang, query, response}] per language (query translated,
    English response), as MindMerger translates MetaMathQA's queries; never a test problem. Their signatures are
    added to `trained`."""
    counts = {}
    for code, lang in langs.items():
        problems = unique_problems(_rng(spec.seed, "queries", code), spec.query_items, set(held_out))
        trained |= {p.signature for p in problems}
        rows = [{"lang": code, "query": p.render(lang), "response": p.solution} for p in problems]
        _write(out / "queries" / "math" / f"{code}.json", json.dumps(rows, ensure_ascii=False, indent=1))
        counts[code] = len(rows)
    return counts


def _write_benchmarks(spec: WorldSpec, langs: dict[str, Language], out: Path,
                      tests: dict[str, list[WordProblem]]) -> dict[str, int]:
    bench = out / "bench"
    _write_math(bench, langs, langs.get("en") or make_language("en", spec.seed), tests)
    xnli_rows = []
    for code, lang in langs.items():
        rng = _rng(spec.seed, "test", "choice")  # the same questions in every language
        _jsonl(bench / "xcsqa" / code / "dev.jsonl", (_csqa_item(rng, lang, i) for i in range(spec.test_items)))
        _write(bench / "mmlu" / f"{code}_test.json",
               json.dumps([_mmlu_item(rng, lang, i) for i in range(spec.test_items)], ensure_ascii=False, indent=1))
        rng = _rng(spec.seed, "test", "xnli")
        xnli_rows += [_xnli_row(rng, lang, i) for i in range(spec.test_items)]
    header = ["language", "gold_label", "sentence1", "sentence2", "promptID", "pairID", "genre"]
    _write(bench / "xnli" / "xnli.test.tsv",
           "\t".join(header) + "\n" + "".join("\t".join(str(r[h]) for h in header) + "\n" for r in xnli_rows))
    return {code: spec.test_items for code in langs}


def _write_math(folder: Path, langs: dict[str, Language], en: Language,
                problems: dict[str, list[WordProblem]]) -> dict[str, int]:
    """The math problems in MGSM's and MSVAMP's official file shapes, the same problems in every language (MSVAMP
    carries each one's English rendering too, from `en`)."""
    for code, lang in langs.items():
        _write(folder / "mgsm" / f"mgsm_{code}.tsv",
               "".join(f"{p.render(lang)}\t{p.answer:,}\n" for p in problems["mgsm"]))
        _jsonl(folder / "msvamp" / f"test_{language_name(code)}.json",
               ({"m_query": p.render(lang), "query": p.render(en), "equation": p.equation,
                 "response": str(p.answer)} for p in problems["msvamp"]))
    return {code: len(problems["mgsm"]) for code in langs}


def _csqa_item(rng: random.Random, lang: Language, i: int) -> dict:
    stem, options, gold = choice_question(rng, lang, 5)
    labels = "ABCDE"
    return {"id": f"demo-{lang.code}-{i:04d}", "lang": lang.code,
            "question": {"stem": stem, "choices": [{"label": labels[j], "text": t} for j, t in enumerate(options)]},
            "answerKey": labels[gold]}


MMLU_SCIENCE_SUBJECTS = ["college_biology", "college_chemistry", "college_physics",
                         "high_school_biology", "high_school_chemistry", "high_school_physics"]


def _mmlu_item(rng: random.Random, lang: Language, i: int) -> dict:
    stem, options, gold = choice_question(rng, lang, 4)
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
