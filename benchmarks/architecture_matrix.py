"""Which compression stages run on which encoder family: the table in docs/ARCHITECTURES.md.

Runs the ``every-stage-tiny`` recipe (plus Inductor INT8, which the preset leaves out to keep tests fast)
as a real compression job, in this process, on a tiny random model of each architecture with a real
tokenizer built offline (tests/tiny_archs.py), then tabulates each stage's state from the job record:
done, or skipped with the reason the job recorded. Random weights and a few dozen templated sentences:
this says what runs, not how well.

    .venv/bin/python benchmarks/architecture_matrix.py [--arch bert roberta ...] [--no-inductor]
        [--write docs/ARCHITECTURES.md]
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from slimbert.compression.presets import build_recipe  # noqa: E402
from slimbert.config import Settings  # noqa: E402
from slimbert.hardware import cpu_label  # noqa: E402
from slimbert.jobs import JobRecord, open_job_store  # noqa: E402
from slimbert.orchestrate.compress import run_compress  # noqa: E402
from tests.tiny_archs import ARCHITECTURES, save_tiny, write_tiny_sst2  # noqa: E402

log = logging.getLogger("architecture_matrix")


def run_arch(arch: str, root: Path, inductor: bool) -> tuple[list[dict[str, Any]], float]:
    """The stage records of one every-stage-tiny job on a tiny ``arch`` model, and its wall time."""
    model = save_tiny(arch, root / "models" / arch, head=False)  # a bare encoder: the job fine-tunes it
    settings = Settings(store_dir=root / "store", sst2_dir=root / "sst2", allowed_model_roots=[root],
                        _env_file=None)  # type: ignore[call-arg]
    overrides: dict[str, Any] = {"base_model": str(model), "family": f"matrix-{arch}"}
    if inductor:
        overrides["precision"] = {"int8_inductor": {"calibration_samples": 8}}
    recipe = build_recipe("every-stage-tiny", overrides)
    jobs = open_job_store(settings)
    job_id = "matrix" + arch.replace("-", "")
    jobs.save(JobRecord(id=job_id, request={"recipe": recipe.model_dump(mode="json")}))
    start = time.perf_counter()
    try:
        run_compress(settings, job_id, recipe, queue="cpu", worker="matrix")
    except Exception as exc:  # noqa: BLE001 - a failed job is a row of the table, not the end of the run
        log.exception("%s: the job failed", arch)
        stages = [s.model_dump(mode="json") for s in jobs.get(job_id).stages]
        stages.append({"name": "(job)", "state": "failed", "detail": {"reason": f"{type(exc).__name__}: {exc}"}})
        return stages, time.perf_counter() - start
    return [s.model_dump(mode="json") for s in jobs.get(job_id).stages], time.perf_counter() - start


def _cell(stage: dict[str, Any] | None) -> str:
    if stage is None:
        return "-"
    if stage["state"] == "done":
        return "done"
    reason = str(stage.get("detail", {}).get("reason", "")).replace("|", "/").replace("\n", " ")
    return f"{stage['state']}: {reason[:300]}"


def table(results: dict[str, list[dict[str, Any]]]) -> str:
    """Markdown: one row per stage (in run order), one column per architecture."""
    names: list[str] = []
    for stages in results.values():
        for s in stages:
            if s["name"] not in names:
                names.append(s["name"])
    lines = ["| stage | " + " | ".join(results) + " |", "|---" * (len(results) + 1) + "|"]
    for name in names:
        cells = [_cell(next((s for s in stages if s["name"] == name), None)) for stages in results.values()]
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", nargs="+", choices=ARCHITECTURES, default=list(ARCHITECTURES))
    parser.add_argument("--no-inductor", action="store_true", help="leave Inductor INT8 out (slow to compile)")
    parser.add_argument("--write", type=Path, help="write the table (with the command and CPU) into this file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    results: dict[str, list[dict[str, Any]]] = {}
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_tiny_sst2(root / "sst2")
        for arch in args.arch:
            results[arch], seconds[arch] = run_arch(arch, root, not args.no_inductor)
            print(f"{arch}: {seconds[arch]:.0f} s", file=sys.stderr)  # noqa: T201 - a CLI's progress
    command = "python benchmarks/architecture_matrix.py " + shlex.join(sys.argv[1:])
    devices = sorted({str(s.get("device")) for stages in results.values() for s in stages if s.get("device")})
    body = "\n".join([
        f"Command: `{command.strip()}`", "",
        f"CPU: {cpu_label()}; stages ran on: {', '.join(devices)}; "
        "seconds per job: " + ", ".join(f"{a} {s:.0f}" for a, s in seconds.items()), "",
        table(results)])
    print(body)  # noqa: T201 - the CLI's output
    if args.write:
        text = args.write.read_text() if args.write.exists() else ""
        begin, end = "<!-- matrix:begin -->", "<!-- matrix:end -->"
        if begin in text and end in text:
            text = text[: text.index(begin) + len(begin)] + "\n" + body + "\n" + text[text.index(end):]
        else:
            text = f"{text}\n{begin}\n{body}\n{end}\n"
        args.write.write_text(text)


if __name__ == "__main__":
    main()
