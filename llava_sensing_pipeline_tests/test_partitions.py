import pytest

from llava_sensing_pipeline.partitions import (
    discover_novels,
    genre_of,
    partition_key_for,
    relative_path_for,
)

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
