"""Load and compile an Inductor INT8 program (``model.pt2``) on the machine that serves it.

``compression.inductor_int8`` exports and quantizes; here the program is compiled with ``torch.compile``
and Inductor's freezing (weights prepacked once for oneDNN), optionally under bf16 autocast, so the
kernels match the CPU it runs on.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
import torch._inductor.config as inductor_config

# Registers the quantized_decomposed ops the saved graph calls; without it the program cannot load.
import torchao.quantization.pt2e.quantize_pt2e  # noqa: F401
from transformers import AutoConfig

from slimbert.hardware import cpu_supports_bf16

PROGRAM_FILE = "model.pt2"
# How the program is to be compiled where it is loaded (written beside it, read by load_compiled).
COMPILE_FILE = "compile.json"


class CompiledProgram:
    """The compiled program, called like a model: tokenizer tensors in, an output with ``logits`` out."""

    def __init__(self, compiled: Callable[..., Any], names: list[str], config: Any, bf16_mixed: bool,
                 max_autotune: bool = False) -> None:
        self.compiled, self.input_names, self.config, self.bf16_mixed = compiled, names, config, bf16_mixed
        self.inductor_options: dict[str, Any] = {"freezing": True}
        if max_autotune:
            self.inductor_options.update(max_autotune=True, max_autotune_gemm_backends="CPP,ATEN")

    def __call__(self, **inputs: torch.Tensor) -> SimpleNamespace:
        # Freezing folds the int8 weights into constants that Inductor prepacks for oneDNN's qlinear.
        # It must be on whenever a call compiles, which is any call that meets a new shape family;
        # torch.compile(options={"freezing": True}) fails on the prepack op, the config patch does not.
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16_mixed), \
                inductor_config.patch(self.inductor_options):
            logits = self.compiled(**{k: inputs[k] for k in self.input_names})
        return SimpleNamespace(logits=logits.float())


def load_compiled(path: str | Path, *, bf16_mixed: bool | None = None) -> CompiledProgram:
    """``path/model.pt2`` compiled by Inductor; ``bf16_mixed`` defaults to ``cpu_supports_bf16()`` (native bf16 math).

    Compilation is lazy: the first call per shape family (batch 1, then larger batches) compiles, which
    takes tens of seconds, so callers warm up before they serve or time.
    """
    program = torch.export.load(Path(path) / PROGRAM_FILE)
    names = [spec.arg.name for spec in program.graph_signature.input_specs
             if spec.kind == torch.export.graph_signature.InputKind.USER_INPUT]
    compiled = torch.compile(program.module(), dynamic=True)
    mixed = cpu_supports_bf16() if bf16_mixed is None else bf16_mixed
    options_file = Path(path) / COMPILE_FILE
    options = json.loads(options_file.read_text()) if options_file.exists() else {}
    return CompiledProgram(compiled, names, AutoConfig.from_pretrained(path), mixed,
                           max_autotune=bool(options.get("max_autotune", False)))
