from __future__ import annotations

from pathlib import Path

from slimbert.report.results import variants_table, write_section
from slimbert.store.manifest import Technique, VariantManifest


def test_sections_are_replaced_in_place(tmp_path: Path) -> None:
    doc = tmp_path / "RESULTS.md"
    write_section(doc, "quick", "first quick")
    write_section(doc, "study", "the study")
    write_section(doc, "quick", "second quick")
    text = doc.read_text()
    assert "first quick" not in text and text.count("second quick") == 1 and "the study" in text
    assert text.index("second quick") < text.index("the study")


def test_variant_rows_carry_wilson_intervals() -> None:
    m = VariantManifest(family="f", variant="baseline-fp32", runtime="torch", precision="fp32", base_model_id="x",
                        technique=Technique(name="finetune"), labels={0: "a", 1: "b"}, num_parameters=1000,
                        dev_accuracy=0.8589, dev_examples=872)
    row = variants_table([m]).splitlines()[2]
    # 749/872 correct: Wilson 95% interval [0.8343, 0.8805] (by hand: centre 0.8574, half-width 0.0231)
    assert "0.8589 [0.834, 0.880]" in row and "| 872 |" in row
