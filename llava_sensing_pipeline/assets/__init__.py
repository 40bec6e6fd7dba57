"""The asset graph: novel_files → text_chunks → environment_features → sensor_records → style_labels →
generated_examples → chunked_json_exports. Each asset is a thin wrapper around the pure functions of its concern."""

from .environment import environment_features, environment_features_llm
from .export import chunked_json_exports
from .generation import generated_examples, generated_examples_llm
from .novels import novel_files, novel_sources, text_chunks
from .sensor_records import sensor_records
from .style import style_labels

PER_FILE_ASSETS = [novel_files, text_chunks, environment_features, sensor_records, style_labels, generated_examples]
ALL_ASSETS = [*PER_FILE_ASSETS, chunked_json_exports]


def assets_for(mode: str) -> list:
    """The assets of a mode: the LLM steps carry the rejection bound on the model's replies where they ask it."""
    swap = {}
    if mode != "simple":
        swap[environment_features] = environment_features_llm
    if mode == "llm":
        swap[generated_examples] = generated_examples_llm
    return [swap.get(a, a) for a in ALL_ASSETS]
