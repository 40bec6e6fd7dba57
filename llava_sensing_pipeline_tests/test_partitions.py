import pytest
from dagster import DagsterInstance, build_sensor_context

from llava_sensing_pipeline.partitions import (
    PARTITIONS_NAME,
    discover_novels,
    genre_of,
    novel_file_sensor,
    partition_key_for,
    relative_path_for,
    sync_partitions,
)
from llava_sensing_pipeline.settings import PipelineSettings

AWKWARD = [
    "Modernist_Novel/A018_ABSALOM_ABSALOM!.txt",
    "Modernist_Novel/A024_A Fable.txt",
    "Modernist_Novel/A039_Some_Do_Not....txt",
    "Travel_Novel/B150_Safari Jema.txt",
    "Travel_Novel/B1, with comma.txt",
    "Travel_Novel/B2 [brackets] * 'quotes' \"x\".txt",
    "Travel_Novel/B3%2E.txt",
    "top_level.txt",
    "_root/top_level.txt",
]


@pytest.mark.parametrize("name", AWKWARD)
def test_keys_are_reversible_and_safe(name):
    key = partition_key_for(name)
    assert relative_path_for(key).as_posix() == name
    stem_part = key.split("/", 1)[1] if "/" in key else key
    for bad in [",", "...", "[", "]", "*", '"', "'"]:
        assert bad not in stem_part


def test_keys_never_collide():
    keys = [partition_key_for(n) for n in AWKWARD + ["Modernist_Novel/A039_Some_Do_Not%2E%2E%2E.txt"]]
    assert len(set(keys)) == len(keys)


def test_readable_keys():
    assert partition_key_for("Modernist_Novel/A039_Some_Do_Not....txt") == "Modernist_Novel/A039_Some_Do_Not%2E%2E%2E"
    assert partition_key_for("Travel_Novel/B150_Safari Jema.txt") == "Travel_Novel/B150_Safari Jema"
    assert genre_of("Travel_Novel/B150_Safari Jema") == "Travel_Novel"


def test_only_txt():
    with pytest.raises(ValueError):
        partition_key_for("Travel_Novel/notes.md")


def _corpus(tmp_path):
    for rel in ["Travel_Novel/B2.txt", "Modernist_Novel/A2.txt", "Modernist_Novel/A1.txt", "Travel_Novel/B1.txt",
                "Modernist_Novel/A3.txt", "Modernist_Novel/readme.md", "Modernist_Novel/.hidden.txt"]:
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("some text")
    return tmp_path


def test_discover_sorted_and_max_files_per_genre(tmp_path):
    root = _corpus(tmp_path)
    assert [f.relative_path for f in discover_novels(root)] == [
        "Modernist_Novel/A1.txt", "Modernist_Novel/A2.txt", "Modernist_Novel/A3.txt",
        "Travel_Novel/B1.txt", "Travel_Novel/B2.txt"]
    picked = discover_novels(root, max_files_per_genre=1)
    assert [f.relative_path for f in picked] == ["Modernist_Novel/A1.txt", "Travel_Novel/B1.txt"]


def test_discover_missing_folder_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="--input-dir"):
        discover_novels(tmp_path / "nope")


def test_sync_adds_new_and_deletes_removed(tmp_path):
    root = _corpus(tmp_path)
    instance = DagsterInstance.ephemeral()
    files = discover_novels(root)
    added, removed = sync_partitions(instance, files, {f.key for f in files})
    assert sorted(added) == sorted(f.key for f in files) and removed == []
    (root / "Travel_Novel/B2.txt").unlink()
    files = discover_novels(root)
    added, removed = sync_partitions(instance, files[:1], {f.key for f in files})
    assert added == [] and removed == ["Travel_Novel/B2"]
    assert sorted(instance.get_dynamic_partitions(PARTITIONS_NAME)) == sorted(f.key for f in files)


def test_sensor_registers_new_files_and_requests_runs(tmp_path):
    root = _corpus(tmp_path)
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(PARTITIONS_NAME, ["Modernist_Novel/A1", "Travel_Novel/Gone"])
    context = build_sensor_context(instance=instance, resources={"settings": PipelineSettings(input_dir=str(root))})
    result = novel_file_sensor(context)
    (add,) = [r for r in result.dynamic_partitions_requests if type(r).__name__.startswith("Add")]
    (delete,) = [r for r in result.dynamic_partitions_requests if type(r).__name__.startswith("Delete")]
    assert sorted(add.partition_keys) == ["Modernist_Novel/A2", "Modernist_Novel/A3", "Travel_Novel/B1", "Travel_Novel/B2"]
    assert list(delete.partition_keys) == ["Travel_Novel/Gone"]
    assert sorted(r.partition_key for r in result.run_requests) == sorted(f.key for f in discover_novels(root))
    # run keys change when a file changes, so an edited file is materialized again
    before = {r.partition_key: r.run_key for r in result.run_requests}
    (root / "Modernist_Novel/A1.txt").write_text("edited text, longer")
    after = {r.partition_key: r.run_key for r in novel_file_sensor(context).run_requests}
    assert after["Modernist_Novel/A1"] != before["Modernist_Novel/A1"]
    assert after["Modernist_Novel/A2"] == before["Modernist_Novel/A2"]


def test_discover_takes_regular_files_only_and_folders_as_folders(tmp_path):
    """A folder named like a novel is a folder (its .txt files are novels of that genre); a FIFO or a socket named
    *.txt is not a novel (reading a FIFO would block the run). A link to a file is read; a broken link is kept, so
    its partition fails with a message naming it rather than vanishing."""
    import os
    import socket

    root = _corpus(tmp_path)
    (root / "x.txt").mkdir()
    (root / "x.txt" / "inner.txt").write_text("some text")
    os.mkfifo(root / "Travel_Novel" / "pipe.txt")
    (root / "Travel_Novel" / "gone.txt").symlink_to(root / "nowhere.txt")
    (root / "Travel_Novel" / "link.txt").symlink_to(root / "Travel_Novel" / "B1.txt")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(root / "Travel_Novel" / "sock.txt"))
    try:
        found = {f.relative_path: f.genre for f in discover_novels(root)}
    finally:
        server.close()
    assert found == {"Modernist_Novel/A1.txt": "Modernist_Novel", "Modernist_Novel/A2.txt": "Modernist_Novel",
                     "Modernist_Novel/A3.txt": "Modernist_Novel", "Travel_Novel/B1.txt": "Travel_Novel",
                     "Travel_Novel/B2.txt": "Travel_Novel", "Travel_Novel/link.txt": "Travel_Novel",
                     "Travel_Novel/gone.txt": "Travel_Novel",
                     "x.txt/inner.txt": "x.txt"}
