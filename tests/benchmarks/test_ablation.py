"""The evidence run's harness: a killed ablation continues without redoing finished runs, a torn results line is
ignored, changed settings are refused, the plan counts the right runs, and the table's numbers are the statistics of
the records (against plain formulas written here)."""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks import ablation, ablation_plan
from benchmarks.ablation_report import ResultsStore, best_baseline, curve_of, to_markdown
from benchmarks.ablation_variants import VARIANTS
from ssl_art import checkpoint as ckpt_io
from ssl_art.engine.loop import FitResult

ARGS = ["--unlabeled", "", "--labelled", "", "--no-synthetic", "--epochs", "2", "--seeds", "2", "--batch-size", "16"]


class Fakes:
    """Stand-ins for pretraining and evaluation that record what the driver asked for."""

    def __init__(self, stop_at: str = "") -> None:
        self.pretrained: list[tuple[str, bool]] = []
        self.evaluated: list[str] = []
        self.embeddings: list[str] = []
        self.stop_at = stop_at

    def run_pretrain(self, cfg: Any) -> FitResult:
        out = Path(cfg.run.output_dir)
        self.pretrained.append((out.parent.name + "/" + out.name, cfg.run.resume))
        out.mkdir(parents=True, exist_ok=True)
        ckpt_io.save_rolling(out / "checkpoints", 1, {"model": {}, "step": 1}, keep_last=1)
        with open(out / "metrics.jsonl", "a") as f:
            for e in (0, 1, 2):
                f.write(json.dumps({"step": e, "epoch": e, "monitor/knn_top1": 0.1 * e}) + "\n")
        stopped = "signal" if self.stop_at and out.parent.name + "/" + out.name == self.stop_at else "done"
        if stopped == "signal":
            self.stop_at = ""  # the next session finishes
        return FitResult(steps=4, epochs=2.0, stopped=stopped, seconds=0.1, images_per_s=1.0, nonfinite_skipped=0)

    def evaluate(self, checkpoint: str, a: Any, out_dir: Path, synth: Any, embedding: str = "auto") -> dict[str, Any]:
        self.evaluated.append(checkpoint)
        self.embeddings.append(embedding)
        seed = int(Path(checkpoint).name[-1]) if checkpoint else 0
        folds = [0.3 + 0.01 * seed + 0.001 * i + (0.05 if embedding == "stats" else 0.0) for i in range(5)]
        return {
            "knn_top1": float(np.mean(folds)),
            "linear_top1": float(np.mean(folds)) + 0.05,
            "knn_top1_folds": folds,
            "linear_top1_folds": [f + 0.05 for f in folds],
            "knn_top1_std": float(np.std(folds)),
        }


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> Fakes:
    f = Fakes()
    monkeypatch.setattr(ablation, "run_pretrain", f.run_pretrain)
    monkeypatch.setattr(ablation, "evaluate", f.evaluate)
    monkeypatch.setattr(ablation_plan, "step_cost", lambda cfg, **kw: 0.5 if cfg.method == "simclr" else 1.0)
    return f


