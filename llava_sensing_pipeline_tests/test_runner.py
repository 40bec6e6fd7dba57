from llava_sensing_pipeline.runner import contiguous_ranges


def test_contiguous_ranges_split_on_gaps_and_length():
    order = ["a", "b", "c", "d", "e", "f", "g"]
    assert contiguous_ranges(order, {"a", "b", "d", "e", "f", "g"}, 3) == [["a", "b"], ["d", "e", "f"], ["g"]]
    assert contiguous_ranges(order, set(), 3) == []
    assert contiguous_ranges(order, {"c"}, 1) == [["c"]]
    assert contiguous_ranges(order, set(order), 10) == [order]
