"""Scores in lm-evaluation-harness's results layout, so that the dashboards and scripts that read lm-eval's
`results_*.json` read ours too (lm-eval 0.4: `results`, `group_subtasks`, `configs`, `versions`, `n-shot`,
`higher_is_better`, `n-samples`, `config`).

One task per benchmark × language, named `<benchmark>_<iso>`; one group per benchmark. Each scoring rule is
an lm-eval *filter* of the `acc` metric (`acc,mindmerger`, `acc,flexible`, ...), with lm-eval's standard
error of a mean (sample standard deviation / √n). Only what the scores hold is written: nothing is made up
for fields lm-eval fills from its own task registry.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any

LAYOUT_VERSION = 1


def task_name(scores: dict) -> str:
    return f"{scores['benchmark']}_{scores['language']}"


def mean_stderr(accuracy: float, n: int) -> float:
    """lm-eval's `mean_stderr` of 0/1 outcomes: sqrt(p(1 − p) / (n − 1)) (the sample variance, not p(1 − p)/n)."""
    return math.sqrt(accuracy * (1 - accuracy) / (n - 1)) if n > 1 else float("nan")


def _task_results(scores: dict) -> dict[str, Any]:
    row: dict[str, Any] = {"alias": task_name(scores), "name": task_name(scores), "sample_len": scores["n"]}
    for rule, summary in scores["rules"].items():
        row[f"acc,{rule}"] = summary["accuracy"]
        row[f"acc_stderr,{rule}"] = mean_stderr(summary["accuracy"], summary["n"])
    if scores.get("chance") is not None:  # the primary rule's chance level and chance-adjusted accuracy
        rule = scores["primary_rule"]
        row[f"acc_chance,{rule}"], row[f"acc_adjusted,{rule}"] = scores["chance"], scores["adjusted"]
    return row


def _task_config(scores: dict) -> dict[str, Any]:
    generate = scores["scoring"] == "generate"
    config: dict[str, Any] = {
        "task": task_name(scores), "tag": scores["benchmark"], "dataset_path": scores.get("data_source"),
        "dataset_name": scores["language"], "output_type": "generate_until" if generate else "multiple_choice",
        "num_fewshot": scores.get("shots", 0),
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        "filter_list": [{"name": rule} for rule in scores["rules"]],
        "metadata": {"version": LAYOUT_VERSION, "prompt_preset": scores.get("preset"),
                     "primary_filter": scores.get("primary_rule"), "exemplars": scores.get("exemplars")},
    }
    if generate:
        config["generation_kwargs"] = {"until": scores.get("stop") or [], "max_gen_toks": scores.get("max_new_tokens"),
                                       "do_sample": False}
    return config


def sanitize_model_name(name: str) -> str:
    """As lm-eval names a model's results folder: path separators and odd characters become `__`."""
    return re.sub(r"[\"<>:/|\\?*\[\]]+", "__", name)


def lmeval_results(scores: list[dict], model_name: str, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """The lm-eval results document of one model's evaluation units (`scores.json` of each)."""
    if not scores:
        raise ValueError("lm-eval results need at least one scored unit")
    tasks = sorted(scores, key=task_name)
    groups: dict[str, list[str]] = {}
    for s in tasks:
        groups.setdefault(s["benchmark"], []).append(task_name(s))
    return {
        "results": {task_name(s): _task_results(s) for s in tasks},
        "group_subtasks": groups,
        "configs": {task_name(s): _task_config(s) for s in tasks},
        "versions": {task_name(s): LAYOUT_VERSION for s in tasks},
        "n-shot": {task_name(s): s.get("shots", 0) for s in tasks},
        "higher_is_better": {task_name(s): {"acc": True} for s in tasks},
        "n-samples": {task_name(s): {"original": s.get("items_total", s["n"]), "effective": s["n"]} for s in tasks},
        "config": {"model": "linguaforge", "model_args": f"pretrained={model_name}", **(config or {})},
        "model_name": model_name,
        "model_name_sanitized": sanitize_model_name(model_name),
    }


def samples_lines(records: list[dict], scores: dict) -> list[dict]:
    """The unit's items as lm-eval's `samples_<task>_<date>.jsonl` lines: one per item and scoring rule (lm-eval's
    filters), with the prompt and generation arguments, the raw response, the filtered answer, the target and
    whether it was right, and lm-eval's hashes of doc, prompt and target."""
    generate = scores["scoring"] == "generate"
    lines = []
    for doc_id, record in enumerate(records):
        doc = {"id": record["id"], "question": record["source_text"], "answer": record["gold"],
               "options": list(record.get("options") or [])}
        if generate:
            arguments = {"gen_args_0": {"arg_0": record["prompt"],
                                        "arg_1": {"until": scores.get("stop") or [],
                                                  "max_gen_toks": scores.get("max_new_tokens"), "do_sample": False}}}
            responses = [[record["output"]]]
        else:
            arguments = {f"gen_args_{k}": {"arg_0": record["prompt"], "arg_1": f" {option}"}
                         for k, option in enumerate(record.get("options") or [])}
            responses = [[value, False] for value in record.get("option_logprobs") or []]
        for rule in scores["rules"]:
            lines.append({"doc_id": doc_id, "doc": doc, "target": record["gold"], "arguments": arguments,
                          "resps": responses, "filtered_resps": [record.get(f"extracted_{rule}")], "filter": rule,
                          "metrics": ["acc"], "doc_hash": _hash(json.dumps(doc, ensure_ascii=False, sort_keys=True)),
                          "prompt_hash": _hash(record["prompt"]), "target_hash": _hash(record["gold"]),
                          "acc": float(bool(record.get(f"correct_{rule}")))})
    return lines


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
