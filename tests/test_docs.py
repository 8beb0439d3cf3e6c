"""The commands and links of README.md and BENCHMARKS.md name files that exist."""
import re
from pathlib import Path

import pytest
from helpers import import_bench, import_tool

ROOT = Path(__file__).resolve().parents[1]
DOCS = ["README.md", "BENCHMARKS.md"]
PATH = re.compile(r"(?<![\w/.-])((?:configs|tools|benchmarks)/[\w./-]+\.(?:yaml|py|json|sh))")


@pytest.mark.parametrize("doc", DOCS)
def test_every_named_project_file_exists(doc):
    named = set(PATH.findall((ROOT / doc).read_text()))
    assert any(p.startswith("configs/") for p in named)  # the pattern still finds the configs
    missing = sorted(p for p in named if not (ROOT / p).is_file())
    assert not missing, f"{doc} names files that do not exist: {missing}"


def test_results_tables_in_the_docs_are_the_ones_the_results_files_give():
    results_table = import_tool("results_table")

    readme, benchmarks = ((ROOT / doc).read_text() for doc in DOCS)
    # README holds the results table, BENCHMARKS.md the parts table; any copy elsewhere is equal too
    assert results_table.BEGIN in readme and results_table.PARTS_BEGIN in benchmarks
    for begin, end, make in results_table.TABLES:
        for doc, text in zip(DOCS, (readme, benchmarks)):
            if begin in text:
                assert results_table.readme_table(text, begin, end) == make(), (doc, begin)
    blocks = [(doc, spec, table) for doc, text in zip(DOCS, (readme, benchmarks))
              for spec, table in results_table.runs_blocks(text)]
    assert blocks  # BENCHMARKS.md's orientation runs at least
    for doc, spec, table in blocks:
        assert table == results_table.runs_table(spec), (doc, spec)


def test_runs_table_lists_every_run_of_its_files_in_variant_then_seed_order(tmp_path):
    import json
    results_table = import_tool("results_table")

    def bbox(ap50):
        return {"AP": ap50 / 2, "AP50": ap50, "AP75": ap50 / 3, "AP50-crazing": ap50 - 1, "AP50-rolled-in_scale": ap50 + 1}

    runs = {"tkd@1": 60.0, "baseline@2": 50.0, "teacher": 70.0, "baseline@1": 55.0}
    (tmp_path / "a.json").write_text(json.dumps({"pair": "Lite2-Lite0", "runs": {k: {"bbox": bbox(v)} for k, v in runs.items()}}))
    (tmp_path / "b.json").write_text(json.dumps({"pair": "Lite2-Lite0", "runs": {"crd@3": {"bbox": bbox(40.0)}}}))
    table = results_table.runs_table("a; b = long", tmp_path).splitlines()
    assert table[0] == "| run | AP50 | AP | AP75 | crazing | rolled-in scale |"
    assert [row.split(" | ")[0] for row in table[2:]] == [
        "| Lite2 teacher", "| Lite0 baseline, `SEED 1`", "| Lite0 baseline, `SEED 2`",
        "| Lite0 TKD (all three), `SEED 1`", "| Lite0 CRD, long, `SEED 3`"]
    assert table[3] == "| Lite0 baseline, `SEED 1` | 55.0 | 27.5 | 18.3 | 54.0 | 56.0 |"
    doc = "x\n<!-- runs-table: b = long -->\nstale\n<!-- /runs-table -->\ny"
    written = results_table.write_runs_tables(doc, tmp_path)
    assert results_table.runs_blocks(written) == [("b = long", results_table.runs_table("b = long", tmp_path))]
    with pytest.raises(FileNotFoundError, match="c.json"):
        results_table.runs_table("c", tmp_path)


def test_runs_tables_label_every_variant_bench_accuracy_writes_in_its_order():
    results_table = import_tool("results_table")

    bench_accuracy = import_bench("bench_accuracy")
    assert list(results_table.VARIANT_LABELS) == bench_accuracy.ORDER
    assert set(bench_accuracy.VARIANT_PARTS) | {"teacher"} == set(results_table.VARIANT_LABELS)


def test_kept_teachers_hold_their_weights():
    """A teacher kept for later sessions (bench_accuracy --teacher DIR) has its weights, config
    and AP in the repository: a clean clone (CI) fails here if the weights were never committed."""
    folders = sorted(p for p in (ROOT / "benchmarks" / "results" / "teachers").iterdir() if p.is_dir())
    assert folders
    for folder in folders:
        missing = [f for f in ("model_final.pth", "config.yaml", "ap_results.json") if not (folder / f).is_file()]
        assert not missing, f"{folder}: {missing}"


def test_paired_difference_pairs_runs_by_seed():
    results_table = import_tool("results_table")

    crd = {1: 70.0, 2: 68.0, 3: 69.0}
    # seed 4 has no CRD run and a bare key (seed None) pairs with nothing: both are left out
    ded = {1: 71.0, 2: 69.5, 4: 50.0, None: 10.0}
    assert results_table.paired_difference(ded, crd) == "+1.2 ± 0.2 (2)"  # diffs 1.0, 1.5
    assert results_table.paired_difference({3: 69.04}, crd) == "+0.0 (1)"
    assert results_table.paired_difference({3: 68.98}, crd) == "+0.0 (1)"  # never "-0.0"
    assert results_table.paired_difference({5: 1.0}, crd) == "–"


def test_pairing_by_seed_refuses_two_runs_of_one_seed_under_one_label():
    results_table = import_tool("results_table")

    found = [(1, {"AP50": 70.0}), (None, {"AP50": 10.0}), (2, {"AP50": 68.0})]
    assert results_table.ap50_by_seed(found, "x / CRD") == {1: 70.0, 2: 68.0}
    with pytest.raises(ValueError, match="x / CRD: two runs of seed 1"):
        results_table.ap50_by_seed(found + [(1, {"AP50": 71.0})], "x / CRD")
