"""Split a FAISS candidate index into shards, each over a contiguous slice of the catalog, and
search them together (faiss.IndexShards) with every item keeping its id.

What it is for: a catalog whose index outgrows one device is held as S smaller indexes, and one
search runs over them in parallel threads. IVF shards share the index's trained coarse
quantizer, so a search with the same nprobe probes the same lists in every shard and the merged
candidates are the unsharded index's (ties aside): the breadth export calibrated still holds.
Flat shards stay exact. Shards are made from the index export wrote, at load: the repository
keeps one index file, and the shard count is a serving choice, not an export one.
"""

from logitrec.errors import InputError


def shard_bounds(count: int, shards: int) -> list[tuple[int, int]]:
    """[start, stop) id ranges of `shards` contiguous slices of `count` ids, sizes within one."""
    return [(count * i // shards, count * (i + 1) // shards) for i in range(shards)]


def shard_index(index, shards: int):
    """`index` itself for one shard, else an IndexShards over `shards` slices of it whose
    search returns the same ids. InputError for an index kind that cannot be split."""
    import faiss

    if shards < 1:
        raise InputError(f"--index-shards: expected a positive integer, got {shards}")
    if shards == 1:
        return index
    if index.ntotal < shards:
        raise InputError(f"--index-shards {shards}: the index holds only {index.ntotal} items")
    plain = faiss.downcast_index(index)
    if isinstance(plain, faiss.IndexIVF):
        make_shard = _ivf_slicer(faiss, plain)
    elif isinstance(plain, faiss.IndexFlat):
        make_shard = _flat_slicer(faiss, plain)
    else:
        raise InputError(
            f"--index-shards {shards}: a {type(plain).__name__} index cannot be split; "
            "Flat and IVF indexes (what export builds by default) can"
        )
    # threaded: the shards search at once; successive_ids off: each shard already answers
    # with the catalog's own ids, so the merge must not offset them.
    sharded = faiss.IndexShards(index.d, True, False)
    for start, stop in shard_bounds(index.ntotal, shards):
        sharded.add_shard(make_shard(start, stop))
    return sharded


def _ivf_slicer(faiss, ivf):
    # One empty copy keeps the trained quantizer and the search settings (nprobe); each shard
    # is a copy of it given the inverted-list entries whose ids fall in its slice.
    empty = faiss.clone_index(ivf)
    empty.reset()

    def make_shard(start: int, stop: int):
        shard = faiss.clone_index(empty)
        ivf.copy_subset_to(shard, faiss.InvertedLists.SUBSET_TYPE_ID_RANGE, start, stop)
        return shard

    return make_shard


def _flat_slicer(faiss, flat):
    import numpy as np

    def make_shard(start: int, stop: int):
        shard = faiss.IndexIDMap(faiss.IndexFlat(flat.d, flat.metric_type))
        shard.add_with_ids(flat.reconstruct_n(start, stop - start), np.arange(start, stop))
        return shard

    return make_shard
