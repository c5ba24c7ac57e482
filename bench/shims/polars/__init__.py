"""A stand-in for the one polars call Ultralytics 8.4.190 makes while training with plots=False.

BaseTrainer.save_model() stores results.csv in each checkpoint through `polars.read_csv(...).to_dict()`,
with the import outside its try: without polars every checkpoint save fails. The GPU machine has no
polars and its wheels (54 MB) do not fit the 64 MiB that travels, so bench/gpu_train.sh puts this folder
on PYTHONPATH only when `import polars` fails. Anything else from polars (plots, exports) fails loudly.
"""

from __future__ import annotations

import csv
import io

__version__ = "0.0-wd-shim"


class _Frame:
    def __init__(self, columns: dict[str, list]):
        self._columns = columns

    def to_dict(self, as_series: bool = True) -> dict[str, list]:
        return {k: list(v) for k, v in self._columns.items()}


def _value(text: str):
    try:
        return float(text) if any(c in text for c in ".eEn") else int(text)
    except ValueError:
        return text


def read_csv(source, infer_schema_length=None, **_ignored) -> _Frame:
    text = source.decode() if isinstance(source, bytes | bytearray) else open(source).read()
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        return _Frame({})
    header = [h.strip() for h in rows[0]]
    return _Frame({h: [_value(r[i].strip()) for r in rows[1:] if i < len(r)] for i, h in enumerate(header)})


def __getattr__(name: str):
    raise ImportError(f"bench/shims/polars provides only read_csv, not polars.{name}")
