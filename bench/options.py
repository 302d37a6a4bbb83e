"""A bench's command line, declared as data: {option: default} (the type follows the default), or
{option: dict of argparse keywords} where a default does not say it all."""

from __future__ import annotations

import argparse
from typing import Any


def parse_options(doc: str | None, options: dict[str, Any]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, spec in options.items():
        keywords = spec if isinstance(spec, dict) else {"default": spec, "type": type(spec)}
        parser.add_argument(f"--{name}", **keywords)
    return parser.parse_args()
