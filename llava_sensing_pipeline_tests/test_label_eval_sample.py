"""The label-evaluation sample (data/label_eval/, built by scripts/build_label_eval_sample.py): its shape, that it
holds no labels, that the batches are its two halves, and (when ../shared/corpus is present) that the script
rebuilds it byte for byte from the chunks the pipeline cuts."""

import functools
import importlib.util
import json
import sys
from collections import Counter
from pathlib import Path

from llava_sensing_pipeline_tests.support.needs import corpus_dir, require_corpus

REPO = Path(__file__).resolve().parents[1]
CORPUS = corpus_dir()
DATA = Path(__file__).parent / "data" / "label_eval"
SCRIPT = REPO / "scripts" / "build_label_eval_sample.py"
FIELDS = ["id", "source_path", "chunk_index", "char_start", "char_end", "split", "text"]


@functools.cache
def _script():
    spec = importlib.util.spec_from_file_location("build_label_eval_sample", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


def _passages() -> list[dict]:
    return json.loads((DATA / "passages.json").read_text(encoding="utf-8"))


def _batch(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / "batches" / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()]


def test_sample_shape_and_no_labels():
    passages = _passages()
    assert len(passages) == 340
    assert len({p["id"] for p in passages}) == 340
    for p in passages:
        assert list(p) == FIELDS  # nothing else: no analyzer output
        assert p["id"] == f"{Path(p['source_path']).stem}_{p['chunk_index']}"
        assert p["split"] in ("dev", "heldout")
        assert 0 <= p["char_start"] < p["char_end"] and 0 < len(p["text"]) <= 1000
    per_book = Counter(p["source_path"] for p in passages)
    assert len(per_book) == 14 and set(per_book.values()) <= {24, 25}
    splits = Counter(p["split"] for p in passages)
    assert splits == {"dev": 136, "heldout": 204}
    for book in per_book:
        dev = sum(p["split"] == "dev" for p in passages if p["source_path"] == book)
        assert dev in (9, 10), book


def test_batches_are_the_two_halves_with_id_and_text_only():
    passages = _passages()
    part1, part2 = _batch("part1"), _batch("part2")
    assert [list(r) for r in part1 + part2] == [["id", "text"]] * len(passages)
    assert part1 + part2 == [{"id": p["id"], "text": p["text"]} for p in passages]
    assert len(part1) == len(part2) == 170
    for half in (passages[:170], passages[170:]):  # each half covers every book and both splits
        assert set(Counter(p["source_path"] for p in half).values()) <= {11, 12, 13}
        assert Counter(p["split"] for p in half) == {"dev": 68, "heldout": 102}


def test_script_rebuilds_the_committed_files_byte_for_byte():
    require_corpus()
    script = _script()
    files = script.render(script.draw(script.load_books(CORPUS)))
    assert sorted(files) == ["batches/part1.jsonl", "batches/part2.jsonl", "passages.json"]
    for rel, data in files.items():
        assert (DATA / rel).read_bytes() == data, f"{rel} is out of date: rerun {SCRIPT.name}"


def test_passages_are_the_pipeline_chunks():
    require_corpus()
    from llava_sensing_pipeline.text import chunk_text, read_novel

    by_book: dict[str, list[dict]] = {}
    for p in _passages():
        by_book.setdefault(p["source_path"], []).append(p)
    for book, passages in by_book.items():
        chunks = chunk_text(read_novel(CORPUS / book).text, 500, 200, 1000)
        for p in passages:
            c = chunks[p["chunk_index"]]
            assert (c.text, c.char_start, c.char_end) == (p["text"], p["char_start"], p["char_end"]), p["id"]


def test_missing_corpus_is_refused(tmp_path, capsys):
    assert _script().main(["--corpus", str(tmp_path / "absent"), "--out", str(tmp_path / "out")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_guide_lists_every_value_of_the_annotated_fields():
    from llava_sensing_pipeline.environment import VOCABULARY

    guide = (DATA / "GUIDE.md").read_text(encoding="utf-8")
    for name in ("weather", "time_of_day", "location", "movement", "temperature_hint"):
        assert f"### {name} — " in guide, name
        for value in VOCABULARY[name]:
            assert f"`{value}`" in guide, (name, value)


def test_round_3_is_the_seeded_draw_of_unseen_chunks(tmp_path):
    """Round 3 is what scripts/draw_label_eval_round.py draws from the corpus, excluding rounds 1 and 2."""
    require_corpus()
    spec = importlib.util.spec_from_file_location("draw_label_eval_round", REPO / "scripts" / "draw_label_eval_round.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--round", "3", "--seed", "20261202", "--size", "300", "--corpus", str(CORPUS),
                        "--exclude", str(DATA / "passages.json"), "--exclude", str(DATA / "round2" / "passages.json"),
                        "--out", str(tmp_path)]) == 0
    drawn = json.loads((tmp_path / "passages.json").read_text(encoding="utf-8"))
    committed = json.loads((DATA / "round3" / "passages.json").read_text(encoding="utf-8"))
    assert [{k: v for k, v in p.items() if k != "opaque_id"} for p in drawn] == committed
    earlier = {p["id"] for p in _passages()} | {p["id"] for p in json.loads(
        (DATA / "round2" / "passages.json").read_text(encoding="utf-8"))}
    assert not earlier & {p["id"] for p in committed}
    assert set(Counter(p["source_path"] for p in committed).values()) <= {21, 22}
