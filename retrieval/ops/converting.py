"""`weights convert`: a state dict saved under another implementation's key names, renamed
in order onto a timm model's and written as a .safetensors file `--weights` loads."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, BinaryIO

from ..errors import UsageError
from ..store.files import atomic_write


@dataclass(frozen=True)
class ConvertReport:
    """What `convert_weights` wrote: `tensors` renamed from `source` (its SHA-256) into
    `output` (`size` bytes) for timm's `model`; `classifier`: the file's classifier came
    along (it did not when the file was headless)."""

    source: str
    output: str
    model: str
    tensors: int
    classifier: bool
    source_sha256: str
    size: int
    first_pair: tuple[str, str]
    last_pair: tuple[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "output": self.output,
            "model": self.model,
            "tensors": self.tensors,
            "classifier": self.classifier,
            "source_sha256": self.source_sha256,
            "bytes": self.size,
            "first": list(self.first_pair),
            "last": list(self.last_pair),
        }

    def lines(self) -> list[str]:
        head = "with its classifier" if self.classifier else "backbone only (no classifier)"
        return [
            f"converted {self.tensors} tensors ({head}) from {self.source} "
            f"(sha256 {self.source_sha256[:12]}) for {self.model}",
            f"  first: {self.first_pair[0]} -> {self.first_pair[1]}",
            f"  last:  {self.last_pair[0]} -> {self.last_pair[1]}",
            f"wrote {self.output} ({self.size:,} bytes); use it with "
            f"--model {self.model} --weights {self.output}",
        ]


def convert_weights(
    source: str | os.PathLike[str], model: str, output: str | os.PathLike[str]
) -> ConvertReport:
    """Rename `source`'s tensors, in order, to timm `model`'s keys and write `output`
    (.safetensors) atomically. Raises UsageError for another output suffix, WeightsMismatch
    when count or shapes differ (nothing written), StorageError when writing fails."""
    src, out = os.fspath(source), os.fspath(output)
    if not out.endswith(".safetensors"):
        raise UsageError(
            f"output {out} must end in .safetensors (the suffix tells --weights the format); "
            f"pass e.g. -o {os.path.splitext(out)[0]}.safetensors"
        )
    if os.path.abspath(src) == os.path.abspath(out):
        raise UsageError(f"output {out} is the source file; pass another -o FILE")
    from ..embedding.convert import convert_state

    converted = convert_state(src, model)

    def write(fh: BinaryIO) -> None:
        fh.write(converted.data)

    atomic_write(out, write, "converted weights")
    return ConvertReport(
        source=src,
        output=out,
        model=model,
        tensors=converted.tensors,
        classifier=converted.classifier,
        source_sha256=converted.source_sha256,
        size=len(converted.data),
        first_pair=converted.first_pair,
        last_pair=converted.last_pair,
    )
