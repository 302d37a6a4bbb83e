"""The comparison report: every evaluated model beside its base, language by language.

`build_comparison(scores, out_dir)` takes per-language score dicts (as `score_unit` writes them:
model, base, benchmark, language, accuracy, n, ci_low, ci_high, primary_rule), writes `report.md` and
`comparison.png`, and returns the table as a list of dict rows with the same keys in every row (what a
Prefect table artifact takes). `build_report(paths, out_dir)` does the same from score JSON files or
folders holding them (`linguaforge report RUN`).

Table: one row per benchmark × language and one `average` row per benchmark (the macro average over
the languages every model in the table was scored on); per model its accuracy in %, its chance level and its
chance-adjusted accuracy (pipelines/benchmarks/chance.py), and for a model with a base, the difference of the
adjusted accuracies in percentage points: a model that answers one value everywhere moves nothing. The headline's
differences have paired bootstrap intervals over the items both models answered.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: workers have no display
import matplotlib.pyplot as plt  # noqa: E402

from linguaforge.pipelines.benchmarks.chance import paired_difference  # noqa: E402
from linguaforge.pipelines.benchmarks.files import PLOT_FILE, REPORT_FILE, SCORES_FILE  # noqa: E402
from linguaforge.pipelines.benchmarks.registry import BENCHMARKS  # noqa: E402
from linguaforge.pipelines.benchmarks.scoring import macro_average  # noqa: E402
from linguaforge.pipelines.errors import InputError  # noqa: E402
from linguaforge.pipelines.locations import url_to_fs  # noqa: E402

_REQUIRED = ("model", "benchmark", "language", "accuracy", "n", "ci_low", "ci_high")


def read_scores(sources: str | Path | Iterable[str | Path], storage_options: dict | None = None) -> list[dict]:
    """Score dicts from JSON files, or from every `scores.json` below the given folders (local or fsspec)."""
    if isinstance(sources, str | Path):
        sources = [sources]
    scores = []
    for source in sources:
        fs, root = url_to_fs(str(source), "scores", storage_options)
        if not fs.exists(root):
            raise InputError(f"scores {source}: no such file or folder")
        paths = sorted(p for p in fs.find(root) if p.endswith(SCORES_FILE)) if fs.isdir(root) else [root]
        for path in paths:
            try:
                with fs.open(path, "r", encoding="utf-8") as f:
                    data = json.load(f)
            except json.JSONDecodeError as exc:
                raise InputError(f"{fs.unstrip_protocol(path)}: not valid JSON ({exc.msg})") from None
            for entry in data if isinstance(data, list) else [data]:
                scores.append({**entry, "_source": fs.unstrip_protocol(path)})
    if not scores:
        raise InputError(f"no scores.json found in {', '.join(map(str, sources))}")
    return scores


def latest_scores(scores: Iterable[dict]) -> list[dict]:
    """One score per model × benchmark × language, the last given winning: a store keeps the units of older runs
    too (another preset, an older evaluator), listed oldest first."""
    newest = {}
    for score in scores:
        newest[score["model"], score["benchmark"], score["language"]] = score
    return list(newest.values())


def build_report(sources: str | Path | Iterable[str | Path], out_dir: str | Path,
                 storage_options: dict | None = None, title: str = "linguaforge evaluation") -> list[dict]:
    return build_comparison(read_scores(sources, storage_options), out_dir, title=title)


def build_comparison(scores: Sequence[dict], out_dir: str | Path, title: str = "linguaforge evaluation",
                     pivot: str = "en") -> list[dict]:
    """Write report.md and comparison.png into `out_dir`; return the comparison table rows. `pivot`: the
    language the ability was trained in (left out of the headline's averages)."""
    table = _Table(scores, pivot)
    rows = table.rows()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _atomic_text(out / REPORT_FILE, table.markdown(title))
    tmp = out / f".{PLOT_FILE}.tmp.png"
    try:
        table.plot(tmp, title)
        os.replace(tmp, out / PLOT_FILE)
    finally:
        tmp.unlink(missing_ok=True)
    return rows


def comparison_rows(scores: Sequence[dict]) -> list[dict]:
    """The comparison table alone (no files)."""
    return _Table(scores).rows()


def headline_rows(scores: Sequence[dict], pivot: str = "en") -> list[dict]:
    """Per derived model and benchmark: the average difference to the run's base over the non-pivot
    languages, with its 95 % interval (and, for a model stacked on a derived one, the same against that)."""
    return _headline(_Table(scores, pivot), pivot)


def _difference(table: _Table, bench: str, model: str, ref: str, pivot: str) -> dict | None:
    """Mean over the non-pivot languages of adjusted(model) − adjusted(ref), in points, with a 95 % paired
    bootstrap interval over the items both answered (chance.paired_difference). None when no language has both,
    or the units hold no per-item answers (scored before linguaforge kept them: evaluate again)."""
    langs = [lang for lang in table.languages(bench) if lang != pivot
             and (bench, lang, model) in table.cells and (bench, lang, ref) in table.cells]
    units = [(table.cells[(bench, lang, model)].get("items"), table.cells[(bench, lang, ref)].get("items"))
             for lang in langs]
    if not langs or any(a is None or b is None for a, b in units):
        return None
    found = paired_difference(units, seed=_seed(bench, model, ref))
    return None if found is None else found | {"languages": langs}


def _seed(*names: str) -> int:
    """A fixed seed per comparison (the same interval every time the report is built)."""
    return int.from_bytes(hashlib.sha256("|".join(names).encode()).digest()[:4], "little")


def _headline(table: _Table, pivot: str) -> list[dict]:
    rows = []
    for model in table.models:
        for ref in reversed([ref for ref, _ in table.references(model)]):  # the root first
            row: dict = {"model": model, "vs": ref}
            for bench in table.benchmarks:
                row[bench] = _difference(table, bench, model, ref, pivot)
            rows.append(row)
    return rows


def headline_markdown(table: _Table, pivot: str) -> list[str]:
    rows = _headline(table, pivot)
    if not rows:
        return []
    benches = table.benchmarks
    lines = [f"## Headline: average Δ of chance-adjusted accuracy over the non-{pivot} languages (points, 95 % "
             "paired interval)", "",
             "| model | vs | " + " | ".join(benches) + " |", "|" + "---|" * (len(benches) + 2)]
    for row in rows:
        cells = [row["model"], row["vs"]]
        for bench in benches:
            d = row[bench]
            cells.append("*not scored*" if d is None else
                         f"{d['delta']:+.1f} [{d['ci_low']:+.1f}, {d['ci_high']:+.1f}]")
        lines.append("| " + " | ".join(cells) + " |")
    return lines + ["", "Adjusted accuracy = accuracy − chance, where chance is what the same answers would score "
                    "with the golds shuffled (a model that answers one value everywhere scores 0). The interval is "
                    "a paired bootstrap over the items both models answered (2 000 resamples, seeded); one that "
                    "lies above 0 is an effect.", ""]


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


class _Table:
    def __init__(self, scores: Sequence[dict], pivot: str = "en"):
        self.pivot = pivot
        if not scores:
            raise InputError("no scores to compare")
        self.cells: dict[tuple[str, str, str], dict] = {}
        self.base_of: dict[str, str | None] = {}
        self.rule_of: dict[str, str] = {}
        for i, s in enumerate(scores):
            where = s.get("_source") or f"scores[{i}]"
            for name in _REQUIRED:
                if s.get(name) is None:
                    raise InputError(f"{where}: field {name!r} is missing (give score_unit a model_name)"
                                     if name == "model" else f"{where}: field {name!r} is missing")
            model, key = s["model"], (s["benchmark"], s["language"], s["model"])
            if key in self.cells:
                raise InputError(f"{where}: {model} on {s['benchmark']}/{s['language']} is scored twice "
                                 f"(also in {self.cells[key].get('_source') or 'an earlier entry'})")
            base = s.get("base") or None
            if self.base_of.setdefault(model, base) != base:
                raise InputError(f"{where}: {model} has base {base!r} here but {self.base_of[model]!r} elsewhere")
            self.cells[key] = s
            self.rule_of.setdefault(s["benchmark"], s.get("primary_rule") or "accuracy")
        # bases first, each followed (depth first) by the models built on it, so a model stacked on a
        # derived model (MindMerger on the MAET model) sits under it; then models whose base was not evaluated
        models = list(self.base_of)
        self.models: list[str] = []

        def place(model: str) -> None:
            self.models.append(model)
            for m in models:
                if self.base_of[m] == model and m not in self.models:
                    place(m)

        for m in models:
            if self.base_of[m] is None:
                place(m)
        for m in models:
            if m not in self.models:
                place(m)
        self.benchmarks = list(dict.fromkeys(s["benchmark"] for s in scores))

    def languages(self, bench: str) -> list[str]:
        found = {lang for b, lang, _ in self.cells if b == bench}
        order = {c: i for i, c in enumerate(BENCHMARKS[bench].languages)} if bench in BENCHMARKS else {}
        return sorted(found, key=lambda c: (order.get(c, len(order)), c))

    def models_of(self, bench: str) -> list[str]:
        return [m for m in self.models if any(b == bench and mm == m for b, _, mm in self.cells)]

    def common_languages(self, bench: str) -> list[str]:
        return [lang for lang in self.languages(bench)
                if all((bench, lang, m) in self.cells for m in self.models_of(bench))]

    def delta_key(self, model: str) -> str | None:
        base = self.base_of[model]
        return f"{model} - {base}" if base is not None and base in self.base_of else None

    def root_of(self, model: str) -> str:
        """The evaluated model at the bottom of `model`'s chain of bases (the run's base LLM)."""
        seen = {model}
        while (base := self.base_of.get(model)) is not None and base in self.base_of and base not in seen:
            model = base
            seen.add(model)
        return model

    def root_delta_key(self, model: str) -> str | None:
        """A second difference, to the root, for a model whose own base is itself derived."""
        root = self.root_of(model)
        return f"{model} - {root}" if self.delta_key(model) and root != self.base_of[model] else None

    def references(self, model: str) -> list[tuple[str, str]]:
        """(reference model, delta column) for each difference `model` is shown with: its base, then the root."""
        pairs = ((self.base_of[model], self.delta_key(model)), (self.root_of(model), self.root_delta_key(model)))
        return [(ref, key) for ref, key in pairs if key]

    def n_varies(self, bench: str) -> bool:
        return len({c["n"] for (b, _, _), c in self.cells.items() if b == bench}) > 1

    def colour(self, model: str):
        """One colour per model in every panel: its position in the run's model list."""
        return plt.get_cmap("tab10")(self.models.index(model) % 10)

    def columns(self) -> list[str]:
        cols = ["benchmark", "metric", "language", "n"]
        per_model_n = any(self.n_varies(b) for b in self.benchmarks)
        for m in self.models:
            cols += [m, f"adj {m}", f"chance {m}"]
            cols += [key for _, key in self.references(m)]
            if per_model_n:
                cols.append(f"n {m}")
        return cols

    def accuracy(self, bench: str, lang: str, model: str, field: str = "accuracy") -> float | None:
        """In points: the accuracy, or (`field`) the chance level or the adjusted accuracy (None if not kept)."""
        cell = self.cells.get((bench, lang, model))
        return None if cell is None or cell.get(field) is None else 100.0 * cell[field]

    def average(self, bench: str, model: str, field: str = "accuracy") -> float | None:
        langs = self.common_languages(bench)
        if not langs or (bench, langs[0], model) not in self.cells:
            return None
        values = [self.accuracy(bench, lang, model, field) for lang in langs]
        return None if None in values else macro_average(values)

    def rows(self) -> list[dict]:
        rows = []
        for bench in self.benchmarks:
            for lang in [*self.languages(bench), "average"]:
                row = dict.fromkeys(self.columns())
                row.update(benchmark=bench, metric=self.rule_of[bench], language=lang)
                if lang != "average":
                    row["n"] = next(self.cells[(bench, lang, m)]["n"] for m in self.models
                                    if (bench, lang, m) in self.cells)
                for m in self.models:
                    def score(model: str, field: str, b=bench, lg=lang) -> float | None:
                        return self.average(b, model, field) if lg == "average" else self.accuracy(b, lg, model, field)

                    value, adjusted = score(m, "accuracy"), score(m, "adjusted")
                    row[m] = None if value is None else round(value, 2)
                    row[f"adj {m}"] = None if adjusted is None else round(adjusted, 2)
                    chance = score(m, "chance")
                    row[f"chance {m}"] = None if chance is None else round(chance, 2)
                    for ref_model, key in self.references(m):  # Δ: of the chance-adjusted accuracies
                        ref = score(ref_model, "adjusted")
                        row[key] = None if adjusted is None or ref is None else round(adjusted - ref, 2)
                    if f"n {m}" in row and lang != "average" and (cell := self.cells.get((bench, lang, m))):
                        row[f"n {m}"] = cell["n"]
                rows.append(row)
        return rows

    def markdown(self, title: str) -> str:
        lines = [f"# {title}", ""]
        lines += headline_markdown(self, self.pivot)
        lines += ["Accuracy in % with its 95 % Wilson interval, then its chance-adjusted value (accuracy − chance, "
                  "chance = what the same answers score with the golds shuffled); Δ = difference of the adjusted "
                  "accuracies to the model's base in percentage points (a model stacked on a derived model also "
                  "shows its difference to the run's base); ⚠ = one answer makes more than 25 % of the outputs; "
                  "average = macro average over the languages every model was scored on; *not scored* = no result "
                  "(which is not 0 %).", ""]
        for bench in self.benchmarks:
            models = self.models_of(bench)
            varies = self.n_varies(bench)
            lines += [f"## {bench} (rule: {self.rule_of[bench]})", ""]
            head = ["language", "n"] + [m + self._delta_label(m) for m in models]
            lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            for lang in self.languages(bench):
                n = next(self.cells[(bench, lang, m)]["n"] for m in models if (bench, lang, m) in self.cells)
                cells = [lang, "per model" if varies else str(n)]
                for m in models:
                    c = self.cells.get((bench, lang, m))
                    if c is None:
                        cells.append("*not scored*")
                        continue
                    text = f"{100 * c['accuracy']:.1f} [{100 * c['ci_low']:.1f}–{100 * c['ci_high']:.1f}]"
                    adjusted = self.accuracy(bench, lang, m, "adjusted")
                    if adjusted is not None:
                        text += f" · adj {adjusted:+.1f}" + self._deltas(
                            m, adjusted, lambda ref, b=bench, lg=lang: self.accuracy(b, lg, ref, "adjusted"))
                    if c.get("degenerate"):
                        text += f" ⚠ {100 * c['top_share']:.0f} % “{c['top_answer']}”"
                    cells.append(text + (f" n={c['n']}" if varies else ""))
                lines.append("| " + " | ".join(cells) + " |")
            avg = ["**average**", ""]
            for m in models:
                v, adjusted = self.average(bench, m), self.average(bench, m, "adjusted")
                text = "*not scored*" if v is None else f"**{v:.1f}**"
                if adjusted is not None:
                    text += f" · adj **{adjusted:+.1f}**" + self._deltas(
                        m, adjusted, lambda ref, b=bench: self.average(b, ref, "adjusted"))
                avg.append(text)
            lines += ["| " + " | ".join(avg) + " |", ""]
            missing = [lang for lang in self.languages(bench) if lang not in self.common_languages(bench)]
            if missing:
                lines += [f"Not every model was scored on {', '.join(missing)}: the average leaves them out.", ""]
            lines += self._well_formed(bench, models)
        lines += [f"![comparison]({PLOT_FILE})", ""]
        return "\n".join(lines)

    def _well_formed(self, bench: str, models: list[str]) -> list[str]:
        """Math: the share of outputs that hold a number at all (a model that answers with no number cannot be
        right, whatever it knows)."""
        if not any("with_number" in c for (b, _, _), c in self.cells.items() if b == bench):
            return []
        langs = self.languages(bench)
        lines = [f"Outputs holding a number, % ({bench}):", "", "| model | " + " | ".join(langs) + " |",
                 "|---|" + "---|" * len(langs)]
        for m in models:
            cells = [self.cells.get((bench, lang, m), {}).get("with_number") for lang in langs]
            lines.append(f"| {m} | " + " | ".join("—" if v is None else f"{100 * v:.0f}" for v in cells) + " |")
        return lines + [""]

    def _delta_label(self, model: str) -> str:
        refs = [ref for ref, _ in self.references(model)]
        return f" (Δ vs {', '.join(refs)})" if refs else ""

    def _deltas(self, model: str, value: float, score_of) -> str:
        parts = []
        for ref_model, _ in self.references(model):
            ref = score_of(ref_model)
            if ref is not None:
                parts.append(f"{value - ref:+.1f}")
        return f" ({', '.join(parts)})" if parts else ""

    def plot(self, path: Path, title: str) -> None:
        fig, axes = plt.subplots(len(self.benchmarks), 1, squeeze=False, dpi=110,
                                 figsize=(max(6.0, 0.9 * max(len(self.languages(b)) + 1 for b in self.benchmarks)
                                              * max(1, len(self.models)) ** 0.5), 3.2 * len(self.benchmarks)))
        for ax, bench in zip(axes[:, 0], self.benchmarks, strict=True):
            langs, models = self.languages(bench), self.models_of(bench)
            width = 0.8 / max(1, len(models))
            for j, m in enumerate(models):
                xs, ys, lo, hi = [], [], [], []
                for i, lang in enumerate(langs):
                    c = self.cells.get((bench, lang, m))
                    x = i + (j - (len(models) - 1) / 2) * width
                    if c is None:  # no result: a grey cross, never a bar of 0 %
                        ax.plot([x], [2], marker="x", color="0.5", ms=4)
                    elif c["accuracy"] == 0:  # a real 0 %: a tick at the axis, in the model's colour
                        ax.plot([x], [0.8], marker="_", color=self.colour(m), ms=8, mew=2)
                    if c is not None and c.get("chance") is not None:  # chance: a black tick across the bar
                        ax.plot([x - width * 0.45, x + width * 0.45], [100 * c["chance"]] * 2, color="black", lw=1.2)
                    if c is not None:
                        acc = 100 * c["accuracy"]
                        xs.append(i + (j - (len(models) - 1) / 2) * width)
                        ys.append(acc)
                        lo.append(max(0.0, acc - 100 * c["ci_low"]))  # float noise at 0 % / 100 %
                        hi.append(max(0.0, 100 * c["ci_high"] - acc))
                avg = self.average(bench, m)
                if avg is not None:
                    xs.append(len(langs) + (j - (len(models) - 1) / 2) * width)
                    ys.append(avg)
                    lo.append(float("nan"))  # a macro average has no binomial interval: no error bar
                    hi.append(float("nan"))
                ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, color=self.colour(m), label=m,
                       error_kw={"lw": 0.7})
            ax.set_xticks(range(len(langs) + 1), [*langs, "avg"])
            ax.set(title=f"{bench} ({self.rule_of[bench]})", ylabel="accuracy %", ylim=(0, 100))
            ax.grid(axis="y", alpha=0.3)
            ax.legend(fontsize=7, ncols=min(4, len(models)))
        axes[-1, 0].annotate("black tick = chance level (the same answers, golds shuffled); x = not scored",
                             (1.0, -0.22), xycoords="axes fraction", ha="right", fontsize=7, color="0.4")
        fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(path, format="png")
        plt.close(fig)
