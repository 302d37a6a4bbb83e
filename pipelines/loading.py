"""Loading a tokenizer, and the one-line error for a location that cannot be loaded. Kept apart from
`models` so that a caller who needs a tokenizer only does not import transformers' model classes (2.3 s)."""

from __future__ import annotations

from contextlib import contextmanager

# resolved at import, on one thread (see `models`): transformers' lazy attributes are not thread-safe
from transformers import AutoTokenizer

from linguaforge.pipelines.errors import InputError
from linguaforge.pipelines.locations import check_model_location, check_not_pickle_only


@contextmanager
def loading_errors(uri: str, what: str):
    """transformers' own errors for a bad location read as an HF-hub error ('Repo id must be in the form');
    say what was asked for and why it failed, in one line."""
    check_model_location(uri, what)
    if what != "tokenizer":
        check_not_pickle_only(uri, what)
    try:
        yield
    except InputError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InputError(f"{what} {uri}: cannot be loaded ({first[:300]})") from exc


def load_tokenizer(uri: str, revision: str | None = None):
    with loading_errors(uri, "tokenizer"):
        return AutoTokenizer.from_pretrained(uri, revision=revision)
