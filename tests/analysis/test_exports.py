"""Downloads: every table as CSV and JSON in one zip, the ratings, a SUREAL dataset SUREAL can read, the HTML's
formatting."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pandas as pd
import pytest

from analysis import exports
from analysis.mos import dmos_table, mos_table
from analysis.report import ReportOptions, build_report
from tests.analysis.datasets import NAMES, synthetic_metrics, synthetic_ratings

FAST = dict(n_boot=100, n_splits=50)


@pytest.fixture(scope="module")
def report():
    data = synthetic_ratings(n_participants=10, per_participant=12, seed=4)
    return build_report(data, synthetic_metrics(data), options=ReportOptions(condition_order=NAMES, **FAST))


@pytest.fixture(scope="module")
def archive(report):
    return zipfile.ZipFile(io.BytesIO(exports.report_zip(report, html="<html>report</html>")))


def test_the_zip_holds_every_table_as_csv_and_json(report, archive):
    names = set(archive.namelist())
    for key in report.all_tables():
        stem = key.replace("/", "__")
        assert {f"tables/{stem}.csv", f"tables/{stem}.json"} <= names, key
    assert {"ratings.csv", "report.json", "README.txt", "report.html", "sureal/sync.py", "sureal/visual.json"} <= names


def test_json_keeps_full_precision_and_csv_rounds(report, archive):
    table = report.table("mixed_model/emms")
    stored = json.loads(archive.read("tables/mixed_model__emms.json"))
    assert stored["columns"] == list(table.columns)
    assert [row["emm"] for row in stored["rows"]] == table["emm"].tolist()
    csv = pd.read_csv(io.BytesIO(archive.read("tables/mixed_model__emms.csv")))
    np.testing.assert_allclose(csv["emm"], table["emm"], atol=5e-7)
    assert list(csv.columns) == list(table.columns)


def test_missing_values_become_null_in_json():
    table = pd.DataFrame({"x": [1.0, np.nan, np.inf], "n": pd.array([1, None, 3], dtype="Int64"),
                          "ok": [True, False, True]})
    rows = json.loads(exports.table_json(table))["rows"]
    assert rows == [{"x": 1.0, "n": 1, "ok": True}, {"x": None, "n": None, "ok": False},
                    {"x": None, "n": 3, "ok": True}]


def test_the_ratings_are_every_rating_with_the_screening_outcome(report, archive):
    ratings = pd.read_csv(io.BytesIO(archive.read("ratings.csv")))
    assert len(ratings) == len(report.ratings)
    assert set(ratings["condition"]) == set(report.condition_labels.values())
    assert ratings["rejected"].dtype == bool


def test_a_blind_zip_names_no_condition(archive):
    text = b" ".join(archive.read(name) for name in archive.namelist()).decode("utf-8")
    for name in NAMES:
        assert name not in text
    manifest = json.loads(archive.read("report.json"))
    assert manifest["conditions_revealed"] is False and manifest["conditions"] is None


def test_the_manifest_lists_sections_notes_and_timings(report, archive):
    manifest = json.loads(archive.read("report.json"))
    assert [s["key"] for s in manifest["sections"]] == list(report.sections)
    assert manifest["highlights"] == report.highlights
    assert {row["step"] for row in manifest["timings"]} >= {"section: mos", "section: metrics"}


# --- SUREAL ----------------------------------------------------------------------------------------


def sureal_reader_checks(dataset: dict) -> np.ndarray:
    """What SUREAL's RawDatasetReader asserts on a dataset (sureal/dataset_reader.py, read at 526715c), and the
    opinion-score matrix it builds (distorted videos × observers, NaN where not rated)."""
    content_ids = [ref["content_id"] for ref in dataset["ref_videos"]]
    assert all(cid in range(max(content_ids) + 1) for cid in content_ids)
    for video in dataset["dis_videos"]:
        assert video["content_id"] in content_ids
        assert "os" in video and isinstance(video["os"], (list, tuple, dict))
    assert len({v["asset_id"] for v in dataset["dis_videos"]}) == len(dataset["dis_videos"])
    observers = sorted({o for v in dataset["dis_videos"] for o in v["os"]})
    matrix = np.full((len(dataset["dis_videos"]), len(observers)), np.nan)
    for i, video in enumerate(dataset["dis_videos"]):
        for j, observer in enumerate(observers):
            if observer in video["os"]:
                matrix[i, j] = video["os"][observer]
    return matrix


def test_the_sureal_file_loads_back_to_exactly_the_ratings():
    data = synthetic_ratings(n_participants=6, per_participant=10, seed=2)
    sync = data[data["scale"] == "sync"]
    text = exports.sureal_dataset_python(exports.sureal_dataset(sync, dataset_name="study_sync"))
    loaded = exports.read_sureal_dataset_python(text)
    assert loaded["dataset_name"] == "study_sync" and loaded["ref_score"] == 5.0 and loaded["yuv_fmt"] == "notyuv"
    long = exports.sureal_long(loaded)
    long["clip"] = long["path"].str.split("/").str[-1]
    original = sync.assign(participant=sync["participant"].astype(str))
    assert len(long) == len(sync)
    # every (participant, rating) pair of every clip survives the round trip
    reference_path = {f"{c}/reference": clip for c, clip in
                      sync[sync["condition_kind"] == "reference"].drop_duplicates("clip")[["content", "clip"]]
                      .itertuples(index=False)}
    long["clip"] = [reference_path.get(p, c) for p, c in zip(long["path"], long["clip"])]
    got = sorted(zip(long["clip"].astype(int), long["participant"], long["rating"]))
    want = sorted(zip(original["clip"], original["participant"], original["rating"]))
    assert got == want


def test_the_sureal_dataset_passes_the_reader_checks_and_gives_the_clip_mos():
    data = synthetic_ratings(n_participants=8, per_participant=10, seed=3)
    visual = data[data["scale"] == "visual"]
    dataset = exports.read_sureal_dataset_python(exports.sureal_dataset_python(exports.sureal_dataset(visual)))
    matrix = sureal_reader_checks(dataset)
    clip_mos = mos_table(visual, by=("clip",))["mos"].to_numpy()
    np.testing.assert_allclose(np.nanmean(matrix, axis=1), clip_mos)  # asset_id follows clip order


def test_the_hidden_reference_shares_its_contents_reference_path():
    data = synthetic_ratings(n_participants=6, per_participant=24, seed=5)
    dataset = exports.sureal_dataset(data[data["scale"] == "sync"])
    refs = {ref["content_id"]: ref["path"] for ref in dataset["ref_videos"]}
    is_reference = [refs[v["content_id"]] == v["path"] for v in dataset["dis_videos"]]  # SUREAL disvideo_is_refvideo
    n_reference_clips = data[(data["scale"] == "sync") & (data["condition_kind"] == "reference")]["clip"].nunique()
    assert sum(is_reference) == n_reference_clips == len(refs)


def test_repeated_ratings_of_a_clip_become_a_list():
    data = pd.DataFrame({"participant": [1, 1, 2], "clip": [7, 7, 7], "condition": ["C1"] * 3,
                         "content": ["a"] * 3, "rating": [4, 5, 3]})
    dataset = exports.sureal_dataset(data)
    assert dataset["dis_videos"][0]["os"] == {"1": [4, 5], "2": 3}
    assert len(exports.sureal_long(dataset)) == 3


def test_sureal_itself_reads_the_dataset_when_installed(tmp_path):
    """An extra check with the real package (not a dependency: pip install sureal to run it)."""
    reader = pytest.importorskip("sureal.dataset_reader")
    from sureal.subjective_model import MosModel
    from sureal.tools.misc import import_python_file

    data = synthetic_ratings(n_participants=8, per_participant=12, seed=6)
    sync = data[data["scale"] == "sync"]
    path = tmp_path / "sync.py"
    path.write_text(exports.sureal_dataset_python(exports.sureal_dataset(sync)))
    dataset = import_python_file(str(path))
    raw = reader.RawDatasetReader(dataset)
    result = MosModel(raw).run_modeling()
    np.testing.assert_allclose(result["quality_scores"], mos_table(sync, by=("clip",))["mos"].to_numpy())
    assert sum(raw.disvideo_is_refvideo) == sync.loc[sync["condition_kind"] == "reference", "clip"].nunique()
    from sureal.subjective_model import DmosModel

    dmos = dmos_table(sync, by=("clip",), pairing="mos", include_reference=True)["dmos"].to_numpy()
    np.testing.assert_allclose(DmosModel(raw).run_modeling()["quality_scores"], dmos, atol=1e-12)


# --- HTML formatting -------------------------------------------------------------------------------


@pytest.mark.parametrize("column, value, text", [
    ("mos", 3.14159, "3.142"), ("p_holm", 0.0004, "<0.001"), ("p_value", 0.0213, "0.021"), ("n", 12.0, "12"),
    ("rejected", True, "yes"), ("mos", np.nan, "–"), ("log_likelihood", -12345.678, "-12,345.7"),
    ("variance", 0.000123, "1.23e-04"), ("n_ratings", 99900, "99,900"), ("psnr", np.inf, "∞"),
])
def test_cells_read_as_a_researcher_expects(column, value, text):
    assert exports.format_value(column, value) == text


def test_long_tables_are_collapsed_and_truncated_in_the_page():
    table = pd.DataFrame({"participant": range(500), "note": ["x" * 200] * 500})
    shown = exports.table_display("decisions", table, max_rows=100)
    assert shown["collapsed"] and shown["truncated"] and shown["shown"] == 100 and shown["n_rows"] == 500
    assert shown["rows"][0][1]["title"] == "x" * 200 and shown["rows"][0][1]["text"].endswith("…")


def test_the_seeds_tables_show_mos_with_half_width_and_bold_the_best(report):
    user, metrics = exports.seeds_display(report)
    assert user["columns"] == ["Method", "Sync", "Visual", "Overall"]
    mos = report.table("mos/user_study").set_index("Method")
    best = mos["Sync"].idxmax()
    row = next(r for r in user["rows"] if r[0]["text"] == best)
    assert row[1]["best"] and "±" in row[1]["text"]
    assert metrics["columns"][:4] == ["Method", "SSIM ↑", "PSNR ↑", "FID ↓"]
    fid = report.table("metrics/metric_table").set_index("Method")["FID"]
    best_fid = next(r for r in metrics["rows"] if r[0]["text"] == fid.idxmin())
    assert best_fid[3]["best"]
