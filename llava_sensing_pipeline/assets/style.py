"""style_labels: the literary style of each chunk, from the genre folder or inferred from the text."""

import pandas as pd
from dagster import AssetExecutionContext, asset

from ..partitions import genre_of
from ..style import folder_style, style_for
from ._partitioned import for_each_partition, pick
from .novels import PER_FILE

INFERENCE_SAMPLE_CHARS = 200_000


@asset(**PER_FILE, kinds={"pandas", "parquet"})
def style_labels(context: AssetExecutionContext, sensor_records, text_chunks):
    """``modernist_novel`` / ``travel_novel`` from the folder; files outside both genres get a text-based label.
    One row per sensor record (chunk), keyed by ``chunk_index``."""

    def one(key: str, records: pd.DataFrame):
        genre = genre_of(key)
        # the text only for a folder outside the two genres (in a bulk run its table is then not even read)
        sample = "" if folder_style(genre) else " ".join(pick(text_chunks, key)["text"])[:INFERENCE_SAMPLE_CHARS]
        style, source, score = style_for(genre, sample)
        frame = pd.DataFrame({"chunk_index": records["chunk_index"].to_numpy()})
        frame["literary_style"] = style
        frame["style_source"] = source
        frame["style_score"] = score
        return frame, {"literary_style": style, "style_source": source, "style_score": round(float(score), 3)}

    return for_each_partition(context, one, sensor_records)
