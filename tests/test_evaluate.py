"""`retrieval evaluate`: the metric arithmetic checked on hand-computed cases (vectors given,
through `eval_metrics`), then end to end on drawn images in class folders with the tiny
untrained model, and the bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_DIM, cropped, draw_image, flipped, run_cli, save_image

from retrieval import EvaluationReport, UsageError, WeightsSpec, defaults, evaluate
from retrieval.ops.eval_metrics import best_threshold, pair_scores, retrieval_scores

TINY_MODEL = ("--model", "test_resnet", "--no-pretrained", "--workers", "0", "--quiet")


def _on_circle(*degrees: float) -> np.ndarray:
    """Unit vectors at these angles: cosine order is angular distance order."""
    rad = np.radians(degrees)
    return np.stack([np.cos(rad), np.sin(rad)], axis=1).astype(np.float32)


# -- the arithmetic, by hand ------------------------------------------------------------------

#: a0, a1, a2 of class 0 and b0, b1 of class 1 on a circle (no ties in any ranking).
ANGLES = (0, 10, 50, 27, 95)
LABELS = (0, 0, 0, 1, 1)


def test_metrics_at_k2_match_the_hand_computation() -> None:
    """Rankings (k=2, query left out): a0 -> a1 b0; a1 -> a0 b0; a2 -> b0 a1; b0 -> a1 a2;
    b1 -> a2 b0. Relevant counts: 2 for a*, 1 for b*."""
    scores = retrieval_scores(_on_circle(*ANGLES), LABELS, k=2)
    # AP@2 = sum of precision@i at relevant ranks / min(2, R)
    assert scores.average_precision.tolist() == pytest.approx(
        [1 / 2, 1 / 2, (1 / 2) / 2, 0, (1 / 2) / 1]
    )
    assert scores.precision.tolist() == pytest.approx([1 / 2, 1 / 2, 1 / 2, 0, 1 / 2])
    assert scores.recall.tolist() == pytest.approx([1 / 2, 1 / 2, 1 / 2, 0, 1])
    a, b = np.array(LABELS) == 0, np.array(LABELS) == 1
    assert scores.over(a).map_at_k == pytest.approx(1.25 / 3)
    assert scores.over(b).map_at_k == pytest.approx(0.25)
    everyone = scores.over(np.ones(5, bool))
    assert (everyone.map_at_k, everyone.precision_at_k, everyone.recall_at_k) == pytest.approx(
        (0.35, 0.4, 0.5)
    )


def test_k_beyond_the_collection_ranks_everything_else() -> None:
    """k=10 with 5 images: L = 4. a0 ranks a1(rel) b0 a2(rel) b1: AP = (1/1 + 2/3) / 2,
    precision = 2/4, recall = 2/2."""
    scores = retrieval_scores(_on_circle(*ANGLES), LABELS, k=10)
    assert scores.average_precision[0] == pytest.approx(5 / 6)
    assert (scores.precision[0], scores.recall[0]) == (0.5, 1.0)


def test_an_image_alone_in_its_class_is_counted_and_left_out_of_the_means() -> None:
    """c0 at 180 degrees never enters a top 2, so the others' numbers stay as above."""
    scores = retrieval_scores(_on_circle(*ANGLES, 180), (*LABELS, 2), k=2)
    assert np.isnan(scores.average_precision[5])
    everyone = scores.over(np.ones(6, bool))
    assert (everyone.queries, everyone.no_relevant) == (6, 1)
    assert everyone.map_at_k == pytest.approx(0.35)
    alone = scores.over(np.array([False] * 5 + [True]))
    assert (alone.queries, alone.no_relevant, alone.map_at_k, alone.recall_at_k) == (
        1,
        1,
        None,
        None,
    )


