"""A mergekit YAML, read as a linguaforge merge job, for the methods both tools share, so a user can bring the
configuration they already have:

    merge_method: task_arithmetic | ties | dare_linear
    base_model: <hub id | folder | s3:// folder>
    models:
      - model: <hub id | folder | s3:// folder>      (the base may be listed too: it adds nothing)
        parameters: {weight: 1.0, density: 0.5}      (numbers, gradients or filter rules, as in mergekit)
    parameters: {lambda: 1.0, normalize: ..., int8_mask: ..., weight: ..., density: ...}  (defaults for every model)
    dtype: bfloat16                                  (out_dtype, if given, wins for the output)

What is refused, naming the key: layer slices, tokenizer or chat-template surgery, and the method options
whose arithmetic differs from ours (task arithmetic normalised, TIES not normalised, DARE without rescale).
`int8_mask` is accepted and ignored: it only saves memory in mergekit.
"""

from __future__ import annotations

from typing import Any

from linguaforge.pipelines.errors import InputError
from linguaforge.pipelines.merging.methods import METHODS

KNOWN_KEYS = {"merge_method", "base_model", "models", "parameters", "dtype", "out_dtype", "tokenizer_source",
              "tokenizer", "chat_template", "slices", "name"}
# options of mergekit's generalized task arithmetic that we compute only one way: (method, option) → our value
FIXED_OPTIONS = {("task_arithmetic", "normalize"): False, ("ties", "normalize"): True, ("dare", "normalize"): False,
                 ("dare", "rescale"): True, ("task_arithmetic", "rescale"): False, ("ties", "rescale"): False}


def _of_type(value: Any, kind: type, name: str, where: str) -> Any:
    if not isinstance(value, kind):
        expected = {dict: "a mapping", list: "a list"}[kind]
        raise InputError(f"{where}: {name} must be {expected}, got {type(value).__name__} {str(value)[:60]!r}")
    return value


def _text(value: Any, name: str, where: str) -> str:
    """A model location: a string (YAML reads a bare number or a list as such; neither names a model)."""
    if not isinstance(value, str):
        raise InputError(f"{where}: {name} must be a model id or path, got {type(value).__name__} {str(value)[:60]!r}")
    return value


def is_mergekit_config(data: dict[str, Any]) -> bool:
    return "merge_method" in data


def method_for(mergekit_name: str, where: str) -> str:
    for method in METHODS.values():
        if mergekit_name in method.mergekit_names:
            return method.name
    shared = sorted(n for m in METHODS.values() for n in m.mergekit_names)
    raise InputError(f"{where}: merge_method {mergekit_name!r} is not one linguaforge runs (it runs {', '.join(shared)})")


def job_from_mergekit(data: dict[str, Any], where: str) -> dict[str, Any]:
    """The fields of a linguaforge merge job (flows/merge_cli.py MergeJob) for a mergekit configuration."""
    unknown = sorted(set(data) - KNOWN_KEYS)
    if unknown:
        raise InputError(f"{where}: unknown key {unknown[0]!r} (a mergekit configuration has "
                         f"{', '.join(sorted(KNOWN_KEYS))})")
    for key in ("slices", "tokenizer", "chat_template"):
        if data.get(key) is not None:
            raise InputError(f"{where}: {key!r} is not supported (linguaforge merges whole models and keeps the "
                             "base's tokenizer and files)")
    if data.get("tokenizer_source") not in (None, "base"):
        raise InputError(f"{where}: tokenizer_source {data['tokenizer_source']!r} is not supported (only 'base')")
    method = method_for(str(data["merge_method"]), where)
    if not data.get("base_model"):
        raise InputError(f"{where}: base_model is required for {data['merge_method']} (deltas are taken against it)")
    base = _text(data["base_model"], "base_model", where)
    globals_ = _of_type(data.get("parameters") or {}, dict, "parameters", where)
    merge = _method_options(method, globals_, where)
    models = []
    for i, entry in enumerate(_of_type(data.get("models") or [], list, "models", where)):
        if not isinstance(entry, dict) or "model" not in entry:
            raise InputError(f"{where}: models[{i}] needs a `model`")
        if _text(entry["model"], f"models[{i}].model", where) == base:
            continue  # the base listed among the models contributes a zero delta
        own = _of_type(entry.get("parameters") or {}, dict, f"models[{i}].parameters", where)
        params = {**{k: globals_[k] for k in ("weight", "density") if k in globals_}, **own}
        extra = sorted(set(params) - set(METHODS[method].input_parameters) - {"weight", "density"})
        if extra:
            raise InputError(f"{where}: models[{i}].parameters.{extra[0]} is not a parameter of {data['merge_method']}")
        if "density" in params and "density" not in METHODS[method].input_parameters:
            raise InputError(f"{where}: models[{i}].parameters.density: {data['merge_method']} has no density")
        models.append({"model": str(entry["model"]), "weight": params.get("weight", 1.0),
                       "density": params.get("density")})
    if not models:
        raise InputError(f"{where}: models lists no model besides the base")
    job: dict[str, Any] = {"base": base, "models": models, "merge": merge}
    if data.get("out_dtype") or data.get("dtype"):
        job["dtype"] = str(data.get("out_dtype") or data["dtype"])
    return job


def _method_options(method: str, options: dict[str, Any], where: str) -> dict[str, Any]:
    """mergekit's global method options as our MergeConfig fields; an option we compute another way is refused."""
    merge: dict[str, Any] = {"method": method}
    for name, value in options.items():
        if name in ("weight", "density", "int8_mask"):
            continue
        if name == "lambda" and method == "task_arithmetic":
            merge["task_vector_lambda"] = value
        elif (method, name) in FIXED_OPTIONS:
            if bool(value) != FIXED_OPTIONS[method, name]:
                raise InputError(f"{where}: parameters.{name}: {value} is not supported for {method} "
                                 f"(linguaforge computes it as {name} = {FIXED_OPTIONS[method, name]})")
        else:
            raise InputError(f"{where}: parameters.{name} is not an option linguaforge's {method} has")
    return merge