def test_killed_ablation_continues_without_redoing_finished_runs(tmp_path: Path, fakes: Fakes) -> None:
    out = ["--out", str(tmp_path / "abl"), "--variants", "simclr,full_art_aug,no_soft", *ARGS]
    fakes.stop_at = "full_art_aug/seed0"  # SIGTERM during this pretraining
    first = ablation.main(out)
    assert [k for k, _ in fakes.pretrained] == ["simclr/seed0", "simclr/seed1", "full_art_aug/seed0"]
    assert len(first["records"]) == 3  # random_init + two simclr seeds
    fakes.pretrained.clear()
    fakes.evaluated.clear()

    second = ablation.main(out)
    # the stopped run resumes from its checkpoint; finished runs are neither pretrained nor evaluated again
    assert fakes.pretrained == [("full_art_aug/seed0", True), ("full_art_aug/seed1", False), ("no_soft/seed0", False)]
    assert [Path(c).parent.name + "/" + Path(c).name for c in fakes.evaluated] == [
        "full_art_aug/seed0",
        "full_art_aug/seed1",
        "no_soft/seed0",
    ]
    assert len(second["records"]) == 6
    assert second["records"][1]["curve"] == [[0, 0.0], [1, 0.1], [2, 0.2]]

    # a torn last line (killed while writing) is ignored; a third run does nothing new
    with open(tmp_path / "abl" / "results.jsonl", "a") as f:
        f.write('{"key": "no_soft/seed0", "fingerp')
    fakes.pretrained.clear()
    fakes.evaluated.clear()
    third = ablation.main(out)
    assert fakes.pretrained == [] and fakes.evaluated == [] and len(third["records"]) == 6
    assert "| no_soft | 1 |" in third["table"] and (tmp_path / "abl" / "curves.png").is_file()

    # different settings never mix with finished runs: refused with one error line
    with pytest.raises(SystemExit, match="error: .* other settings"):
        ablation.main([*out, "--set", "optim.lr=0.5"])


def test_a_tracked_results_file_outlives_the_run_folders(tmp_path: Path, fakes: Fakes) -> None:
    """A fresh clone has no ``--out`` folder (checkpoints are not in git): the tracked records still count as done."""
    results = tmp_path / "tracked" / "ablation.jsonl"
    out = ["--out", str(tmp_path / "abl"), "--results", str(results), *ARGS, "--seeds", "1", "--variants", "simclr"]
    ablation.main(out)
    assert results.is_file() and not (tmp_path / "abl" / "results.jsonl").exists()
    assert (results.parent / "ablation_step_cost.json").is_file()  # the measured step costs travel with it
    shutil.rmtree(tmp_path / "abl")  # the session's machine is gone, the run folders with it
    fakes.pretrained.clear()
    again = ablation.main(out)
    assert fakes.pretrained == [] and [r["key"] for r in again["records"]] == ["random_init/seed0", "simclr/seed0"]


def test_report_trains_nothing_and_tables_only_finished_runs(tmp_path: Path, fakes: Fakes) -> None:
    out = ["--out", str(tmp_path / "abl"), *ARGS, "--seeds", "1"]
    ablation.main([*out, "--variants", "simclr"])
    fakes.pretrained.clear()
    fakes.evaluated.clear()
    rep = ablation.main([*out, "--variants", "simclr,full_split", "--report"])
    assert fakes.pretrained == [] and fakes.evaluated == []
    assert [r["key"] for r in rep["records"]] == ["random_init/seed0", "simclr/seed0"]
    assert "full_split" not in rep["table"].split("Rows")[0]
    assert "`simclr`: SimCLR, standard augmentation" in rep["table"]  # the legend names each row's config
    pinned = ablation.main([*out, "--variants", "simclr", "--report", "--baseline", "simclr"])
    assert "(chosen with --baseline): **simclr**" in pinned["table"]


def test_pretrain_skips_a_finished_run(tmp_path: Path, fakes: Fakes) -> None:
    a = ablation.parse_args(["--out", str(tmp_path), *ARGS])
    cfg = ablation.make_config(VARIANTS["simclr"], a, 0, tmp_path / "simclr" / "seed0", [])
    meta = ablation.pretrain(cfg, tmp_path / "simclr" / "seed0.json")
    assert meta["done"] and meta["sessions"] == 1 and meta["steps"] == 4
    again = ablation.pretrain(cfg, tmp_path / "simclr" / "seed0.json")
    assert again == meta and len(fakes.pretrained) == 1