def test_pair_scores_match_the_hand_computation() -> None:
    """Cosines: (0,1) .985, (1,2) .940, (0,2) .866, (2,3) .5, (1,3) .174, (0,3) 0.
    True pairs: (0,1) and (1,2)."""
    xb = _on_circle(0, 10, 30, 90)
    sweep = pair_scores(xb, {(0, 1), (1, 2)}, [0.99, 0.8, 0.9, 0.95])
    got = [(s.threshold, s.predicted, s.true_positives, s.precision, s.recall, s.f1) for s in sweep]
    expected = [
        (0.8, 3, 2, 2 / 3, 1.0, 0.8),
        (0.9, 2, 2, 1.0, 1.0, 1.0),
        (0.95, 1, 1, 1.0, 0.5, 2 / 3),
    ]
    for row, want in zip(got[:3], expected, strict=True):
        assert row == pytest.approx(want)
    assert got[3][:5] == (0.99, 0, 0, None, 0.0) and got[3][5] == 0.0
    assert best_threshold(sweep).threshold == 0.9


def test_pair_scores_ties_go_to_the_highest_threshold_and_missing_images_count_as_missed():
    xb = _on_circle(0, 10, 90)
    sweep = pair_scores(xb, {(0, 1), (-1, -3)}, [0.9, 0.95])  # (-1, -3): an image left out
    assert [(s.true_positives, s.recall) for s in sweep] == [(1, 0.5), (1, 0.5)]
    assert best_threshold(sweep).threshold == 0.95
    assert best_threshold(pair_scores(xb, {(0, 2)}, [0.9])) is None  # F1 0 everywhere


# -- end to end, drawn classes ---------------------------------------------------------------


def _variants(seed: int) -> dict[str, object]:
    image = draw_image(seed, (160, 120))
    return {
        "orig": image,
        "flip": flipped(image),
        "crop": cropped(image),
        "small": image.resize((120, 90)),
    }


def _classes(root: Path, seeds: tuple[int, ...] = (11, 22, 33)) -> Path:
    """One class per drawing: the drawing and three edited copies."""
    for seed in seeds:
        for name, image in _variants(seed).items():
            save_image(image, root / f"class{seed}" / f"{name}.png")
    return root


def test_drawn_classes_are_retrieved_perfectly_by_the_tiny_model(tmp_path: Path) -> None:
    root = _classes(tmp_path / "set")
    result = run_cli("evaluate", root, *TINY_MODEL, "--k", "3", "--json")
    assert result.exit_code == 0, result.stderr
    data = result.json()
    assert data["images"] == 12 and data["k"] == 3
    assert [c["name"] for c in data["classes"]] == ["class11", "class22", "class33"]
    assert data["overall"] == {
        "queries": 12, "no_relevant": 0, "map": 1.0, "precision": 1.0, "recall": 1.0,
        "macro_map": 1.0,
    }  # fmt: skip
    assert data["failed"] == [] and data["duplicates"] is None


def test_table_output_and_the_odd_files(tmp_path: Path) -> None:
    """A class of one image, an unreadable image, a file directly in DIR: reported, the
    run goes on."""
    root = _classes(tmp_path / "set", seeds=(11, 22))
    save_image(draw_image(5), root / "lonely" / "only.png")
    (root / "class22" / "broken.jpg").write_bytes(b"not a jpeg")
    save_image(draw_image(6), root / "stray.png")
    result = run_cli("evaluate", root, *TINY_MODEL, "--k", "3")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("9 images in 3 classes, test_resnet (untrained (seed 0)), k=3, ")
    assert lines[1:6] == [
        "class    images    mAP@3      P@3      R@3",
        "class11       4   1.0000   1.0000   1.0000",
        "class22       4   1.0000   1.0000   1.0000",
        "lonely        1        -        -        -",
        "overall       9   1.0000   1.0000   1.0000",
    ]
    assert lines[6] == "macro mAP@3 (mean over classes): 1.0000"
    assert lines[7] == (
        "1 image(s) are alone in their class: no relevant item, left out of the means "
        "(add images to those classes)"
    )
    assert lines[8] == "1 image(s) directly in DIR belong to no class: ignored"
    assert lines[9].startswith("failed: class22/broken.jpg: ")


def test_library_report(tmp_path: Path) -> None:
    root = _classes(tmp_path / "set", seeds=(11, 22))
    report = evaluate(
        root, model="test_resnet", weights=WeightsSpec("untrained", identity="0"), k=3, workers=0
    )
    assert isinstance(report, EvaluationReport)
    assert report.vectors is not None and report.vectors.shape == (8, TINY_DIM)
    assert report.to_dict()["overall"]["map"] == 1.0
    with pytest.raises(AttributeError):
        report.k = 5  # type: ignore[misc]  # frozen


def test_duplicates_against_a_ground_truth_file(tmp_path: Path) -> None:
    root = _classes(tmp_path / "set", seeds=(11, 22))
    truth = tmp_path / "truth.json"
    # imagededup's format, one direction only (the other is implied), with an empty entry
    truth.write_text(json.dumps({
        "class11/orig.png": ["class11/flip.png", "class11/small.png"],
        "class22/small.png": ["class22/orig.png"],
        "class22/crop.png": [],
    }))  # fmt: skip
    result = run_cli("evaluate", root, *TINY_MODEL, "--duplicates", truth, "--json")
    assert result.exit_code == 0, result.stderr
    dups = result.json()["duplicates"]
    assert dups["true_pairs"] == 3
    assert dups["at_threshold"]["threshold"] == defaults.DUPS_THRESHOLD
    assert [s["threshold"] for s in dups["sweep"]] == [round(t / 100, 2) for t in range(50, 100)]
    best = dups["best"]
    assert dups["suggested_threshold"] == best["threshold"]
    assert best["f1"] == max(s["f1"] or 0 for s in dups["sweep"])
    sweep = {s["threshold"]: s for s in dups["sweep"]}
    assert all(
        sweep[t]["predicted"] >= sweep[u]["predicted"]
        for t, u in zip(sorted(sweep)[:-1], sorted(sweep)[1:], strict=True)
    )
    table = run_cli("evaluate", root, *TINY_MODEL, "--duplicates", truth, "--threshold", "0.5")
    assert table.exit_code == 0
    assert "duplicates (3 true pairs in " in table.stdout
    assert "  at threshold 0.50: precision " in table.stdout


def test_a_pair_with_an_unreadable_image_counts_as_missed(tmp_path: Path) -> None:
    root = _classes(tmp_path / "set", seeds=(11,))
    (root / "class11" / "broken.png").write_bytes(b"\x89PNG broken")
    truth = tmp_path / "truth.json"
    truth.write_text(json.dumps({"class11/orig.png": ["class11/broken.png"]}))
    report = evaluate(
        root,
        model="test_resnet",
        weights=WeightsSpec("untrained"),
        duplicates=truth,
        threshold=0.5,
        workers=0,
    )
    assert report.duplicates is not None
    at = report.duplicates.at_threshold
    assert (report.duplicates.true_pairs, at.true_positives, at.recall) == (1, 0, 0.0)
    assert [p for p, _ in report.failed] == ["class11/broken.png"]


# -- bad input ---------------------------------------------------------------------------------


def test_a_folder_without_subfolders_is_refused(tmp_path: Path) -> None:
    save_image(draw_image(1), tmp_path / "flat" / "a.png")
    result = run_cli("evaluate", tmp_path / "flat", *TINY_MODEL)
    assert result.exit_code == 1
    flat = tmp_path / "flat"
    assert result.stderr == (
        f"error: {flat} has no subfolders; evaluate needs one subfolder per class "
        f"(e.g. {flat}/cats/*.jpg, {flat}/dogs/*.jpg)\n"
    )