def test_a_run_killed_outright_keeps_the_compute_it_spent(
    tmp_path: Path, fakes: Fakes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL (a session's end) never lets ``run_pretrain`` return; the meta on disk must already count the compute
    spent, so the resumed run's record is its whole cost, not the last session's."""
    monkeypatch.setattr(ablation, "HEARTBEAT_S", 0.01, raising=False)
    meta_file = tmp_path / "simclr" / "seed0.json"
    seen: list[dict[str, Any]] = []

    class Killed(BaseException):
        pass

    def killed_run(cfg: Any) -> FitResult:
        t = time.process_time()
        while time.process_time() - t < 0.2:  # burn CPU, as a pretraining does
            pass
        time.sleep(0.1)  # a few heartbeats
        seen.append(json.loads(meta_file.read_text()))
        raise Killed  # nothing after this line runs in the driver, as with SIGKILL

    monkeypatch.setattr(ablation, "run_pretrain", killed_run)
    a = ablation.parse_args(["--out", str(tmp_path), *ARGS])
    cfg = ablation.make_config(VARIANTS["simclr"], a, 0, tmp_path / "simclr" / "seed0", [])
    with pytest.raises(Killed):
        ablation.pretrain(cfg, meta_file)
    assert seen[0]["cpu_s"] >= 0.15 and seen[0]["wall_s"] >= 0.25 and not seen[0].get("done")
    on_disk = json.loads(meta_file.read_text())
    assert on_disk["cpu_s"] >= 0.15  # what a resume starts from

    monkeypatch.setattr(ablation, "run_pretrain", fakes.run_pretrain)  # the next session finishes the run
    meta = ablation.pretrain(cfg, meta_file)
    assert meta["done"] and meta["cpu_s"] >= on_disk["cpu_s"] and meta["wall_s"] >= on_disk["wall_s"]


def test_plan_counts_runs_and_sums_the_estimate(tmp_path: Path, fakes: Fakes, capsys: pytest.CaptureFixture) -> None:
    res = ablation.main(["--out", str(tmp_path), "--plan", "--monitor-every", "0", *ARGS])
    # 6 core variants (3 SimCLR, 3 full) x 2 seeds + 4 removals x 1 seed; synthetic pool 1400 // 16 = 87 steps/epoch
    # x 2 epochs
    assert res["runs"] == 16
    steps = 2 * (1400 // 16)
    fwd = 0.5 / (3 * 2 * 16)
    per_eval = fwd * 1400 + 60
    want = (6 * steps * 0.5 + 10 * steps * 1.0) * 1.15 + 17 * per_eval  # + the random-init row's evaluation
    assert res["cpu_hours"] == pytest.approx(want / 3600)
    assert "full_art_aug/seed1" in capsys.readouterr().out
    res = ablation.main(["--out", str(tmp_path), "--plan", "--core", "simclr,full_art_aug", *ARGS])
    assert res["runs"] == 2 * 2 + 4 + 4  # the other 4 default rows and the removals at 1 seed


def test_results_store_and_curves(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "r.jsonl")
    store.add({"key": "a/seed0", "fingerprint": "x", "v": 1})
    store.add({"key": "a/seed0", "fingerprint": "y", "v": 2})  # a rerun with new settings: the later line wins
    (tmp_path / "r.jsonl").write_text((tmp_path / "r.jsonl").read_text() + "not json\n")
    again = ResultsStore(tmp_path / "r.jsonl")
    assert again.done("a/seed0", "y") and not again.done("a/seed0", "x") and not again.done("b/seed0", "y")
    m = tmp_path / "metrics.jsonl"
    m.write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {"step": 0, "epoch": 0, "monitor/knn_top1": 0.2},
                {"step": 5, "epoch": 1, "loss": 3.0},
                {"step": 10, "epoch": 1, "monitor/knn_top1": 0.3},
                {"step": 10, "epoch": 1, "monitor/knn_top1": 0.35},  # redone after a resume: the last one counts
            ]
        )
    )
    assert curve_of(m) == [(0, 0.2), (1, 0.35)]


def _rec(variant: str, seed: int, folds: list[float]) -> dict[str, Any]:
    return {
        "variant": variant,
        "seed": seed,
        "knn_top1": float(np.mean(folds)),
        "linear_top1": float(np.mean(folds)),
        "knn_top1_folds": folds,
        "linear_top1_folds": folds,
        "steps": 10,
    }


def test_table_numbers_are_the_records_statistics() -> None:
    recs = [
        _rec("simclr", 0, [0.30, 0.32]),
        _rec("simclr", 1, [0.34, 0.36]),
        _rec("simclr_art_aug", 0, [0.20, 0.22]),
        _rec("full", 0, [0.40, 0.42]),
        _rec("full", 1, [0.44, 0.46]),
    ]
    family = {"simclr": "simclr", "simclr_art_aug": "simclr", "full": "art_ssl"}
    assert best_baseline(recs, family) == "simclr"
    table = to_markdown(recs, family, {"simclr": 0.5, "full": 1.0}, "header", n_boot=2000)
    row = next(line for line in table.splitlines() if line.startswith("| full |"))
    seed_means = [0.41, 0.45]
    m = sum(seed_means) / 2
    s = math.sqrt(sum((x - m) ** 2 for x in seed_means) / 1)
    assert f"{100 * m:.1f} +- {100 * s:.1f}" in row
    assert "1.000 (x2.00)" in row
    assert "+10.0 [+10.0, +10.0] (2x2) *" in row  # every paired difference is exactly +0.10
    art = next(line for line in table.splitlines() if line.startswith("| simclr_art_aug |"))
    assert "-10.0 [-10.0, -10.0] (1x2) *" in art


def test_a_gpu_table_reports_wall_time_not_cpu_time() -> None:
    # a GPU run's process CPU time says little about its cost: --clock wall tables the recorded wall time
    recs = [{**_rec("simclr", 0, [0.3, 0.3]), "pretrain_cpu_s": 600.0, "pretrain_wall_s": 120.0}]
    family = {"simclr": "simclr"}
    cpu = to_markdown(recs, family, {"simclr": 0.5}, "h", n_boot=10)
    wall = to_markdown(recs, family, {"simclr": 0.5}, "h", n_boot=10, clock="wall")
    assert "step CPU-s (x simclr) | pretrain CPU-min" in cpu and "| 10.0 |" in cpu
    assert "step wall-s (x simclr) | pretrain wall-min" in wall and "| 2.0 |" in wall and "| 10.0 |" not in wall


def test_embedding_rows_score_the_source_checkpoints_and_train_nothing(tmp_path: Path, fakes: Fakes) -> None:
    out = ["--out", str(tmp_path / "abl"), *ARGS, "--seeds", "2", "--core", "simclr"]
    ablation.main([*out, "--variants", "simclr"])
    fakes.pretrained.clear(), fakes.evaluated.clear(), fakes.embeddings.clear()
    res = ablation.main([*out, "--variants", "simclr,simclr_stats,random_stats", "--removal-seeds", "2"])
    assert fakes.pretrained == []  # simclr's runs are finished; the stats rows reuse them
    runs = [Path(c).parent.name + "/" + Path(c).name if c else "random" for c in fakes.evaluated]
    assert runs == ["simclr/seed0", "simclr/seed1", "random"] and fakes.embeddings == ["stats"] * 3
    keys = [r["key"] for r in res["records"]]
    assert keys == ["random_init/seed0", "simclr/seed0", "simclr/seed1", "simclr_stats/seed0", "simclr_stats/seed1",
                    "random_stats/seed0"]  # fmt: skip
    assert all(bool(r["curve"]) == (r["variant"] == "simclr") for r in res["records"][1:])  # no duplicate curves
    table = res["table"]
    # the best SimCLR baseline may be an embedding row (it scores +5 here), never the random-init one
    assert "Best SimCLR baseline (highest mean kNN top-1): **simclr_stats**" in table
    assert "`random_stats`: random init, stats embedding; `eval.embedding=stats` on the `random_init` runs" in table
    again = ablation.main([*out, "--variants", "simclr,simclr_stats,random_stats", "--removal-seeds", "2"])
    assert len(again["records"]) == 6 and fakes.pretrained == []


def test_local_views_are_part_of_the_measured_step_cost(tmp_path: Path) -> None:
    import argparse
    import unittest.mock

    from ssl_art.config import PretrainConfig, config_from_dict

    def cfg(n_local: int) -> PretrainConfig:
        data = {"image_size": 32, "batch_size": 8, "aug": {"n_local": n_local}}
        return config_from_dict(PretrainConfig, {"data": data, "model": {"backbone": "test_resnet"}})

    seen: list[int] = []
    original = ablation_plan.build_pretrain_model

    def spy(c: PretrainConfig) -> Any:
        m = original(c)
        step = m.training_step
        m.training_step = lambda views, p: (seen.append(len(views)), step(views, p))[1]  # type: ignore[method-assign]
        return m

    with unittest.mock.patch.object(ablation_plan, "build_pretrain_model", spy):
        ablation_plan.step_cost(cfg(3), steps=1, warmup=0)
    assert seen == [5]  # 2 global + 3 local views timed
    calls: list[int] = []

    def fake_cost(c: PretrainConfig, **kw: Any) -> float:
        calls.append(c.data.aug.n_local)
        return 1.0 + c.data.aug.n_local

    cache = tmp_path / "cost.json"
    with unittest.mock.patch.object(ablation_plan, "step_cost", fake_cost):
        costs = ablation_plan.measure_costs([("plain", 0, 0), ("mc", 3, 0)], argparse.Namespace(plan=False), cache, cfg)
    assert calls == [0, 3] and costs == {"plain": 1.0, "mc": 4.0}  # measured apart, not shared with the plain row
    assert len(json.loads(cache.read_text())) == 2


def test_the_tracked_records_still_match_their_runs(tmp_path: Path) -> None:
    """A config key added later (at its default) must not orphan the records in ``benchmarks/results``: the docs'
    ``--report`` command still finds every one of them (it reads no image and trains nothing)."""
    results = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "ablation16.jsonl"
    if not results.is_file():
        pytest.skip("no tracked records in this checkout")
    if not Path(ablation.parse_args([]).labelled).is_dir():
        pytest.skip("../shared/data is not beside this checkout")
    names = "simclr_jitter_first,full_jitter_first,gram_only,no_fusion,no_distill,no_soft,no_gram"
    keys = {json.loads(line)["key"] for line in results.read_text().splitlines() if line.strip()}
    expected = {k for k in keys if k.split("/")[0] in names.split(",") + ["random_init"]}
    argv = ["--threads", "1", "--out", str(tmp_path), "--results", str(results), "--report", "--seeds", "3",
            "--removal-seeds", "3", "--core", "simclr_jitter_first,full_jitter_first", "--baseline",
            "simclr_jitter_first", "--variants", names, "--set", "run.amp=bf16", "run.channels_last=true"]  # fmt: skip
    found = {r["key"] for r in ablation.main(argv)["records"]}
    assert found == expected, sorted(expected - found)


def test_a_records_identity_does_not_depend_on_where_the_collection_lies(tmp_path: Path) -> None:
    """CI checks the repository out in another folder: a run's fingerprint must name the collection by what it holds
    (before, it held the absolute path, so no tracked record matched there), and still change when the files do."""
    here, there = tmp_path / "a" / "wikiart7-dev", tmp_path / "b" / "elsewhere" / "wikiart7-dev"
    for root in (here, there):
        (root / "Baroque").mkdir(parents=True)
        (root / "Baroque" / "x.jpg").write_bytes(b"12345")
        (root / "labels.csv").write_text("path,label\n")

    def fingerprints(labelled: Path) -> tuple[dict[str, Any], str]:
        a = ablation.parse_args(["--unlabeled", str(labelled), "--labelled", str(labelled)])
        cfg = ablation.make_config(VARIANTS["simclr_jitter_first"], a, 0, tmp_path / "run", [])
        return ablation.eval_fingerprint(a), ablation.pretrain_fingerprint(cfg)

    assert fingerprints(here) == fingerprints(there)
    ablation_plan.collection_id.cache_clear()
    (there / "Baroque" / "y.jpg").write_bytes(b"1")
    assert fingerprints(here)[0] != fingerprints(there)[0]
    assert fingerprints(here)[1] != fingerprints(there)[1]


def test_the_plans_one_step_guess_is_never_the_reported_step_cost(tmp_path: Path) -> None:
    """``--plan`` times one step per model; before, it cached that guess and the real run then reported it as the
    measured step cost (a cold process's single step ran 1.19 CPU-s where three warm ones run 0.7-0.8)."""
    import argparse
    import unittest.mock

    from ssl_art.config import PretrainConfig, config_from_dict

    def cfg(_: Any) -> PretrainConfig:
        return config_from_dict(PretrainConfig, {"data": {"image_size": 32}, "model": {"backbone": "test_resnet"}})

    steps: list[int] = []

    def fake_cost(c: PretrainConfig, **kw: Any) -> float:
        steps.append(kw["steps"])
        return 9.0 if kw["steps"] == 1 else 1.0

    cache, runs = tmp_path / "cost.json", [("a", 0, 0), ("b", 0, 0)]
    with unittest.mock.patch.object(ablation_plan, "step_cost", fake_cost):
        assert ablation_plan.measure_costs(runs, argparse.Namespace(plan=True), cache, cfg) == {"a": 9.0, "b": 9.0}
        assert not cache.exists() and steps == [1]  # timed once for the shared model, kept nowhere
        assert ablation_plan.measure_costs(runs, argparse.Namespace(plan=False), cache, cfg) == {"a": 1.0, "b": 1.0}
    assert steps == [1, 3] and list(json.loads(cache.read_text()).values()) == [1.0]
    # a report times nothing: on another machine (a CPU tabling GPU runs) its step would be mislabelled
    with unittest.mock.patch.object(ablation_plan, "step_cost", fake_cost):
        assert ablation_plan.measure_costs(runs, argparse.Namespace(plan=False, report=True), tmp_path / "x", cfg) == {}
    assert steps == [1, 3] and not (tmp_path / "x").exists()


def test_two_lanes_on_the_same_runs_do_each_run_once(
    tmp_path: Path, fakes: Fakes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two ablations started together on overlapping ``--variants``: before, both evaluated ``random_init`` (and
    would both train a shared row); now the second waits on the run's lock and then finds its record."""
    import threading

    out = ["--out", str(tmp_path / "abl"), *ARGS, "--seeds", "1", "--variants", "simclr"]
    inside, release = threading.Event(), threading.Event()
    evaluate = fakes.evaluate

    def slow_evaluate(checkpoint: str, *args: Any, **kw: Any) -> dict[str, Any]:
        inside.set()
        assert release.wait(10)
        return evaluate(checkpoint, *args, **kw)

    monkeypatch.setattr(ablation, "evaluate", slow_evaluate)
    results: list[dict[str, Any]] = []
    lanes = [threading.Thread(target=lambda: results.append(ablation.main(out))) for _ in range(2)]
    lanes[0].start()
    assert inside.wait(10)  # lane 1 is evaluating random_init
    lanes[1].start()
    time.sleep(0.5)  # lane 2 reaches random_init and waits on it
    release.set()
    for t in lanes:
        t.join(30)
    assert fakes.evaluated.count("") == 1 and [k for k, _ in fakes.pretrained] == ["simclr/seed0"]
    assert len(fakes.evaluated) == 2
    assert [len(r["records"]) for r in results] == [2, 2]  # each lane's table has both runs