def test_class_folders_without_images_are_refused(tmp_path: Path) -> None:
    (tmp_path / "set" / "a").mkdir(parents=True)
    (tmp_path / "set" / "a" / "notes.txt").write_text("hi")
    result = run_cli("evaluate", tmp_path / "set", *TINY_MODEL)
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: the class folders of {tmp_path / 'set'} hold no images; add images to them\n"
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "{truth} is not JSON (Expecting property name enclosed in double quotes: "
         "line 1 column 2 (char 1)); it must map each file to its duplicates, "
         '{{"cats/a.jpg": ["cats/a_copy.jpg"], ...}}, names relative to DIR'),
        ('["class11/orig.png"]', "{truth} is not a duplicates mapping; it must map each file to "
         'its duplicates, {{"cats/a.jpg": ["cats/a_copy.jpg"], ...}}, names relative to DIR'),
        ('{"class11/orig.png": "class11/flip.png"}', "{truth} is not a duplicates mapping; it "
         'must map each file to its duplicates, {{"cats/a.jpg": ["cats/a_copy.jpg"], ...}}, '
         "names relative to DIR"),
        ('{"orig.png": ["class11/flip.png"]}', "{truth} names 'orig.png', which is not an image "
         "under a class folder of DIR; names must be relative to DIR (e.g. 'cats/a.jpg')"),
    ],
)  # fmt: skip
def test_a_malformed_truth_file_is_one_line(tmp_path: Path, content: str, message: str) -> None:
    root = _classes(tmp_path / "set", seeds=(11,))
    truth = tmp_path / "truth.json"
    truth.write_text(content)
    result = run_cli("evaluate", root, *TINY_MODEL, "--duplicates", truth)
    assert result.exit_code == 1
    assert result.stderr == f"error: {message.format(truth=truth)}\n"


def test_plot_needs_duplicates(tmp_path: Path) -> None:
    root = _classes(tmp_path / "set", seeds=(11,))
    result = run_cli("evaluate", root, *TINY_MODEL, "--plot", tmp_path / "pr.png")
    assert result.exit_code == 1
    assert (
        result.stderr == "error: --plot draws the duplicates' curve: give --duplicates TRUTH.json\n"
    )


def test_plot_without_matplotlib_says_what_to_install(tmp_path: Path) -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("matplotlib is installed here")
    root = _classes(tmp_path / "set", seeds=(11,))
    truth = tmp_path / "truth.json"
    truth.write_text("{}")
    result = run_cli(
        "evaluate", root, *TINY_MODEL, "--duplicates", truth, "--plot", tmp_path / "pr.png"
    )
    assert result.exit_code == 1
    assert result.stderr == (
        "error: --plot needs matplotlib, which is not installed: pip install "
        "'retrieval[plot]' (or leave out --plot; --json gives the sweep's numbers)\n"
    )


def test_plot_draws_the_curve(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    root = _classes(tmp_path / "set", seeds=(11,))
    truth = tmp_path / "truth.json"
    truth.write_text(json.dumps({"class11/orig.png": ["class11/flip.png"]}))
    result = run_cli(
        "evaluate", root, *TINY_MODEL, "--duplicates", truth, "--plot", tmp_path / "pr.png"
    )
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "pr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k": 0}, "k must be at least 1, not 0"),
        ({"threshold": 1.5}, "threshold must be in (0, 1], not 1.5"),
    ],
)
def test_library_limits(tmp_path: Path, kwargs: dict[str, float], message: str) -> None:
    root = _classes(tmp_path / "set", seeds=(11,))
    with pytest.raises(UsageError) as caught:
        evaluate(root, model="test_resnet", weights=WeightsSpec("untrained"), **kwargs)  # type: ignore[arg-type]
    assert str(caught.value) == message


def test_weights_and_no_pretrained_exclude_each_other(tmp_path: Path) -> None:
    root = _classes(tmp_path / "set", seeds=(11,))
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"x")
    result = run_cli("evaluate", root, "--weights", weights, "--no-pretrained")
    assert result.exit_code == 2
    assert "--weights and --no-pretrained exclude each other" in result.stderr
